"""English on tiny.en when it is sure, anything else on the multilingual model.

With LANGUAGES holding English and others, every utterance would otherwise pay for Whisper base's
full 30 s window (language tokens need it: docs/decisions/0012), about five times tiny.en's fitted
pass. tiny.en hears English confidently and other languages with a low mean token log-probability,
so while the conversation is in English its pass comes first, and only an unsure one is heard again
by the multilingual model (docs/decisions/0013). A conversation in another language goes straight
to the multilingual model.
"""

from __future__ import annotations

from pipeline.engines.base import Heard
from pipeline.engines.local_stt import LocalSTT
from settings import Settings

# tiny.en's mean token log-probability at and above which its English is taken: the threshold
# `python -m bench.hearing` found for "misheard"; 1 of 54 real non-English utterances reached it.
SURE_LOGPROB = -0.68


class EnglishFirst:
    partials = True

    def __init__(self, english: LocalSTT, multilingual: LocalSTT, sure_logprob: float = SURE_LOGPROB) -> None:
        self.english = english
        self.multilingual = multilingual
        self.sure_logprob = sure_logprob
        self.name = f"{english.name}+{multilingual.model_name}"

    @classmethod
    def from_settings(cls, settings: Settings) -> EnglishFirst:
        # One temperature: tiny.en's fallbacks on another language cost seconds, and an unsure
        # pass is heard again anyway.
        english = LocalSTT.from_settings(settings, model="tiny.en", languages=("en",), temperatures=(0.0,))
        return cls(english, LocalSTT.from_settings(settings, model="base"))

    @property
    def ready(self) -> bool:
        return self.english.ready and self.multilingual.ready

    @property
    def queue_depth(self) -> int:
        return self.english.queue_depth + self.multilingual.queue_depth

    @property
    def idle_s(self) -> float:
        return min(self.english.idle_s, self.multilingual.idle_s)

    async def start(self) -> None:
        await self.english.start()
        await self.multilingual.start()

    async def close(self) -> None:
        await self.english.close()
        await self.multilingual.close()

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        if language in ("", "en"):
            heard = await self.english.transcribe(pcm, sample_rate, prompt)
            if heard.avg_logprob is None:
                return heard  # too short to decode: nothing another model would hear
            if heard.avg_logprob >= self.sure_logprob and not heard.looping:
                return heard
        return await self.multilingual.transcribe(pcm, sample_rate, prompt, language)
