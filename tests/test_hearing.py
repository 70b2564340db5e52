"""Whether a transcript is too unsure to answer (pipeline/hearing.py)."""

from __future__ import annotations

import pytest

from pipeline.engines.base import Heard
from pipeline.hearing import misheard


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        (Heard("What is the capital of France?", avg_logprob=-0.2, compression_ratio=1.1), False),
        (Heard("Selfies are on the moon.", avg_logprob=-1.3), True),
        (Heard("the the the the the the the the the the", avg_logprob=-0.1, compression_ratio=3.0), True),
        (Heard("Hello."), False),  # an engine that does not say: never asked again
    ],
)
def test_misheard(heard, expected):
    assert misheard(heard, -0.9) is expected


def test_minus_infinity_never_asks_again():
    assert not misheard(Heard("Selfies.", avg_logprob=-5.0), float("-inf"))
