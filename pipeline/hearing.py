"""Whether the recogniser most likely misheard an utterance, from what it knows of its own guess.

Whisper's mean token log-probability falls when the audio is unclear (noise, a phone band, reverb,
an unfamiliar accent or pace) and its words are then often wrong; a decode that loops compresses
well. Below the threshold the assistant asks the user to say it again, in their language, instead
of answering words the user did not say. The threshold is chosen on a tune set of degraded
recordings and reported on held-out conditions (docs/measurements.md).
"""

from __future__ import annotations

from pipeline.engines.base import Heard


def misheard(heard: Heard, min_logprob: float) -> bool:
    """True when `heard` is more likely wrong than right: its words' log-probability under `min_logprob`, or a loop."""
    if heard.avg_logprob is not None and heard.avg_logprob < min_logprob:
        return True
    return heard.looping
