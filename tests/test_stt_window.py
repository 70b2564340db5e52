"""The fitted encoder window of the embedded Whisper, with the real tiny.en model.

`fit` encodes only the utterance (plus a margin, in whole seconds) instead of Whisper's
30 s window; these tests hold it to `full`'s transcripts on espeak-ng questions (within one
word over the set: CTranslate2 picks its kernels by CPU, and on CI's CPU a near-tie once
read "Mona" as "molar" in the fitted window only),
to the normal path for audio over 30 s, and to the engine's cancellation and timeout.
bench/stt_window.py measures accuracy and time on many more voices.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from kit.speech import concat, silence, speak
from kit.wer import edit_distance
from kit.wer import normalise as words
from pipeline.engines.base import EngineError
from pipeline.engines.local_stt import FIT_MIN_FRAMES, FULL_FRAMES, LocalSTT, fitted_frames
from pipeline.engines.workers import Cancelled, CancelToken
from settings import Settings

pytestmark = pytest.mark.models

module_loop = pytest.mark.asyncio(loop_scope="module")

SAME_QUESTIONS = [
    "What is the capital of Italy?",
    "Who painted the Mona Lisa?",
    "What is seven times eight?",
]


def question(text: str) -> np.ndarray:
    return concat(silence(0.3), speak(text), silence(0.2))


def as_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


async def _started(window: str) -> AsyncIterator[LocalSTT]:
    engine = LocalSTT(window=window)
    await engine.start()
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fit() -> AsyncIterator[LocalSTT]:
    async for engine in _started("fit"):
        yield engine


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def full() -> AsyncIterator[LocalSTT]:
    async for engine in _started("full"):
        yield engine


def spy_encode(engine: LocalSTT, monkeypatch: pytest.MonkeyPatch, before: Callable[[], None] | None = None) -> list[int]:
    """Frames of every window the engine's encoder runs over (faster-whisper calls the same method)."""
    assert engine._loaded is not None
    model = engine._loaded.model
    original = model.encode
    frames: list[int] = []

    def encode(features: np.ndarray) -> Any:
        frames.append(int(features.shape[-1]))
        if before is not None:
            before()
        return original(features)

    monkeypatch.setattr(model, "encode", encode)
    return frames


def test_window_sizes() -> None:
    assert fitted_frames(238) == 400  # 2.4 s of speech + 1 s margin, in whole seconds
    assert fitted_frames(10) == FIT_MIN_FRAMES
    assert fitted_frames(950, margin=50) == 1000
    assert fitted_frames(2850) == FULL_FRAMES  # no room for the margin: the normal path
    assert fitted_frames(2899) >= FULL_FRAMES


def test_the_product_runs_the_fitted_window() -> None:
    assert LocalSTT.from_settings(Settings()).window == "fit"
    assert LocalSTT(window="full").window == "full"  # what benchmarks compare it with
    with pytest.raises(EngineError, match="window"):
        LocalSTT(window="short")


@module_loop
async def test_fit_transcribes_like_full(fit: LocalSTT, full: LocalSTT) -> None:
    differences = []
    for text in SAME_QUESTIONS:
        pcm = question(text).tobytes()
        fitted, normal = (await fit.transcribe(pcm)).text, (await full.transcribe(pcm)).text
        differences.append((edit_distance(words(normal), words(fitted)), fitted, normal))
    assert sum(d for d, _, _ in differences) <= 1, differences


@module_loop
async def test_fitted_window_for_short_audio_full_window_past_30_s(fit: LocalSTT, full: LocalSTT, monkeypatch: pytest.MonkeyPatch) -> None:
    short = question("How many legs does a spider have?")
    frames = spy_encode(fit, monkeypatch)
    assert "spider" in (await fit.transcribe(short.tobytes())).text.lower()
    assert frames == [fitted_frames(len(short) // 160)] and frames[0] < FULL_FRAMES

    full_frames = spy_encode(full, monkeypatch)
    await full.transcribe(short.tobytes())
    assert full_frames == [FULL_FRAMES], "window='full' keeps Whisper's 30 s window"

    # 33 s: one question, half a minute of silence, another: two normal 30 s windows.
    long = concat(question("What is the capital of Italy?"), silence(30.0), question("How many legs does a spider have?"))
    frames.clear()
    text = (await fit.transcribe(long.tobytes())).text.lower()
    assert frames and all(f == FULL_FRAMES for f in frames), frames
    assert "italy" in text and "spider" in text, text


@module_loop
async def test_cancel_stops_before_decoding_and_frees_the_worker(fit: LocalSTT, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        assert release.wait(30)

    frames = spy_encode(fit, monkeypatch, before=hold)
    decodes: list[int] = []
    original_decode = fit._decode

    def decode(*args: Any) -> str:
        decodes.append(1)
        return original_decode(*args)

    monkeypatch.setattr(fit, "_decode", decode)

    task = asyncio.create_task(fit.transcribe(question("Who painted the Mona Lisa?").tobytes()))
    assert await asyncio.to_thread(entered.wait, 30), "the transcription reached the encoder"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()  # the encoder finishes; the job must notice the cancel before decoding

    # The worker is free for the next request (FIFO: it runs once the cancelled job has ended).
    heard = await asyncio.wait_for(fit.transcribe(question("What is the capital of Italy?").tobytes()), 30)
    assert "italy" in heard.text.lower()
    assert len(frames) == 2 and decodes == [1], "the cancelled job stopped after its encoder step"

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        fit._transcribe(token, as_float(question("Is the sun a star?")))
    assert len(frames) == 2, "a job cancelled beforehand does not encode at all"


@module_loop
async def test_timeout_still_applies(fit: LocalSTT, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    spy_encode(fit, monkeypatch, before=lambda: release.wait(30) or None)
    monkeypatch.setattr(fit, "timeout_s", 0.3)
    try:
        with pytest.raises(EngineError, match="longer than 0.3 s"):
            await fit.transcribe(question("Who wrote Pride and Prejudice?").tobytes())
    finally:
        release.set()
    monkeypatch.setattr(fit, "timeout_s", 15.0)
    assert "italy" in (await fit.transcribe(question("What is the capital of Italy?").tobytes())).text.lower()
