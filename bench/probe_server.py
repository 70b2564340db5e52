"""The real server with measuring probes: `python -m bench.probe_server <server.py flags>`.

Runs `server.main()` unchanged, except that the app `server.build_app` returns gets one more
route and one more task, and two methods are timed:

- a 10 ms ticker that records how late the event loop wakes it (exact samples, where the
  server's own `/metrics` keeps a 100 ms ticker in histogram buckets);
- `OutboundAudioTrack.recv` and aiortc's `RTCDtlsTransport._send_rtp` record when each
  outbound frame left the track and when its RTP packet reached the socket.

The cost is a timer wake-up per 10 ms and two timestamps per frame.

    GET /_bench/probe?since=<monotonic s>
    -> {"now", "lag": [[t, lag_ms], ...] (samples taken after `since`), "sessions",
        "pacing": {"track_p99_ms", "socket_p99_ms", ...}: p99 of |interval - 20 ms| between a
        session's consecutive outbound frames since `since`, when the track released them and
        when their RTP packets reached the socket (see PacingProbe),
        "frames_sent", "late_frames" (summed over open sessions' outbound tracks), "tasks", "threads"}
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any

from aiohttp import web

import server
from bench.stats import LoopLag
from rtc.http import SESSIONS


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
        return web.json_response(body)

    app.router.add_get("/_bench/probe", probe)

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
