"""What `/metrics` shows, in the Prometheus text format.

Counters and histograms are fed from the events sessions send, so the
pipeline needs no knowledge of them. One registry per app (not the library's
global one), so several apps in one process (tests) do not mix.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.events import Error, Event, Metrics, Reply
from rtc.playout import PlayoutCount

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_FIELDS = {
    "endpoint": "endpoint_ms",
    "stt": "stt_ms",
    "llm_first_token": "llm_first_token_ms",
    "first_sentence": "first_sentence_ms",
    "tts_first_audio": "tts_first_audio_ms",
    "voice_to_voice": "voice_to_voice_ms",
    "turn_detect": "turn_detect_ms",
}


class Telemetry:
    def __init__(
        self,
        open_sessions: Callable[[], int],
        readiness: Callable[[], dict[str, Any]],
        late_frames: Callable[[], int] = lambda: 0,
        worker: int = 0,
    ) -> None:
        self.registry = r = CollectorRegistry()
        # With WORKERS > 1 each worker serves its own /metrics (a scrape reaches one of them): this says which.
        Gauge("voice_worker", "Which worker (of WORKERS) answered this scrape", ["worker"], registry=r).labels(str(worker)).set(1)
        self._readiness = readiness
        Gauge("voice_sessions_open", "Sessions open now", registry=r).set_function(lambda: open_sessions())
        self.sessions = Counter("voice_sessions", "Sessions answered", registry=r)
        self.refused = Counter("voice_offers_refused", "Offers refused", ["reason"], registry=r)
        self.closed = Counter("voice_sessions_closed", "Sessions closed, by why", ["reason"], registry=r)
        self.turns = Counter("voice_turns", "Turns that produced a reply", registry=r)
        self.released = Counter(
            "voice_turns_released", "What ended the user's turn: the end-of-turn model, the long silence, or typed text", ["by"], registry=r
        )
        self.errors = Counter("voice_errors", "Errors reported to clients", ["stage"], registry=r)
        self.interrupted = Counter("voice_replies_interrupted", "Replies cut short (barge-in or error)", registry=r)
        self.latency = Histogram("voice_stage_latency_seconds", "Per-turn latency by stage", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.loop_lag = Histogram(
            "voice_event_loop_lag_seconds",
            "Event-loop scheduling lag",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self._lag_window: deque[float] = deque(maxlen=3000)  # the last minute at 20 ms ticks
        Gauge("voice_event_loop_lag_p99_seconds", "p99 event-loop lag over the last minute", registry=r).set_function(self.lag_p99)
        Gauge("voice_outbound_late_frames", "Reply frames of the open sessions that left over a frame late", registry=r).set_function(
            lambda: late_frames()
        )
        self.inbound = InboundCounters(r)
        self.queue_depth = Gauge("voice_engine_queue_depth", "Requests waiting for an embedded engine", ["stage"], registry=r)

    def observe(self, event: Event) -> None:
        if isinstance(event, Metrics) and event.final:  # a turn's timings, once it is over: counted once
            self.turns.inc()
            if event.released_by is not None:
                self.released.labels(event.released_by).inc()
            for stage, name in STAGE_FIELDS.items():
                value = getattr(event, name)
                if value is not None:
                    self.latency.labels(stage).observe(value / 1000)
        elif isinstance(event, Error):
            self.errors.labels(event.stage).inc()
        elif isinstance(event, Reply) and event.interrupted:
            self.interrupted.inc()

    def lag_p99(self) -> float:
        if not self._lag_window:
            return 0.0
        ordered = sorted(self._lag_window)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    async def watch_loop(self, interval: float = 0.02) -> None:
        """Measures how late the loop wakes a sleeper: every session's audio waits that long too.

        A 20 ms tick, one frame: coarser ticks would miss the stalls that matter for audio.
        """
        while True:
            started = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - started - interval)
            self.loop_lag.observe(lag)
            self._lag_window.append(lag)

    def render(self) -> bytes:
        for stage, info in self._readiness().items():
            depth = info.get("queue")
            if isinstance(depth, int):
                self.queue_depth.labels(stage).set(depth)
        return generate_latest(self.registry)


class InboundCounters:
    """The deadline path's counts (a PlayoutObserver): what loss, lateness and jitter did to inbound audio."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.frames = Counter(
            "voice_inbound_made_up_frames",
            "Inbound 20 ms frames no packet gave in time: `concealed` (Opus packet-loss concealment) or `recovered` (from the next packet's FEC)",
            ["how"],
            registry=r,
        )
        self.dropped = Counter(
            "voice_inbound_dropped_packets",
            "Inbound packets dropped: `late` (after their frame was concealed) or `duplicate`",
            ["why"],
            registry=r,
        )
        self.resyncs = Counter("voice_inbound_resyncs", "Inbound timelines started afresh (a long gap or a sender clock jump)", registry=r)
        self.delays = Histogram(
            "voice_inbound_delay_seconds",
            "How long after its fastest possible arrival each inbound packet was passed on",
            buckets=(0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.3, 0.5, 1.0),
            registry=r,
        )

    def count(self, kind: PlayoutCount, n: int = 1) -> None:
        if kind in ("concealed", "recovered"):
            self.frames.labels(kind).inc(n)
        elif kind == "resync":
            self.resyncs.inc(n)
        else:
            self.dropped.labels(kind).inc(n)

    def delay(self, seconds: float) -> None:
        self.delays.observe(seconds)
