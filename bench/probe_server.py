"""The real server with measuring probes: `python -m bench.probe_server <server.py flags>`.

Runs `server.main()` unchanged, except that the app `server.build_app` returns
gets two more routes and one more task, and two methods are timed:

- a 10 ms ticker that records how late the event loop wakes it (exact samples, where the
  server's own `/metrics` keeps a 100 ms ticker in histogram buckets);
- `OutboundAudioTrack.recv` and aiortc's `RTCDtlsTransport._send_rtp` record when each
  outbound frame left the track and when its RTP packet reached the socket;
- a sampling profiler of the server's threads, run on request.

Nothing in the repository is edited; the cost is a timer wake-up per 10 ms and two
timestamps per frame.

    GET /_bench/probe?since=<monotonic s>&gc=0|1&trim=0|1
    -> {"now", "lag": [[t, lag_ms], ...] (samples taken after `since`), "sessions",
        "pacing": {"track_p99_ms", "socket_p99_ms", ...}: p99 of |interval - 20 ms| between a
        session's consecutive outbound frames since `since`, when the track released them and
        when their RTP packets reached the socket (see PacingProbe),
        "frames_sent", "late_frames" (summed over open sessions' outbound tracks),
        "tasks", "threads", and with gc=1 (after a full gc.collect()) "gc_objects" and "gc_types"
        (the 300 commonest types by count), and with trim=1 "rss_before_trim_mb" / "rss_after_trim_mb"
        around glibc's malloc_trim(0)}

    GET /_bench/profile?seconds=3
    -> a sampling profile of the server's threads (200 samples/s): how busy the event-loop
       thread and the other threads were, and where (see `sample_stacks`)
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import threading
import time
import weakref
from collections import Counter, deque
from typing import Any

from aiohttp import web

import server
from bench.stats import LoopLag
from rtc.http import SESSIONS

# Where a thread's innermost frame sits when it is waiting, not working.
_IDLE = (
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("queue.py", "get"),
    ("thread.py", "_worker"),
    ("threading.py", "_wait_for_tstate_lock"),
)
_PACKAGES = (
    "aiortc",
    "aioice",
    "av",
    "pylibsrtp",
    "pyee",
    "aiohttp",
    "webrtcvad",
    "numpy",
    "openai",
    "httpx",
    "httpcore",
    "pipeline",
    "rtc",
    "bench",
    "asyncio",
    "json",
    "logging",
)


def _where(frame: Any) -> tuple[str, str]:
    """(package, file:function) of a stack: the innermost frame in a package of interest, else the top one."""
    top = frame
    f = frame
    while f is not None:
        path = f.f_code.co_filename
        for pkg in _PACKAGES:
            if f"/{pkg}/" in path:
                return pkg, f"{pkg}/{path.rsplit('/' + pkg + '/', 1)[1]}:{f.f_code.co_name}"
        f = f.f_back
    name = top.f_code.co_filename.rsplit("/", 1)[-1]
    return name.removesuffix(".py"), f"{name}:{top.f_code.co_name}"


def _idle(frame: Any) -> bool:
    name = frame.f_code.co_filename.rsplit("/", 1)[-1]
    return (name, frame.f_code.co_name) in _IDLE


def sample_stacks(seconds: float, interval: float = 0.005) -> dict[str, Any]:
    """A statistical profile of every thread for `seconds` (run in a thread of its own).

    Busy = the innermost frame is not a known wait (selector, queue, lock). Native code
    (Opus, SRTP, resampling) shows as the Python frame that called it; a thread waiting
    for the GIL counts as busy at the line where it waits.
    """
    me = threading.get_ident()
    main = threading.main_thread().ident
    counts: dict[str, Counter[str]] = {"main": Counter(), "other": Counter()}
    packages: dict[str, Counter[str]] = {"main": Counter(), "other": Counter()}
    n = 0
    others = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frames = sys._current_frames()
        n += 1
        for tid, frame in frames.items():
            if tid == me:
                continue
            kind = "main" if tid == main else "other"
            if kind == "other":
                others += 1
            if _idle(frame):
                continue
            pkg, where = _where(frame)
            counts[kind][where] += 1
            packages[kind][pkg] += 1
        del frames
        time.sleep(interval)
    out: dict[str, Any] = {"samples": n, "seconds": seconds, "threads_sampled": round(others / max(n, 1), 1)}
    for kind in ("main", "other"):
        busy = sum(counts[kind].values())
        out[f"{kind}_busy_pct"] = round(100 * busy / max(n, 1), 1)  # other: % of one thread-sample, summed over threads
        out[f"{kind}_top"] = [[w, round(100 * c / max(n, 1), 1)] for w, c in counts[kind].most_common(12)]
        out[f"{kind}_packages"] = [[p, round(100 * c / max(n, 1), 1)] for p, c in packages[kind].most_common(10)]
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PacingProbe:
    """When each outbound frame left the session's track (`recv` returned) and when its RTP packet
    was handed to the socket (after aiortc's Opus encode in an executor thread, and SRTP).
    Wraps two methods in this process only; per-stream times are kept while the stream lives."""

    def __init__(self) -> None:
        self.track: weakref.WeakKeyDictionary[Any, deque[float]] = weakref.WeakKeyDictionary()
        self.socket: weakref.WeakKeyDictionary[Any, deque[float]] = weakref.WeakKeyDictionary()

    def install(self) -> None:
        from aiortc.rtcdtlstransport import RTCDtlsTransport
        from aiortc.rtp import is_rtcp

        from rtc.outbound import OutboundAudioTrack

        recv, send_rtp = OutboundAudioTrack.recv, RTCDtlsTransport._send_rtp
        track, socket = self.track, self.socket

        async def timed_recv(self: Any) -> Any:
            frame = await recv(self)
            track.setdefault(self, deque(maxlen=30_000)).append(time.monotonic())
            return frame

        async def timed_send(self: Any, data: bytes) -> None:
            if not is_rtcp(data):
                socket.setdefault(self, deque(maxlen=30_000)).append(time.monotonic())
            await send_rtp(self, data)

        OutboundAudioTrack.recv = timed_recv  # type: ignore[method-assign]
        RTCDtlsTransport._send_rtp = timed_send  # type: ignore[method-assign]

    @staticmethod
    def jitter(streams: weakref.WeakKeyDictionary[Any, deque[float]], since: float) -> list[float]:
        out: list[float] = []
        for times in list(streams.values()):
            recent = [t for t in times if t >= since]
            out += [abs((b - a) * 1000 - 20.0) for a, b in zip(recent, recent[1:], strict=False)]
        return out


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)


def add_probe(app: web.Application) -> web.Application:
    monitor = LoopLag()  # the same 10 ms ticker the bench's client side runs
    pacing = PacingProbe()
    pacing.install()

    async def probe(request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0") or 0)
        sessions = list(request.app[SESSIONS].values())
        body: dict[str, Any] = {
            "now": time.monotonic(),
            "lag": [[round(t, 4), round(lag, 3)] for t, lag in list(monitor.samples) if t >= since],
            "sessions": len(sessions),
            "frames_sent": sum(s.outbound.frames_sent for s in sessions),
            "late_frames": sum(s.outbound.late_frames for s in sessions),
            "tasks": len(asyncio.all_tasks()),
            "pacing": {
                # |interval - 20 ms| between consecutive frames of one session, pooled: p99 and count
                "track_p99_ms": _p99(track := PacingProbe.jitter(pacing.track, since)),
                "track_n": len(track),
                "socket_p99_ms": _p99(sock := PacingProbe.jitter(pacing.socket, since)),
                "socket_n": len(sock),
            },
            "threads": threading.active_count(),
        }
        if request.query.get("trim") == "1":  # hand free heap back to the OS: what remains is really in use
            body["rss_before_trim_mb"] = _rss_mb()
            _malloc_trim()
            body["rss_after_trim_mb"] = _rss_mb()
        if request.query.get("gc") == "1":  # a full collection first: count what is really alive
            gc.collect()
            objects = gc.get_objects()
            body["gc_objects"] = len(objects)
            body["gc_types"] = dict(Counter(type(o).__qualname__ for o in objects).most_common(300))
            del objects
        return web.json_response(body)

    async def profile(request: web.Request) -> web.Response:
        seconds = min(30.0, float(request.query.get("seconds", "3")))
        return web.json_response(await asyncio.to_thread(sample_stacks, seconds))

    app.router.add_get("/_bench/probe", probe)
    app.router.add_get("/_bench/profile", profile)

    async def start_monitor(_app: web.Application) -> None:
        monitor.start()

    app.on_startup.append(start_monitor)
    app.on_cleanup.append(lambda _app: monitor.stop())
    return app


def main(argv: list[str]) -> int:
    build_app = server.build_app
    server.build_app = lambda settings: add_probe(build_app(settings))  # type: ignore[assignment]
    return server.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
