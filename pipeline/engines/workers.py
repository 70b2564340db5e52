"""Worker threads per engine, a bounded queue in front of them, and cooperative cancellation.

The models are shared by every session and each runs one job at a time (a second
concurrent job would only split the same cores). When `max_waiting` jobs already wait, a
new one is refused at once with EngineBusy, since a turn that waits behind a long queue is
worse than one rejected up front.

Waiting jobs are taken most urgent first: each carries the time its result is needed by
(`needed_by`), so a new turn's transcription or first sentence goes ahead of the third
sentence of someone else's long reply, whose audio is already queued, and a running job may
step aside for it (`CancelToken.outranked`). Deadlines only grow with time, so nothing waits
forever. Each embedded engine keeps its own queue: with one queue for all of them, a first
sentence's synthesis would wait behind other sessions' first sentences being written.

With more than one worker (the LLM, whose slots llama.cpp decodes together), jobs that are
due (needed now: first sentences) run side by side, and a job needed later (the rest of a
reply whose audio is queued) starts only when nothing is running or once it is due, and a
running one steps aside while a more urgent job runs beside it: batching makes every job in
the batch slower, so the rest of a reply does not ride along with someone's first sentence.

Native inference cannot be interrupted from outside, so a job receives a CancelToken
and checks it between its steps (segments, tokens, sentences). Cancelling the awaiting
task, or closing the async iterator, removes a queued job or sets the token of a
running one; the worker is free again as soon as the job notices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.engines.base import EngineBusy, EngineError
from pipeline.events import Stage
from settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = Settings.engine_queue_size


def available_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_count(threads: int) -> int:
    """A thread-count setting: 0 (or less) means every available core."""
    return threads if threads > 0 else available_cores()


class Cancelled(Exception):
    """Raised inside a job that noticed its token was cancelled."""


class CancelToken:
    """Set from the event loop, polled by the worker thread between steps.

    It also carries the job's urgency: `needed_by` (set when the job is queued; a running job may
    move it later as its own result becomes less urgent) and `outranked()`, whether a job needed
    sooner is waiting for this engine, so that a long job can step aside at a good point.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.needed_by = math.inf
        self._outranked: Callable[[], bool] = lambda: False

    def outranked(self) -> bool:
        return self._outranked()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled


_END = object()


_NEEDED_BY: ContextVar[float | None] = ContextVar("needed_by", default=None)


@contextlib.contextmanager
def needed_by(when: float) -> Iterator[None]:
    """Engine jobs submitted inside this block are needed by `when` (a time.monotonic() time).

    A job that gates someone's first audio is needed now; a later sentence of a reply is needed
    when the audio already queued ahead of it runs out. A job submitted outside any block is
    needed at the moment it is submitted, so such jobs keep their arrival order. The engines'
    interfaces stay as they are: the hint travels with the caller's context.
    """
    token = _NEEDED_BY.set(when)
    try:
        yield
    finally:
        _NEEDED_BY.reset(token)


@dataclass(order=True)
class _Job:
    key: tuple[float, int]
    future: concurrent.futures.Future[Any] = field(compare=False)
    token: CancelToken = field(compare=False)
    call: Callable[[], Any] = field(compare=False)


class WorkQueue:
    """`concurrency` worker threads fed by a bounded queue of blocking jobs, most urgent first."""

    def __init__(self, stage: Stage, name: str, max_waiting: int = DEFAULT_QUEUE_SIZE, *, concurrency: int = 1) -> None:
        self.stage = stage
        self.name = name
        self.max_waiting = max(0, max_waiting)
        self._cond = threading.Condition()
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._waiting = 0
        self._closed = False
        self._tokens: set[CancelToken] = set()  # of admitted jobs, so close() can stop them
        self._running: dict[CancelToken, float] = {}  # running jobs and the time each was needed by when it started
        self._last_end = -math.inf  # when the last job ended (time.monotonic())
        self._threads = [threading.Thread(target=self._work, name=f"{stage}-{name}-{i}", daemon=True) for i in range(max(1, concurrency))]
        for thread in self._threads:
            thread.start()

    @property
    def concurrency(self) -> int:
        return len(self._threads)

    @property
    def waiting(self) -> int:
        """Jobs admitted but not started yet."""
        with self._cond:
            return self._waiting

    @property
    def idle_s(self) -> float:
        """Seconds since the last job ended, with nothing waiting or running since (0 while busy)."""
        with self._cond:
            return 0.0 if self._waiting or self._running else time.monotonic() - self._last_end

    def _work(self) -> None:
        while True:
            with self._cond:
                while (job := self._next()) is None:
                    if self._closed and not self._heap:
                        return  # closed, and nothing left
                    self._cond.wait(self._until_due())
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited; on_done counted it out
                self._waiting -= 1
                self._running[job.token] = job.key[0]
            try:
                job.token.check()  # cancelled while queued but too late for Future.cancel()
                job.future.set_result(job.call())
            except BaseException as exc:  # handed to the awaiting side, which re-raises it
                job.future.set_exception(exc)
            finally:
                with self._cond:
                    del self._running[job.token]
                    self._last_end = time.monotonic()
                    self._cond.notify_all()  # a job needed later may start now that this one is done

    def _next(self) -> _Job | None:
        """Under the lock: the waiting job to start now, taken off the heap. The most urgent one,
        if it is due or nothing runs; a job needed later does not join a running batch."""
        if not self._heap:
            return None
        top = self._heap[0]
        if not self._running or top.key[0] <= time.monotonic() or top.future.done():
            return heapq.heappop(self._heap)
        return None

    def _until_due(self) -> float | None:
        """Under the lock: seconds until the most urgent waiting job is due (None: nothing waits)."""
        return max(0.0, self._heap[0].key[0] - time.monotonic()) if self._heap else None

    def _outranked(self, token: CancelToken) -> bool:
        """A job needed before `token`'s job waits, or, while `token`'s job is not due yet, runs
        beside it."""
        when = token.needed_by
        with self._cond:
            if any(job.key[0] < when and not job.future.done() for job in self._heap):
                return True
            return when > time.monotonic() and any(t is not token and key < when for t, key in self._running.items())

    def _submit(self, fn: Callable[..., T], token: CancelToken, *args: Any, when: float | None = None) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise EngineError(self.stage, f"{self.name} is shut down")
            if self._waiting >= self.max_waiting:
                raise EngineBusy(self.stage, f"{self.name} is busy: {self._waiting} requests already waiting")
            when = _NEEDED_BY.get() if when is None else when
            seq = next(self._seq)
            key = (time.monotonic() if when is None else when, seq)
            token.needed_by = key[0]
            token._outranked = functools.partial(self._outranked, token)
            self._waiting += 1
            self._tokens.add(token)
            heapq.heappush(self._heap, _Job(key, future, token, lambda: fn(token, *args)))
            self._cond.notify()

        def on_done(f: concurrent.futures.Future[T]) -> None:
            with self._cond:
                self._tokens.discard(token)
                if f.cancelled():  # never started, so the worker did not count it out
                    self._waiting -= 1

        future.add_done_callback(on_done)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(token, *args)` on the worker thread; its result, or its exception."""
        token = CancelToken()
        future = self._submit(fn, token, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            token.cancel()
            future.cancel()
            if self._shut_down_under(future):
                raise self._shut_down() from None
            raise
        except Cancelled:  # our caller is still here, so it was close() that stopped the job
            raise self._shut_down() from None

    def _shut_down(self) -> EngineError:
        return EngineError(self.stage, f"{self.name} shut down before this request finished")

    def _shut_down_under(self, future: concurrent.futures.Future[Any]) -> bool:
        """True when the job was dropped by close(), not by cancelling the caller."""
        task = asyncio.current_task()
        return future.cancelled() and self._closed and not (task is not None and task.cancelling())

    async def stream(self, fn: Callable[..., None], *args: Any, when: float | None = None) -> AsyncGenerator[Any, None]:
        """Items that `fn(token, emit, *args)` passes to `emit` on the worker thread.

        `when`: the time the job is needed by, where not the caller's `needed_by`.

        Items reach the event loop as they are produced; the iterator ends when `fn`
        returns and re-raises what `fn` raised. Leaving the iteration early (break,
        aclose, task cancellation) cancels the job.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        def end() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                emit(_END)

        def job(token: CancelToken, *job_args: Any) -> None:
            try:
                fn(token, emit, *job_args)
            finally:
                end()

        token = CancelToken()
        future = self._submit(job, token, *args, when=when)

        def on_done(f: concurrent.futures.Future[None]) -> None:
            if f.cancelled():  # a job dropped from the queue never runs `job`: nothing else would end the stream
                end()

        future.add_done_callback(on_done)
        try:
            while (item := await items.get()) is not _END:
                yield item
            if future.cancelled():
                raise self._shut_down()
            try:
                await asyncio.wrap_future(future)  # re-raise what the job raised
            except Cancelled:  # we are still iterating, so close() stopped the job
                raise self._shut_down() from None
        finally:
            token.cancel()
            future.cancel()

    async def close(self) -> None:
        """Refuse new jobs, drop queued ones, stop the running ones and wait for them."""
        with self._cond:
            self._closed = True
            for token in self._tokens:
                token.cancel()
            dropped, self._heap = self._heap, []
            self._cond.notify_all()
        for job in dropped:
            job.future.cancel()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()
