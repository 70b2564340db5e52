"""EnglishFirst: tiny.en's English when it is sure, the multilingual model for anything else."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.engines.base import Heard
from pipeline.engines.english_first import SURE_LOGPROB, EnglishFirst
from pipeline.engines.factory import build_stt
from pipeline.engines.local_stt import LocalSTT
from tests.conftest import make_settings
from tests.fakes import FakeSTT

PCM = b"\x00\x00" * 16000
CHINESE = Heard("北京。", "zh", 0.99, -0.2)


def engines(english: Heard) -> tuple[EnglishFirst, FakeSTT, FakeSTT]:
    en, multi = FakeSTT(lambda s: english), FakeSTT(lambda s: CHINESE)
    multi.model_name = "base"  # type: ignore[attr-defined]
    stt: Any = EnglishFirst(en, multi)  # type: ignore[arg-type]  # fakes stand in for LocalSTT
    return stt, en, multi


@pytest.mark.parametrize(
    ("hint", "english_logprob", "ratio", "heard_by"),
    [
        ("en", -0.2, 0.8, "english"),  # sure English: tiny.en's words
        ("", -0.2, 0.8, "english"),  # nothing known yet: English first too
        ("en", SURE_LOGPROB, 0.8, "english"),  # at the threshold: taken
        ("en", -1.1, 0.8, "multilingual"),  # unsure (another language, or garbled): heard again
        ("en", -0.2, 11.2, "multilingual"),  # sure of a loop ("1, 1, 1, 1, ..."): heard again
        ("en", None, None, "english"),  # too short to decode: nothing for another model either
        ("zh", -0.2, 0.8, "multilingual"),  # a conversation in Chinese: straight to the multilingual model
        ("pt", None, None, "multilingual"),
    ],
)
async def test_which_model_hears_an_utterance(hint: str, english_logprob: float | None, ratio: float | None, heard_by: str) -> None:
    stt, en, multi = engines(Heard("What is the capital of France?", "en", avg_logprob=english_logprob, compression_ratio=ratio))
    heard = await stt.transcribe(PCM, 16000, prompt="context", language=hint)
    assert heard.language == ("en" if heard_by == "english" else "zh")
    assert len(multi.calls) == (heard_by == "multilingual")
    assert len(en.calls) == (hint in ("", "en"))
    assert multi.prompts == (["context"] if heard_by == "multilingual" else []) and multi.hints == (
        [hint] if heard_by == "multilingual" else []
    )


@pytest.mark.parametrize(
    ("languages", "model", "built"),
    [
        ("en", "", "local:tiny.en"),
        ("en,zh", "", "local:tiny.en+base"),
        ("zh,en", "", "local:tiny.en+base"),
        ("en,zh", "base", "local:base"),  # a model chosen: that one alone
        ("zh,pt", "", "local:base"),  # no English: nothing for tiny.en to hear
    ],
)
def test_the_default_local_stt_for_languages(languages: str, model: str, built: str) -> None:
    stt = build_stt(make_settings(languages=languages, stt_model=model))
    assert stt.name == built
    if isinstance(stt, EnglishFirst):
        assert stt.english.temperatures == (0.0,), "no fallbacks: an unsure pass is heard again anyway"
        assert stt.multilingual.languages == tuple(languages.split(","))
    else:
        assert isinstance(stt, LocalSTT)
