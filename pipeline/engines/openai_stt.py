"""Speech to text on any OpenAI-compatible `/audio/transcriptions` endpoint (Groq, OpenAI, local servers)."""

from __future__ import annotations

import asyncio
import io
import wave

import openai

from pipeline.engines.base import EngineError
from pipeline.engines.openai_common import Endpoint, describe, host_of, make_client, resolve_endpoint
from settings import Settings


def pcm_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm[: len(pcm) // 2 * 2])
    return buf.getvalue()


class OpenAISTT:
    ready = True

    def __init__(self, endpoint: Endpoint, language: str = "en", timeout_s: float = 15.0, max_retries: int = 1) -> None:
        self.endpoint = endpoint
        self.language = language
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.name = f"openai:{endpoint.model}"
        self._host = host_of(endpoint.base_url)
        self._client: openai.AsyncOpenAI | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISTT:
        return cls(resolve_endpoint(settings, "stt"), language=settings.stt_language, timeout_s=settings.stt_timeout_s)

    @property
    def client(self) -> openai.AsyncOpenAI:
        # Built on first use so that building the engines does no I/O (the SDK loads CA certificates).
        if self._client is None:
            self._client = make_client(self.endpoint, self.timeout_s, self.max_retries)
        return self._client

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000) -> str:
        if len(pcm) < 2:
            return ""
        wav = pcm_to_wav(pcm, sample_rate)
        try:
            # The SDK's timeout is per read; this bounds the whole call, retries included.
            async with asyncio.timeout(self.timeout_s):
                result = await self.client.audio.transcriptions.create(
                    model=self.endpoint.model,
                    file=("audio.wav", wav, "audio/wav"),
                    **({"language": self.language} if self.language else {}),
                )
        except Exception as exc:
            raise EngineError(
                "stt", f"Transcription failed: {describe(exc, self._host, [self.endpoint.api_key], self.timeout_s)}"
            ) from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise EngineError("stt", f"Transcription failed: malformed response from {self._host}")
        return text.strip()
