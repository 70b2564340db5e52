"""Speech to text on any OpenAI-compatible `/audio/transcriptions` endpoint (Groq, OpenAI, local servers).

One accepted language is sent as the request's `language`. With several, the endpoint detects it:
the request asks for `verbose_json`, whose `language` (a name such as "chinese", or a code) is
read back; an endpoint that answers without one is taken at its script (Han or kana: Chinese or
Japanese where accepted), else the first accepted language.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Sequence

import openai

from pipeline.engines.base import EngineError, Heard
from pipeline.engines.openai_common import Endpoint, OpenAIEngine, resolve_endpoint
from pipeline.language import code_of, script_language
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
        self,
        endpoint: Endpoint,
        languages: Sequence[str] = ("en",),
        timeout_s: float = Settings.stt_timeout_s,
        max_retries: int = 1,
    ) -> None:
        super().__init__(endpoint, timeout_s, max_retries)
        self.languages = tuple(languages) or ("en",)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISTT:
        return cls(resolve_endpoint(settings, "stt"), languages=settings.language_list, timeout_s=settings.stt_timeout_s)

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        """What was said in one utterance; a non-empty `prompt` goes as the endpoint's `prompt` field.
        With several languages the endpoint detects the utterance's, whatever `language` says."""
        only = self.languages[0] if len(self.languages) == 1 else None
        if len(pcm) < 2:
            return Heard("", self.languages[0])
        wav = pcm_to_wav(pcm, sample_rate)
        try:
            # The SDK's timeout is per read; this bounds the whole call, retries included.
            async with asyncio.timeout(self.timeout_s):
                result = await self.client.audio.transcriptions.create(
                    model=self.endpoint.model,
                    file=("audio.wav", wav, "audio/wav"),
                    language=only or openai.omit,  # omitted: the endpoint detects it
                    prompt=prompt.strip() or openai.omit,
                    response_format=openai.omit if only else "verbose_json",
                )
        except Exception as exc:
            raise EngineError("stt", f"Transcription failed: {self._describe(exc)}") from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise EngineError("stt", f"Transcription failed: malformed response from {self._host}")
        text = text.strip()
        if only:
            return Heard(text, only)
        said = code_of(str(getattr(result, "language", "") or ""))
        language = said if said in self.languages else script_language(text, self.languages)
        return Heard(text, language)
