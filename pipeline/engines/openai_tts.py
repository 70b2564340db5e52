"""Text to speech on any OpenAI-compatible `/audio/speech` endpoint, streamed and decoded as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from pipeline.engines.audio_decode import FORMATS, AudioDecodeError, StreamDecoder, open_decoder
from pipeline.engines.base import EngineError
from pipeline.engines.openai_common import DEFAULT_TTS_VOICE, Endpoint, OpenAIEngine, resolve_endpoint
from settings import Settings

RATE = 24000  # OpenAI's raw `pcm` is 24 kHz mono s16le; other formats are resampled to it


class OpenAITTS(OpenAIEngine):
    sample_rate = RATE

    def __init__(
        self,
        endpoint: Endpoint,
        voice: str = DEFAULT_TTS_VOICE,
        response_format: str = Settings.tts_format,
        speed: float = Settings.tts_speed,
        timeout_s: float = Settings.tts_timeout_s,
        max_retries: int = 1,
    ) -> None:
        super().__init__(endpoint, timeout_s, max_retries)
        if response_format not in FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(FORMATS)}")
        self.voice = voice or DEFAULT_TTS_VOICE
        self.response_format = response_format
        self.speed = speed

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAITTS:
        return cls(
            resolve_endpoint(settings, "tts"),
            voice=settings.tts_voice.strip(),
            response_format=settings.tts_format,
            speed=settings.tts_speed,
            timeout_s=settings.tts_timeout_s,
        )

    async def stream(self, text: str, language: str = "en", voice: str | None = None) -> AsyncGenerator[bytes, None]:
        """`voice`: the one a session asked for (a Realtime client's), else TTS_VOICE."""
        if not text.strip():
            return
        decoder = open_decoder(self.response_format, self.sample_rate)
        # The download runs beside the reader so decoded audio is handed out while later bytes are in flight.
        download = asyncio.create_task(self._download(text, decoder, voice or self.voice))
        try:
            while True:
                try:
                    pcm = await decoder.read()
                except AudioDecodeError as exc:
                    raise EngineError("tts", f"TTS audio from {self._host} is not valid {self.response_format}: {exc}") from None
                if pcm is None:
                    break
                yield pcm
            if decoder.samples_out == 0:
                raise EngineError("tts", f"TTS returned no audio from {self._host}")
        finally:
            decoder.close()
            download.cancel()  # leaving the response context closes the connection
            await asyncio.wait([download])

    async def _download(self, text: str, decoder: StreamDecoder, voice: str) -> None:
        loop = asyncio.get_running_loop()
        received = False
        try:
            # One deadline for the first audio, pushed back by every chunk: a stalled stream fails, a long one does not.
            async with asyncio.timeout(self.timeout_s) as deadline:
                async with self.client.audio.speech.with_streaming_response.create(
                    model=self.endpoint.model,
                    voice=voice,
                    input=text,
                    response_format=self.response_format,  # type: ignore[arg-type]
                    speed=self.speed,
                ) as response:
                    content_type = response.headers.get("content-type", "")
                    if content_type.startswith(("application/json", "text/")):
                        raise ValueError("a text body instead of audio")
                    async for chunk in response.iter_bytes():
                        received = True
                        deadline.reschedule(loop.time() + self.timeout_s)
                        decoder.feed(chunk)
        except Exception as exc:
            what = "TTS audio interrupted" if received else "TTS request failed"
            decoder.fail(EngineError("tts", f"{what}: {self._describe(exc)}"))
            return
        decoder.end()
