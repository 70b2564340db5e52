"""One worker thread per engine, a bounded FIFO in front of it, and cooperative cancellation.

The models are shared by every session but each runs one job at a time (a second
concurrent job would only split the same cores). Jobs wait in FIFO order; when
`max_waiting` jobs already wait, a new one is refused at once with EngineBusy, since a
turn that waits behind a long queue is worse than one rejected up front.

Native inference cannot be interrupted from outside, so a job receives a CancelToken
and checks it between its steps (segments, tokens, sentences). Cancelling the awaiting
task, or closing the async iterator, removes a queued job or sets the token of a
running one; the worker is free again as soon as the job notices.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from pipeline.engines.base import EngineBusy, EngineError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 4


def available_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_setting(settings: Any, name: str) -> int:
    """A thread-count setting; 0 or unset means every available core."""
    value = int(getattr(settings, name, 0) or 0)
    return value if value > 0 else available_cores()


def queue_size_setting(settings: Any) -> int:
    return max(0, int(getattr(settings, "engine_queue_size", DEFAULT_QUEUE_SIZE)))


class Cancelled(Exception):
    """Raised inside a job that noticed its token was cancelled."""


class CancelToken:
    """Set from the event loop, polled by the worker thread between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled


_END = object()


class WorkQueue:
    """A single worker thread fed by a bounded FIFO of blocking jobs."""

    def __init__(self, stage: str, name: str, max_waiting: int = DEFAULT_QUEUE_SIZE) -> None:
        self.stage = stage
        self.name = name
        self.max_waiting = max_waiting
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{stage}-{name}")
        self._lock = threading.Lock()
        self._waiting = 0
        self._closed = False
        self._tokens: set[CancelToken] = set()  # of admitted jobs, so close() can stop them

    @property
    def waiting(self) -> int:
        """Jobs admitted but not started yet."""
        with self._lock:
            return self._waiting

    def _submit(self, fn: Callable[..., T], token: CancelToken, *args: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                raise EngineError(self.stage, f"{self.name} is shut down")
            if self._waiting >= self.max_waiting:
                raise EngineBusy(self.stage, f"{self.name} is busy: {self._waiting} requests already waiting")
            self._waiting += 1
            self._tokens.add(token)

        def start() -> T:
            with self._lock:
                self._waiting -= 1
            token.check()  # cancelled while queued but too late for Future.cancel()
            return fn(token, *args)

        future = self._executor.submit(start)

        def on_done(f: concurrent.futures.Future[T]) -> None:
            with self._lock:
                self._tokens.discard(token)
                if f.cancelled():  # never started, so `start` did not count it out
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

    async def stream(self, fn: Callable[..., None], *args: Any) -> AsyncGenerator[Any, None]:
        """Items that `fn(token, emit, *args)` passes to `emit` on the worker thread.

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
        future = self._submit(job, token, *args)
        # A job dropped from the queue never runs `job`, so nothing else would end the stream.
        future.add_done_callback(lambda f: f.cancelled() and end())
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
        """Refuse new jobs, drop queued ones, stop the running one and wait for it."""
        with self._lock:
            self._closed = True
            for token in self._tokens:
                token.cancel()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
