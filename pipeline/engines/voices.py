"""A voice per language: the TTS for the first accepted language, and one for each other language
that needs a voice of its own (TTS_VOICES, or the engine's voice for that language).

Chunks from a voice at another rate are resampled to the first voice's, so a turn's audio has one
rate whatever language it is in.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

from pipeline.engines.base import TTS


def resample(pcm: bytes, rate: int, to: int) -> bytes:
    """int16 mono PCM from `rate` to `to` (linear interpolation: enough for speech)."""
    if rate == to or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
    n_out = int(round(len(samples) * to / rate))
    out = np.interp(np.arange(n_out) * (rate / to), np.arange(len(samples)), samples)
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


class Voices:
    def __init__(self, default: TTS, by_language: dict[str, TTS]) -> None:
        self.default = default
        self.by_language = by_language
        self.name = " ".join([default.name, *(f"{code}={tts.name}" for code, tts in by_language.items())])
        self.sample_rate = default.sample_rate  # the first voice's, known once it is loaded

    def _all(self) -> list[Any]:
        return [self.default, *self.by_language.values()]

    @property
    def ready(self) -> bool:
        return all(getattr(tts, "ready", True) for tts in self._all())

    @property
    def queue_depth(self) -> int:
        return sum(getattr(tts, "queue_depth", 0) for tts in self._all())

    async def start(self) -> None:
        for tts in self._all():
            if (start := getattr(tts, "start", None)) is not None:
                await start()
        self.sample_rate = self.default.sample_rate

    async def close(self) -> None:
        for tts in self._all():
            if (close := getattr(tts, "close", None)) is not None:
                await close()

    async def stream(self, text: str, language: str = "en", voice: str | None = None) -> AsyncGenerator[bytes, None]:
        tts = self.by_language.get(language, self.default)
        if tts is not self.default and not getattr(self.default, "ready", True):
            await self.start()  # the first voice's rate is the output's
        async for chunk in tts.stream(text, language, voice) if voice else tts.stream(text, language):
            yield resample(chunk, tts.sample_rate, self.sample_rate)
