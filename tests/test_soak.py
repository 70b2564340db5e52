"""Soak: many connect/talk/disconnect cycles and killed clients leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kit.rtc_client import Client
from rtc.session import SessionLimits
from tests.test_hardening import EchoLLM, ScriptedSTT, ToneTTS, engines

pytestmark = pytest.mark.loopback

ROOT = Path(__file__).resolve().parent.parent
CYCLES = int(os.environ.get("SOAK_CYCLES", "200"))
KILLED = 20


class ShortTTS(ToneTTS):
    async def stream(self, text, language="en"):
        t = np.arange(int(0.2 * self.sample_rate)) / self.sample_rate
        yield (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16).tobytes()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def session_tasks() -> list[asyncio.Task]:
    # Every task a session makes is named "<what>:<session id>"; turn tasks "turn-<n>".
    return [t for t in asyncio.all_tasks() if not t.done() and (":" in t.get_name() or t.get_name().startswith("turn-"))]


async def cycle(url: str, i: int) -> None:
    client = Client(url)
    try:
        await client.connect()
        await client.wait_event("state", state="listening", timeout=15)
        client.send({"type": "text", "text": f"Cycle {i}"})
        if i % 2:
            await client.wait_event("reply", timeout=15)  # a whole turn
        else:
            await client.wait_event("reply_delta", timeout=15)  # leave mid-reply
    finally:
        await client.close()


async def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return predicate()


async def test_soak_cycles_and_killed_clients_leave_nothing_behind(start_server):
    eng = engines()
    eng.tts = ShortTTS()
    assert isinstance(eng.stt, ScriptedSTT) and isinstance(eng.llm, EchoLLM)
    server = await start_server(engines=eng, limits=SessionLimits(no_media_timeout_s=2.0), max_sessions=50, max_turns_per_minute=1000)

    async def run_cycles(start: int, count: int, parallel: int = 4) -> None:
        for base in range(start, start + count, parallel):
            await asyncio.gather(*(cycle(server.url, i) for i in range(base, min(base + parallel, start + count))))

    await run_cycles(0, 20)  # warm-up: imports, codec tables, allocator pools
    assert await wait_until(lambda: not server.sessions, 10)
    gc.collect()
    fds0, rss0 = open_fds(), rss_mb()

    started = time.monotonic()
    await run_cycles(20, CYCLES)
    cycles_s = time.monotonic() - started
    gc.collect()
    rss_cycles = rss_mb()

    # Killed clients: a process with KILLED peers is SIGKILLed, so nothing is closed politely.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.soak_clients", server.url, str(KILLED), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    assert line.startswith(b"ready"), line
    assert len(server.sessions) == KILLED
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    killed_at = time.monotonic()
    assert await wait_until(lambda: not server.sessions, 15), f"{len(server.sessions)} sessions left"
    noticed_s = time.monotonic() - killed_at

    assert await wait_until(lambda: not session_tasks(), 5), session_tasks()
    gc.collect()
    fds1, rss1 = open_fds(), rss_mb()
    print(
        f"\nsoak: {CYCLES} cycles in {cycles_s:.0f} s, {KILLED} killed clients noticed in {noticed_s:.1f} s; "
        f"sessions left {len(server.sessions)}; fds {fds0} -> {fds1}; RSS {rss0:.0f} -> {rss_cycles:.0f} after the cycles -> {rss1:.0f} MB after the killed clients"
    )
    assert fds1 <= fds0 + 5
    assert rss1 <= rss0 + 40, (rss0, rss1)
    assert noticed_s < 10.0  # the no-media watchdog (2 s, plus a loaded machine's delays), not aiortc's ~30 s


REALTIME_CYCLES = int(os.environ.get("SOAK_REALTIME_CYCLES", "100"))


async def test_realtime_websocket_sessions_connect_talk_and_drop_leaving_nothing_behind(start_server, caplog):
    """The Realtime WebSocket under the same soak: the SDK's client connects, talks (audio and a typed
    turn), and drops, mid-reply every other time; no server error, no session, task or fd left."""
    import base64

    from kit.realtime_client import realtime
    from rtc.http import REALTIME

    eng = engines()
    eng.tts = ShortTTS()
    server = await start_server(engines=eng, max_sessions=50, max_turns_per_minute=1000)
    noise = base64.b64encode((np.random.default_rng(0).normal(0, 300, 4800)).astype("<i2").tobytes()).decode()

    async def talk(i: int) -> None:
        async with realtime(server.url) as (connection, received):
            await received.wait("session.created")
            await connection.input_audio_buffer.append(audio=noise)
            await connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Cycle {i}"}]}
            )
            await connection.response.create()
            await received.wait("response.done" if i % 2 else "response.created", timeout=15)

    for base in range(0, 10, 2):  # warm-up
        await asyncio.gather(*(talk(i) for i in range(base, base + 2)))
    assert await wait_until(lambda: not server.app[REALTIME], 10)
    gc.collect()
    fds0 = open_fds()
    caplog.clear()
    for base in range(0, REALTIME_CYCLES, 4):
        await asyncio.gather(*(talk(i) for i in range(base, min(base + 4, REALTIME_CYCLES))))
    assert await wait_until(lambda: not server.app[REALTIME], 10), f"{len(server.app[REALTIME])} sessions left"
    assert await wait_until(lambda: not session_tasks(), 5), session_tasks()
    gc.collect()
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], [r.getMessage() for r in errors[:5]]
    assert open_fds() <= fds0 + 5
