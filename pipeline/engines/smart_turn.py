"""Embedded end-of-turn detection: Smart Turn v3.2 (Daily, BSD-2-Clause) on onnxruntime, CPU.

The model reads the last 8 s of an utterance as a Whisper log-mel spectrogram and says how
likely it is that the speaker has finished (intonation and phrasing, not words). The file,
`smart-turn-v3.2-cpu.onnx` (int8, 8.7 MB), comes from the `pipecat-ai` wheel, whose Python
code is never imported: the file is found through package metadata and checked against its
pinned size and SHA-256.

Preprocessing follows pipecat's `LocalSmartTurnAnalyzerV3`: keep the last 8 s of 16 kHz
audio, zero-pad at the beginning to 8 s, normalise the waveform to zero mean and unit
variance, then 80 x 800 Whisper log-mel features (faster-whisper's FeatureExtractor, in
float32: within 1e-5 of pipecat's float64 copy of the transformers extractor).

The int8 model is touchy where it is unsure: a change of 1e-6 in the features, or of the
input gain (which normalisation should cancel), can move a probability near 0.5 by 0.2
or more; clear cases (below 0.1, above 0.9) stay put. Read it as a vote, not a measure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import EngineError
from pipeline.engines.local_stt import pcm_to_float
from pipeline.engines.models import Pinned, cache_dir, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue
from pipeline.events import Stage
from settings import Settings

log = logging.getLogger(__name__)

STAGE: Stage = "turn"
RATE = 16000
WINDOW_S = 8
WINDOW = WINDOW_S * RATE  # samples the model sees
N_MELS = 80
N_FRAMES = 800

DIST = "pipecat-ai"
MODEL = Pinned("smart-turn-v3.2-cpu.onnx", 8_679_182, "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f")

# Not settings: the 8.7 MB int8 model answers in tens of milliseconds on one thread, and more
# threads would only take cores from STT and LLM; a verdict later than 3 s is of no use.
THREADS = 1
TIMEOUT_S = 3.0

_NORM_EPS = 1e-7  # as transformers' zero-mean unit-variance normalisation
_extractor: Any = None


def window(samples: np.ndarray) -> np.ndarray:
    """The last 8 s of 16 kHz float audio, zero-padded at the beginning to exactly 8 s (float32)."""
    x = np.asarray(samples, dtype=np.float32)[-WINDOW:]
    if len(x) < WINDOW:
        x = np.concatenate([np.zeros(WINDOW - len(x), dtype=np.float32), x])
    return x


def features(samples: np.ndarray) -> np.ndarray:
    """(80, 800) float32 log-mel features of 16 kHz float audio, as the model was trained on."""
    global _extractor
    if _extractor is None:
        from faster_whisper.feature_extractor import FeatureExtractor  # numpy only; loaded with the model

        _extractor = FeatureExtractor(feature_size=N_MELS, sampling_rate=RATE, chunk_length=WINDOW_S)
    x = window(samples)
    x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)
    # padding=0: 128000 samples, centred STFT, last frame dropped: exactly 800 frames.
    mel = _extractor(x, padding=0)
    return np.ascontiguousarray(mel[:, :N_FRAMES], dtype=np.float32)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return np.asarray(samples, dtype=np.float32) / 32768.0


def load_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort  # heavy import, only when this engine is used

    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class SmartTurn:
    """Smart Turn v3.2 on a worker thread, shared by every session."""

    def __init__(
        self,
        threads: int = THREADS,
        timeout_s: float = TIMEOUT_S,
        queue_size: int = Settings.engine_queue_size,
        cache: Path | None = None,
    ) -> None:
        self.threads = max(1, threads)
        self.timeout_s = timeout_s
        self.cache = cache or cache_dir()
        self.name = "local:smart-turn-v3.2"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._session: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SmartTurn:
        return cls(queue_size=settings.engine_queue_size, cache=cache_dir(settings.model_cache_dir))

    @staticmethod
    def model_path(cache: Path | None = None) -> Path:
        """The installed model file, verified (ModelIntegrityError if altered)."""
        return verify_package_files(DIST, (MODEL,), STAGE, cache or cache_dir())[MODEL.name]

    @property
    def ready(self) -> bool:
        return self._session is not None

    @property
    def queue_depth(self) -> int:
        return self._queue.waiting

    async def start(self) -> None:
        async with self._lock:
            if self._session is None:
                self._session = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        started = time.monotonic()
        path = self.model_path(self.cache)
        session = load_session(path, self.threads)
        features(np.zeros(0, dtype=np.float32))  # builds the mel filter bank now, not on the first turn
        log.info("turn: loaded Smart Turn v3.2 from %s (%d thread) in %.2f s", path, self.threads, time.monotonic() - started)
        return session

    def load_sync(self) -> SmartTurn:
        """Load the model on the calling thread (tests, benchmarks); returns self."""
        if self._session is None:
            self._session = self._load()
        return self

    async def close(self) -> None:
        await self._queue.close()
        self._session = None

    async def complete(self, pcm: bytes, sample_rate: int = RATE) -> float:
        if self._session is None:
            await self.start()
        # Only the last 8 s matter: convert no more than that (plus a little for resampling).
        pcm = pcm[: len(pcm) // 2 * 2]
        keep = (WINDOW_S * sample_rate + 64) * 2
        audio = pcm_to_float(pcm[-keep:], sample_rate)
        import onnxruntime as ort

        run_options = ort.RunOptions()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._queue.run(self._predict, audio, run_options)
        except TimeoutError:
            raise EngineError(STAGE, f"end-of-turn model took longer than {self.timeout_s:g} s") from None
        finally:
            run_options.terminate = True  # a run still in progress (timed out, cancelled) stops early

    def _predict(self, token: CancelToken, audio: np.ndarray, run_options: Any = None) -> float:
        started = time.monotonic()
        mel = features(audio)
        token.check()
        session = self._session
        if session is None:
            raise EngineError(STAGE, f"{self.name} is not loaded")
        try:
            out = session.run(None, {"input_features": mel[np.newaxis]}, run_options)
        except Exception as exc:  # onnxruntime raises its own Fail/RuntimeError types
            token.check()  # terminated because our caller left: report it as a cancellation
            raise EngineError(STAGE, f"end-of-turn model failed: {exc}") from None
        probability = float(np.asarray(out[0]).reshape(-1)[0])
        log.debug("turn: %.1f s of audio, P(complete)=%.3f in %.0f ms", len(audio) / RATE, probability, (time.monotonic() - started) * 1000)
        return probability

    def probability(self, audio: np.ndarray) -> float:
        """P(complete) for 16 kHz mono audio (int16 samples, or float in -1..1), on the calling thread."""
        self.load_sync()
        samples = int16_to_float(audio) if np.asarray(audio).dtype == np.int16 else np.asarray(audio, dtype=np.float32)
        return self._predict(CancelToken(), samples)
