"""Smart Turn v3.2, the embedded end-of-turn model: its pinned file, its engine, its judgement.

Separation (complete vs cut-off questions) is checked on the product's piper voice: on
espeak-ng's formant voices the model does not separate them (AUC about 0.5 over ten pairs
in three voices, see `python -m bench.smart_turn`), since espeak says a truncated text
with the same falling, final intonation as a finished one. Piper samples noise inside its
ONNX graph, so unseeded its clips differ from run to run and so does the separation; the
clips here come from a pinned onnxruntime seed, the same on every machine.
Each clip is cut at its last voiced frame and followed by 200 ms of silence, which is
what the pipeline hands the model once a pause is 200 ms long (JUDGE_AFTER_S).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from kit.speech import FINISHED_AND_CUT_OFF as PAIRS
from kit.speech import RATE, concat, noise, silence, speak, voiced_bounds
from pipeline.engines import models
from pipeline.engines.base import EngineError, TurnDetector
from pipeline.engines.local_tts import LocalTTS
from pipeline.engines.models import ModelIntegrityError, verify_file
from pipeline.engines.smart_turn import MODEL, WINDOW, SmartTurn, features, window
from pipeline.engines.workers import CancelToken
from settings import Settings

pytestmark = pytest.mark.models

PAUSE_S = 0.2
PIPER_SEED = 0  # onnxruntime's seed for the random ops of every session made after it is set


def then_pause(samples: np.ndarray, pause_s: float = PAUSE_S) -> np.ndarray:
    _, end = voiced_bounds(samples)
    return concat(samples[: int(end * RATE)], silence(pause_s))


@pytest.fixture(scope="module")
def model() -> Iterator[SmartTurn]:
    engine = SmartTurn(threads=1).load_sync()
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def piper_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(complete, truncated) clips of PAIRS in the piper voice, 16 kHz int16."""

    async def render() -> list[tuple[np.ndarray, np.ndarray]]:
        onnxruntime.set_seed(PIPER_SEED)
        tts = LocalTTS(threads=1)
        await tts.start()

        async def say(text: str) -> np.ndarray:
            pcm = np.frombuffer(b"".join([chunk async for chunk in tts.stream(text)]), dtype=np.int16)
            n = int(round(len(pcm) * RATE / tts.sample_rate))
            resampled = np.interp(np.arange(n) * (tts.sample_rate / RATE), np.arange(len(pcm)), pcm.astype(np.float64))
            return then_pause(resampled.astype(np.int16))

        try:
            return [(await say(done), await say(cut)) for done, cut in PAIRS]
        finally:
            await tts.close()

    return asyncio.run(render())


# --- the model file ----------------------------------------------------------------------


def test_pinned_model_is_found_through_metadata_and_verifies(tmp_path: Path) -> None:
    path = SmartTurn.model_path(tmp_path / "cache")
    assert path.name == "smart-turn-v3.2-cpu.onnx" and path.stat().st_size == MODEL.size
    assert "site-packages" in str(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MODEL.sha256


def test_tampered_copy_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / MODEL.name
    shutil.copyfile(SmartTurn.model_path(tmp_path / "cache"), copy)
    with open(copy, "r+b") as f:
        f.seek(MODEL.size // 2)
        byte = f.read(1)
        f.seek(MODEL.size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ModelIntegrityError, match="SHA-256") as err:
        verify_file(copy, MODEL, "turn", tmp_path / "cache")
    assert err.value.stage == "turn" and MODEL.sha256 in err.value.message


async def test_engine_refuses_to_load_a_tampered_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / MODEL.name
    copy.write_bytes(SmartTurn.model_path(tmp_path / "cache").read_bytes()[:-1000])  # truncated
    monkeypatch.setattr(models, "package_file", lambda dist, filename, stage: (copy, None))
    engine = SmartTurn(cache=tmp_path / "cache")
    with pytest.raises(ModelIntegrityError, match="expected 8,679,182"):
        await engine.start()
    assert not engine.ready
    await engine.close()


# --- preprocessing -----------------------------------------------------------------------


def test_window_keeps_the_last_8_s_and_pads_at_the_start() -> None:
    short = np.ones(RATE, dtype=np.float32)
    w = window(short)
    assert len(w) == WINDOW and not w[: WINDOW - RATE].any() and w[-RATE:].all()
    long = np.arange(10 * RATE, dtype=np.float32)
    assert np.array_equal(window(long), long[-WINDOW:])
    assert features(long).shape == (80, 800) and features(long).dtype == np.float32
    assert features(np.zeros(0, dtype=np.float32)).shape == (80, 800)


# --- the engine --------------------------------------------------------------------------


def test_from_settings_and_protocol(tmp_path: Path) -> None:
    engine = SmartTurn.from_settings(Settings(model_cache_dir=str(tmp_path)))
    assert isinstance(engine, TurnDetector)
    assert engine.name == "local:smart-turn-v3.2" and engine.threads == 1 and engine.cache == tmp_path
    assert not engine.ready and engine.queue_depth == 0


async def test_complete_runs_on_the_worker_and_matches_the_sync_helper(model: SmartTurn) -> None:
    clip = then_pause(speak("What is the capital of France?"))
    threads: list[str] = []
    real = model._predict

    def spy(token: CancelToken, *args: Any) -> float:
        threads.append(threading.current_thread().name)
        return real(token, *args)

    model._predict = spy  # type: ignore[method-assign]
    try:
        p = await model.complete(clip.tobytes(), RATE)
    finally:
        del model._predict
    assert threads and threads[0] != threading.main_thread().name and threads[0].startswith("turn-")
    assert abs(p - model.probability(clip)) < 1e-6
    # 48 kHz input is resampled: the same samples, each repeated three times, give the same answer.
    assert abs(await model.complete(np.repeat(clip, 3).tobytes(), 48000) - p) < 0.02
    # only the last 8 s count: whatever came before them changes nothing.
    last_8_s = concat(noise(8.0), clip)[-WINDOW:]
    assert abs(await model.complete(concat(noise(5.0, rms=3000, seed=1), last_8_s).tobytes()) - model.probability(last_8_s)) < 1e-6


async def test_a_stuck_inference_raises_a_turn_error_in_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine = SmartTurn(timeout_s=0.3, cache=tmp_path)

    def stuck(token: CancelToken, *_args: Any) -> float:
        while True:
            token.check()
            time.sleep(0.01)

    monkeypatch.setattr(engine, "_predict", stuck)
    engine._session = object()  # loaded, as far as `complete` is concerned
    started = time.monotonic()
    with pytest.raises(EngineError, match="longer than 0.3 s") as err:
        await engine.complete(silence(1.0).tobytes())
    # The inference never ends, so returning at all is the timeout's doing; how much later than
    # 0.3 s depends on the machine's load, not on the engine.
    assert err.value.stage == "turn" and time.monotonic() - started >= 0.29
    await engine.close()


# --- judgement on speech -----------------------------------------------------------------


def test_a_complete_question_scores_as_finished_in_most_voices(model: SmartTurn) -> None:
    # Not a bar per voice: en-gb's score moved between 0.21 and 0.61 across machines, en-us and en+f3 sit near 0.9.
    scores = {v: model.probability(then_pause(speak("What is the capital of France?", voice=v))) for v in ("en-us", "en+f3", "en-gb")}
    assert sum(p > 0.5 for p in scores.values()) >= 2, scores


def test_complete_questions_score_above_cut_off_ones(model: SmartTurn, piper_pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    done = np.array([model.probability(d) for d, _ in piper_pairs])
    cut = np.array([model.probability(c) for _, c in piper_pairs])
    auc = float(np.mean([(d > c) + 0.5 * (d == c) for d in done for c in cut]))
    report = f"complete {np.round(done, 2)}, truncated {np.round(cut, 2)}, AUC {auc:.2f}"
    # Seeds 0-31 give AUC 0.74-0.91, mean gaps 0.17-0.67 and 7-10 pairs ordered (seed 0: 0.91, 0.42, 9):
    # unseeded, bars at that spread's tail would fail by chance; seeded, a regression still shows.
    assert auc > 0.7, report
    assert done.mean() - cut.mean() > 0.15, report
    assert np.sum(done > cut) >= 7, report
    assert done[0] > 0.5, report  # "What is the capital of France?"
