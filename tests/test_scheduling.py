"""Urgent work first: an embedded engine shared by sessions takes the waiting job
whose result is needed soonest, so one session's long reply does not delay another's turn.

No model and no clock: the engine's worker is held by a gate while jobs queue up, and the
tests assert the order in which the worker then ran them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from pipeline.engines.base import Engines
from pipeline.engines.workers import CancelToken, WorkQueue, needed_by
from pipeline.segmenter import RATE
from pipeline.turn import Turn
from tests.fakes import FakeLLM, FakeSTT, MemoryAudio

pytestmark = pytest.mark.fast


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (and the worker thread) until `condition` holds."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


def held(gate: threading.Event, ran: list[str], label: str) -> Callable[[CancelToken], str]:
    def job(token: CancelToken) -> str:
        gate.wait(10)
        ran.append(label)
        return label

    return job


async def queue_up(queue: WorkQueue, jobs: list[tuple[str, float | None]]) -> list[str]:
    """Hold the worker, submit `jobs` (label, needed by) in this order, release; the order they ran."""
    gate = threading.Event()
    ran: list[str] = []
    blocker = asyncio.create_task(queue.run(held(gate, ran, "blocker")))
    await until(lambda: queue.waiting == 0 and not blocker.done())
    tasks = []
    for label, when in jobs:
        if when is None:
            tasks.append(asyncio.create_task(queue.run(held(gate, ran, label))))
        else:
            with needed_by(when):  # the task copies the context as it is now
                tasks.append(asyncio.create_task(queue.run(held(gate, ran, label))))
        await until(lambda: queue.waiting == len(tasks))  # noqa: B023 (awaited here, in this iteration)
    gate.set()
    await asyncio.gather(blocker, *tasks)
    return ran[1:]


async def test_the_job_needed_soonest_runs_first() -> None:
    queue = WorkQueue("tts", "test", max_waiting=8)
    now = time.monotonic()
    ran = await queue_up(queue, [("later sentence", now + 3.0), ("plain", None), ("first sentence", now), ("soon", now + 1.0)])
    # "plain" was submitted without a deadline: it is needed when it was submitted, after `now`.
    assert ran == ["first sentence", "plain", "soon", "later sentence"]
    await queue.close()


async def test_concurrency_runs_jobs_side_by_side() -> None:
    queue = WorkQueue("llm", "test", max_waiting=4, concurrency=3)
    both = threading.Barrier(3, timeout=10)

    def job(token: CancelToken, n: int) -> int:
        both.wait()  # returns only once three jobs run at the same time
        return n

    assert await asyncio.gather(*(queue.run(job, n) for n in range(3))) == [0, 1, 2]
    await queue.close()


@dataclass
class QueuedTTS:
    """A TTS engine on one shared WorkQueue, like the embedded ones: one job per sentence, each
    five seconds of audio. Each job waits until the test lets it finish (`let`); `ran` is the
    order in which the worker took them."""

    queue: WorkQueue
    ran: list[str] = field(default_factory=list)
    name: str = "queued-tts"
    sample_rate: int = RATE
    _gates: dict[str, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))

    def let(self, text: str) -> None:
        self._gates[text].set()

    async def stream(self, text: str, language: str = "en") -> AsyncIterator[bytes]:
        def synthesize(token: CancelToken, emit: Callable[[Any], None]) -> None:
            self.ran.append(text)
            self._gates[text].wait(10)
            emit(np.full(5 * RATE, 3000, dtype=np.int16).tobytes())

        async for chunk in self.queue.stream(synthesize):
            yield chunk


async def order_after_contention() -> list[str]:
    """Session A is in the middle of a long reply and its second sentence waits for the shared
    TTS engine when B's question arrives. The order in which the engine voiced them."""
    tts = QueuedTTS(WorkQueue("tts", "test", max_waiting=8))
    turns = {}
    for name, reply in (("a", "A one is here. A two is here. A three is here."), ("b", "B one is here.")):
        engines = Engines(stt=FakeSTT(lambda s: ""), llm=FakeLLM(reply=reply), tts=tts)
        turns[name] = Turn(1, engines, MemoryAudio(), lambda event: None)  # nobody plays: audio stays queued
        turns[name].release(1, time.monotonic())  # the user has finished: no reply is held back
    a, b = turns["a"], turns["b"]

    a.start(a.respond([{"role": "user", "content": "Tell me a story."}], "Tell me a story."))
    await until(lambda: tts.ran == ["A one is here."])
    other = threading.Event()  # someone else's job, holding the engine while A and B queue up
    blocker = asyncio.create_task(tts.queue.run(lambda token: tts.ran.append("other") or other.wait(10)))
    await until(lambda: tts.queue.waiting == 1)
    tts.let("A one is here.")
    await until(lambda: tts.ran[-1] == "other" and tts.queue.waiting == 1)  # A's second sentence waits
    b.start(b.respond([{"role": "user", "content": "Quick one?"}], "Quick one?"))
    await until(lambda: tts.queue.waiting == 2)  # and so does B's first
    for text in ("A two is here.", "A three is here.", "B one is here."):
        tts.let(text)
    other.set()
    await until(lambda: len(tts.ran) == 5)
    await blocker
    for turn in (a, b):
        turn.cancel()
        await turn.wait()
    await tts.queue.close()
    return tts.ran


async def test_a_new_turns_first_audio_goes_ahead_of_a_long_reply() -> None:
    # A's second sentence is needed only after the five seconds of A's audio queued ahead of it;
    # B's first sentence is needed now.
    assert await order_after_contention() == ["A one is here.", "other", "B one is here.", "A two is here.", "A three is here."]


REPLY = [
    "The",
    " moon",
    " is",
    " far",
    ".",
    " It",
    " is",
    " about",
    " 384,000",
    " km",
    " away",
    ".",
    " Light",
    " takes",
    " a",
    " second",
    ".",
]


class ScriptedServer:
    """Stands in for xllamacpp's Server: streams REPLY, or its rest after an assistant prefix (the
    continuation of a reply that stepped aside). Before the token after the first sentence it waits
    for `resume`, so the test can queue other work while the reply is running."""

    def __init__(self, ran: list[str]) -> None:
        self.ran = ran
        self.requests: list[dict[str, Any]] = []
        self.paused = threading.Event()
        self.resume = threading.Event()

    def handle_chat_completions(self, request: dict[str, Any], callback: Any) -> None:
        self.requests.append(request)
        last = request["messages"][-1]
        prefix = last["content"] if last["role"] == "assistant" else ""
        self.ran.append(f"reply from {len(prefix)}")
        done, tokens = "", list(REPLY)
        while tokens and done != prefix:
            done += tokens.pop(0)
        for i, delta in enumerate(tokens):
            if not prefix and i == 5:  # " It": the second sentence starts
                self.paused.set()
                self.resume.wait(10)
            timings = {"predicted_n": i + 1}
            if callback({"choices": [{"index": 0, "delta": {"content": delta}}], "timings": timings}):
                return


async def reply_paused_at_its_second_sentence(ran: list[str], **engine_args: Any) -> tuple[Any, ScriptedServer, asyncio.Task[str]]:
    """A LocalLLM on a ScriptedServer (the engine's scheduling without a model), writing a reply
    that has just finished its first sentence."""
    from pipeline.engines.local_llm import LocalLLM

    engine = LocalLLM(**engine_args)
    server = ScriptedServer(ran)
    engine._server = server

    async def reply() -> str:
        with needed_by(time.monotonic()):
            return "".join([delta async for delta in engine.stream([{"role": "user", "content": "The moon?"}])])

    task = asyncio.create_task(reply())
    await until(server.paused.is_set)
    return engine, server, task


async def run_with_other_work() -> tuple[str, list[str], ScriptedServer]:
    ran: list[str] = []
    engine, server, task = await reply_paused_at_its_second_sentence(ran, parallel=1)
    # Another session's reply is asked for while this reply's second sentence is about to start.
    with needed_by(time.monotonic()):
        other = asyncio.create_task(engine._queue.run(lambda token: ran.append("other session")))
    await until(lambda: engine._queue.waiting == 1)
    server.resume.set()
    text = await task
    await other
    await engine.close()
    return text, ran, server


async def test_a_reply_steps_aside_after_its_first_sentence_for_another_sessions_reply() -> None:
    text, ran, server = await run_with_other_work()
    first = "The moon is far."
    assert ran == ["reply from 0", "other session", f"reply from {len(first)}"]
    assert text == "".join(REPLY), "the reply goes on from where it stopped, nothing lost or repeated"
    assert server.requests[1]["messages"][-1] == {"role": "assistant", "content": first}  # continued, not asked again
    assert server.requests[1]["max_tokens"] == server.requests[0]["max_tokens"] - 5  # the budget is the reply's, not each part's


async def test_first_sentences_run_side_by_side_and_the_rest_of_a_reply_waits_for_them() -> None:
    # Several workers (llama.cpp's slots decoded together): jobs needed now join a running batch;
    # a job needed later does not, though a worker is free, since a batch slows every job in it.
    queue = WorkQueue("llm", "test", max_waiting=4, concurrency=3)
    gate = threading.Event()
    started: list[str] = []

    def job(label: str) -> Callable[[CancelToken], str]:
        def run(token: CancelToken) -> str:
            started.append(label)
            gate.wait(10)
            return label

        return run

    now = time.monotonic()
    with needed_by(now):
        a = asyncio.create_task(queue.run(job("first sentence A")))
    await until(lambda: started == ["first sentence A"])
    with needed_by(now + 60):
        rest = asyncio.create_task(queue.run(job("rest of a reply")))
    await until(lambda: queue.waiting == 1)
    with needed_by(now):
        b = asyncio.create_task(queue.run(job("first sentence B")))
    await until(lambda: started == ["first sentence A", "first sentence B"])  # B did not wait for A
    assert queue.waiting == 1  # the rest of the reply still waits, a worker free
    assert queue.idle_s == 0.0
    gate.set()
    await asyncio.gather(a, b, rest)
    assert started == ["first sentence A", "first sentence B", "rest of a reply"]
    # A job's result is handed over before its worker counts it out: idle a moment later.
    await until(lambda: queue.idle_s > 0.0)
    assert queue.idle_s < 10.0
    await queue.close()


async def test_with_slots_a_reply_steps_aside_while_another_sessions_first_sentence_is_written(monkeypatch: Any) -> None:
    from pipeline.engines import local_llm

    # The rest of the reply is needed only once its first sentence has played: make that far off,
    # so that it cannot fall due (and join the batch) while the test runs, however slow the machine.
    monkeypatch.setattr(local_llm, "SPEECH_S_PER_CHAR", 100.0)
    ran: list[str] = []
    engine, server, task = await reply_paused_at_its_second_sentence(ran, parallel=2)
    other_done = threading.Event()
    with needed_by(time.monotonic()):
        other = asyncio.create_task(engine._queue.run(lambda token: ran.append("other session") or other_done.wait(10)))
    await until(lambda: ran == ["reply from 0", "other session"])  # started beside the reply, not after it
    server.resume.set()
    await until(lambda: engine._queue.waiting == 1)  # the reply stepped aside after its first sentence
    assert ran == ["reply from 0", "other session"]
    other_done.set()
    text = await task
    await other
    await engine.close()
    assert ran == ["reply from 0", "other session", "reply from 16"]
    assert text == "".join(REPLY)
