"""Speech to text on any OpenAI-compatible `/audio/transcriptions` endpoint (Groq, OpenAI, local servers)."""

from __future__ import annotations

import asyncio
import io
import wave

import openai

from pipeline.engines.base import EngineError
from pipeline.engines.openai_common import Endpoint, OpenAIEngine, resolve_endpoint
from settings import Settings


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm[: len(pcm) // 2 * 2])
    return buf.getvalue()


class OpenAISTT(OpenAIEngine):
    partials = False  # every pass would be a billed request

    def __init__(
        self, endpoint: Endpoint, language: str = Settings.stt_language, timeout_s: float = Settings.stt_timeout_s, max_retries: int = 1
    ) -> None:
        super().__init__(endpoint, timeout_s, max_retries)
        self.language = language

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISTT:
        return cls(resolve_endpoint(settings, "stt"), language=settings.stt_language, timeout_s=settings.stt_timeout_s)

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "") -> str:
        """Text of one utterance; a non-empty `prompt` goes as the endpoint's `prompt` field."""
        if len(pcm) < 2:
            return ""
        wav = pcm_to_wav(pcm, sample_rate)
        try:
            # The SDK's timeout is per read; this bounds the whole call, retries included.
            async with asyncio.timeout(self.timeout_s):
                result = await self.client.audio.transcriptions.create(
                    model=self.endpoint.model,
                    file=("audio.wav", wav, "audio/wav"),
                    language=self.language or openai.omit,  # omitted: the endpoint detects it
                    prompt=prompt.strip() or openai.omit,
                )
        except Exception as exc:
            raise EngineError("stt", f"Transcription failed: {self._describe(exc)}") from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise EngineError("stt", f"Transcription failed: malformed response from {self._host}")
        return text.strip()
