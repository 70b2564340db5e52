"""WORKERS: several server processes on one port, each owning the sessions it answered.

The real `server.py` as a subprocess with `--workers 2` (echo pipeline: no models to load),
real aiortc clients on loopback. The kernel spreads connections over the workers
(SO_REUSEPORT); a full worker answers 503 and closes the connection, and the client's retry
may reach the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kit.rtc_client import Client, to_48k
from kit.speech import concat, silence, speak
from tests.browser import ServerProcess, poll

pytestmark = pytest.mark.loopback


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[ServerProcess]:
    args = ["--pipeline", "echo", "--workers", "2", "--max-sessions", "2", "--ice-hosts", "127.0.0.1", "--host", "127.0.0.1"]
    with ServerProcess(args, tmp_path / "server.log") as server:
        poll(lambda: len(workers(server)) == 2, 20, what="two workers")
        yield server


def workers(server: ServerProcess) -> dict[int, int]:
    """{worker number: pid} of the supervisor's live children."""
    assert server.proc is not None
    out = {}
    try:
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    except OSError:
        return {}
    for pid in map(int, children):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"VOICE_WORKER="):
                out[int(item.split(b"=", 1)[1])] = pid
    return out


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Polls `condition` without blocking the event loop (the clients' media keeps flowing)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)


async def connect(server: ServerProcess, n: int) -> list[Client]:
    clients = [Client(server.base) for _ in range(n)]
    await asyncio.gather(*(c.connect(retries=10) for c in clients))
    await asyncio.gather(*(c.wait_event("state", state="listening", timeout=15) for c in clients))
    return clients


async def close(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def talks(client: Client) -> bool:
    """The client speaks; the server hears it (speech_started and speech_stopped come back)."""
    sent = await client.mic.say(to_48k(concat(silence(0.2), speak("Are you still there?"), silence(0.2))))
    await client.wait_event("speech_started", after=sent, timeout=10)
    await client.wait_event("speech_stopped", after=sent, timeout=10)
    return True


async def test_four_clients_at_once_are_served_by_two_workers_of_two_sessions(two_workers: ServerProcess) -> None:
    clients = await connect(two_workers, 4)
    try:
        assert sorted(c.worker for c in clients) == [0, 0, 1, 1], "each worker took two: full ones said 503 and the retry went on"
        assert all(await asyncio.gather(*(talks(c) for c in clients)))
        fifth = Client(two_workers.base)
        with pytest.raises(RuntimeError, match="503"):
            await fifth.connect(retries=3)
        await fifth.close()
    finally:
        await close(clients)


async def test_clients_that_never_retry_are_handed_to_a_worker_with_room(two_workers: ServerProcess) -> None:
    """No client here retries (as SDK clients and telephony bridges don't): a full worker hands the
    offer, the Realtime call or the Realtime WebSocket to its sibling; only a full box says 503."""
    from openai import AsyncOpenAI

    from kit.realtime_client import realtime

    sdk = AsyncOpenAI(api_key="no-key", base_url=f"{two_workers.base}/v1")

    async def create(offer: str) -> str:
        return (await sdk.realtime.calls.create(sdp=offer)).text

    page = [Client(two_workers.base) for _ in range(2)]
    call = Client(two_workers.base)
    async with contextlib.AsyncExitStack() as stack:
        try:
            await asyncio.gather(*(c.connect(retries=0) for c in page), call.call(create))
            _, socket = await stack.enter_async_context(realtime(two_workers.base))
            await socket.wait("session.created")
            await asyncio.gather(*(c.wait_event("state", state="listening", timeout=15) for c in page))
            await call.wait_event("session.created", timeout=15)
            health = await asyncio.gather(*(_health(two_workers, w) for w in (0, 1)))
            assert [h["sessions"] for h in health] == [2, 2], "four sessions, two on each worker"
            assert all(await asyncio.gather(*(talks(c) for c in page)))
            await call.mic.say(to_48k(concat(silence(0.2), speak("Are you still there?"), silence(0.2))))
            await call.wait_event("input_audio_buffer.speech_started", timeout=10)  # a call handed on still hears
            fifth = Client(two_workers.base)
            with pytest.raises(RuntimeError, match="503"):
                await fifth.connect(retries=0)
            await fifth.close()
        finally:
            await close([*page, call])


async def _health(server: ServerProcess, worker: int) -> dict[str, Any]:
    """A worker's own /healthz, through its Unix socket."""
    import aiohttp

    directory = _siblings_dir(server)
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(directory / f"worker-{worker}.sock"))) as http:
        async with http.get("http://worker/healthz") as resp:
            return await resp.json()


def _siblings_dir(server: ServerProcess) -> Path:
    pid = next(iter(workers(server).values()))
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"VOICE_SIBLINGS="):
            return Path(item.split(b"=", 1)[1].decode())
    raise AssertionError("no VOICE_SIBLINGS in the worker's environment")


async def test_a_killed_worker_loses_only_its_own_sessions_and_comes_back(two_workers: ServerProcess) -> None:
    clients = await connect(two_workers, 4)
    try:
        pids = workers(two_workers)
        os.kill(pids[0], signal.SIGKILL)
        survivors = [c for c in clients if c.worker == 1]
        assert len(survivors) == 2
        assert all(await asyncio.gather(*(talks(c) for c in survivors))), "the other worker's sessions keep talking"
        # the supervisor starts worker 0 again, and it takes new sessions
        await until(lambda: workers(two_workers).get(0) not in (None, pids[0]), 20)
        again = await connect(two_workers, 2)
        assert sorted(c.worker for c in again) == [0, 0]
        await close(again)
    finally:
        await close(clients)


async def test_stopping_the_server_says_goodbye_in_every_worker(two_workers: ServerProcess) -> None:
    clients = await connect(two_workers, 4)
    try:
        assert two_workers.proc is not None
        two_workers.proc.send_signal(signal.SIGTERM)
        for client in clients:
            _, goodbye = await client.wait_event("goodbye", timeout=15)
            assert "shutting down" in goodbye["reason"]
        assert await asyncio.to_thread(two_workers.proc.wait, 20) == 0
        assert workers(two_workers) == {}
    finally:
        await close(clients)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def maps_model(pid: int) -> bool:
    """The process has a GGUF model file mapped (llama.cpp mmaps the weights)."""
    try:
        return ".gguf" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.timeout(300)
async def test_two_workers_on_embedded_engines_share_one_llm(tmp_path: Path) -> None:
    """The supervisor loads the LLM once (llama.cpp's server on loopback, behind a key) and both
    workers answer through it; each worker has its own STT and TTS."""
    args = ["--workers", "2", "--ice-hosts", "127.0.0.1", "--host", "127.0.0.1", "--max-sessions", "1"]
    with ServerProcess(args, tmp_path / "server.log", startup_timeout=180) as server:
        poll(lambda: len(workers(server)) == 2, 60, what="two workers")
        assert server.proc is not None
        assert maps_model(server.proc.pid), "the supervisor holds the model"
        assert not any(maps_model(pid) for pid in workers(server).values()), "no worker loads its own copy"
        assert all(server.proc and "api-key" not in cmdline(pid) for pid in workers(server).values()), "the key is not in argv"
        seen: set[int] = set()
        poll(lambda: seen.add(server.healthz()["worker"]) or seen == {0, 1}, 120, what="both workers warm")
        clients = [Client(server.base) for _ in range(2)]
        try:
            for client in clients:
                await client.connect(retries=20)
            assert sorted(c.worker for c in clients) == [0, 1]
            for client in clients:
                await client.wait_event("state", state="listening", timeout=30)

            async def ask(client: Client) -> dict[str, Any]:
                await client.mic.say(to_48k(concat(silence(0.3), speak("What is the capital of France?"), silence(0.3))))
                _, reply = await client.wait_event("reply", turn=1, timeout=120)
                await client.wait_event("state", state="speaking", timeout=30)
                return reply

            replies = await asyncio.gather(*(ask(c) for c in clients))  # both at once, batched in one server
            assert all("paris" in r["text"].lower() for r in replies), replies
        finally:
            await close(clients)
