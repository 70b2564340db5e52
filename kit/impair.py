"""A lossy, jittery, stalling uplink for a test client's peer, in user space.

This machine's kernel has no `sch_netem`, so the impairment is applied inside the
client's own aiortc stack: `impair(client.pc, Impairment(...))` wraps the send
function of the client's ICE transport(s), and every outgoing RTP packet then
goes through a seeded schedule that drops, delays, reorders or holds it.

Why this seam. In aiortc 1.16 / aioice 0.13 every datagram a peer sends after ICE
has connected leaves through one attribute: `RTCIceTransport._send`, which
`RTCIceTransport.__init__` binds to `aioice.Connection.send` and which
`RTCDtlsTransport` looks up at each call (`await self.transport._send(data)` in
`_send_rtp` for SRTP/SRTCP and in `_write_ssl` for DTLS records, which carry
the data channel's SCTP). STUN connectivity checks and keepalives do not use
it: aioice sends them straight through `StunProtocol.send_stun`. So replacing
that one instance attribute sees exactly the protected datagrams as they would
hit the wire, and nothing of ICE. The first byte tells them apart (RFC 7983):
128..191 is SRTP or SRTCP (`aiortc.rtp.is_rtcp` on the cleartext header splits
the two), 20..63 is DTLS. Only RTP is impaired: RTCP, DTLS and so the data
channel pass untouched and at once, so the events channel stays reliable and
the test's observations are about the audio alone. Wrapping
`RTCDtlsTransport._send_rtp` instead would see RTP before encryption, but it
also carries the client's RTCP, would have to protect packets itself when
releasing them late, and bypasses the DTLS byte counters; `aioice.Connection`
is shared with the gatherer and `StunProtocol.send_data` is per candidate pair,
both a level lower than needed.

Client side only: the server is untouched and sees exactly what a lossy uplink
would deliver (packets missing, late, out of order, or in a burst after a stall),
through its real SRTP, jitter buffer and decoder.

Delays use the event loop's timer (`call_later`), never a sleep: the client's
sender is not slowed down, as a network would not slow it. The schedule is a
seeded `random.Random`, so a given `Impairment` drops and delays the same
packets (by index) on every run; the times packets leave still follow the real
clock, so only the stall depends on when the test calls `impair`.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCPeerConnection
from aiortc.rtp import is_rtcp

# send(datagram) -> awaitable (aioice's Connection.send) or None (a test's fake)
SendFn = Callable[[bytes], Awaitable[None] | None]


@dataclass
class Impairment:
    """What the uplink does to the client's RTP. Times in ms unless named _s; probabilities 0..1."""

    loss: float = 0.0  # each packet is dropped on its own with this probability
    burst_loss: float = 0.0  # overall fraction lost in bursts (Gilbert-style): a loss event drops a run ...
    burst_len: tuple[int, int] = (2, 6)  # ... of this many consecutive packets (uniform, inclusive)
    delay_ms: float = 0.0  # every packet is delayed by delay_ms ± uniform jitter_ms (never below 0):
    jitter_ms: float = 0.0  # packets reorder when the jitter spread exceeds the 20 ms packet interval
    stall_at_s: float | None = None  # seconds after `impair()`: a one-off stall starts here ...
    stall_ms: float = 0.0  # ... every packet sent during it is held, then all released together, in order
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0.0 <= self.loss < 1.0 and 0.0 <= self.burst_loss < 1.0):
            raise ValueError("loss and burst_loss must be in [0, 1)")
        low, high = self.burst_len
        if not 1 <= low <= high:
            raise ValueError("burst_len must be (min, max) with 1 <= min <= max")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.stall_ms < 0:
            raise ValueError("delay_ms, jitter_ms and stall_ms must not be negative")


@dataclass
class ImpairStats:
    """Counts of the client's outgoing datagrams, as the impairment handled them."""

    sent: int = 0  # RTP packets the client sent into the impaired link
    dropped: int = 0  # of those, never sent on (random or burst loss)
    delayed: int = 0  # sent on later than they were sent (delay, jitter or stall)
    stalled: int = 0  # of the delayed, held by the stall
    reordered: int = 0  # sent on after a packet the client sent later than them (RFC 4737 "late")
    delivered: int = 0  # sent on to the socket so far
    passed: int = 0  # other datagrams (RTCP, DTLS with the data channel), sent on untouched
    dropped_indexes: list[int] = field(default_factory=list)  # which RTP packets (0-based, in send order) were dropped

    @property
    def pending(self) -> int:
        """Packets held right now (sent, not dropped, not yet delivered)."""
        return self.sent - self.dropped - self.delivered


class Timer(Protocol):
    """What the impairment needs of an event loop (a test can pass a fake clock)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any: ...


def is_rtp(data: bytes) -> bool:
    """SRTP (not SRTCP): RFC 7983's 128..191 first byte, and not an RTCP packet type."""
    return len(data) >= 12 and 128 <= data[0] <= 191 and not is_rtcp(data)


class Impairer:
    """The schedule and the held packets. One per peer connection; `wrap` makes its send functions."""

    def __init__(self, imp: Impairment, loop: Timer | None = None) -> None:
        self.stats = ImpairStats()
        self._loop: Timer = loop or asyncio.get_running_loop()
        self._queue: list[tuple[float, int, SendFn, bytes]] = []  # (release at, index, send, datagram)
        self._timer: Any = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Future[None]] = set()
        self._closed = False
        self._index = 0  # of the next RTP packet, in send order (kept across reconfigurations)
        self._max_released = -1  # highest index sent on so far
        self.configure(imp)

    def configure(self, imp: Impairment) -> None:
        """Put `imp` in effect from now: a fresh schedule from its seed; the stall is timed from now."""
        self.imp = imp
        self._rng = random.Random(imp.seed)
        self._burst_left = 0
        self._burst_ended = False
        low, high = imp.burst_len
        mean_len = (low + high) / 2
        # Two states, as Gilbert's: a burst starts at a good packet with probability q, and the
        # packet after a burst is always good (so bursts never merge and runs keep their lengths).
        # Good runs then average 1 / q packets and bursts L, so the lost fraction L / (L + 1 / q)
        # is burst_loss when q = p / (L (1 - p)).
        p = imp.burst_loss
        self._burst_start = p / (mean_len * (1 - p)) if p > 0 else 0.0
        now = self._loop.time()
        if imp.stall_at_s is not None and imp.stall_ms > 0:
            self._stall = (now + imp.stall_at_s, now + imp.stall_at_s + imp.stall_ms / 1000)
        else:
            self._stall = None

    # -- the schedule --------------------------------------------------------

    def _drops(self) -> bool:
        if self._burst_left > 0:
            self._burst_left -= 1
            self._burst_ended = self._burst_left == 0
            return True
        if self._burst_ended:
            self._burst_ended = False
        elif self._burst_start > 0 and self._rng.random() < self._burst_start:
            self._burst_left = self._rng.randint(*self.imp.burst_len) - 1
            self._burst_ended = self._burst_left == 0
            return True
        return self.imp.loss > 0 and self._rng.random() < self.imp.loss

    def decide(self, now: float) -> float | None:
        """For the next RTP packet, sent at `now`: the time to send it on, or None to drop it."""
        if self._drops():
            return None
        delay = self.imp.delay_ms
        if self.imp.jitter_ms > 0:
            delay += self._rng.uniform(-self.imp.jitter_ms, self.imp.jitter_ms)
        release = now + max(0.0, delay) / 1000
        if self._stall is not None and self._stall[0] <= now < self._stall[1]:
            release = self._stall[1] + self.imp.delay_ms / 1000  # all held ones leave together, in order
            self.stats.stalled += 1
        return release

    # -- sending ---------------------------------------------------------------

    def wrap(self, send: SendFn) -> Callable[[bytes], Awaitable[None]]:
        """An async send function with the impairment in front of `send`."""

        async def impaired_send(data: bytes) -> None:
            if self._closed or not is_rtp(data):
                self.stats.passed += 1
                await _maybe_await(send(data))
                return
            index = self._index
            self._index += 1
            self.stats.sent += 1
            now = self._loop.time()
            release = self.decide(now)
            if release is None:
                self.stats.dropped += 1
                self.stats.dropped_indexes.append(index)
                return
            if release <= now and not self._queue and not self._tasks:
                self._account(index)
                await _maybe_await(send(data))
                return
            # Something is still held or on its way (a stall's burst whose timer a busy loop fired
            # late): this packet queues behind it, as on a link, instead of overtaking it.
            if release > now:
                self.stats.delayed += 1
            heapq.heappush(self._queue, (release, index, send, data))
            if release <= now:
                self._send_due(now)
            self._arm()

        return impaired_send

    def _account(self, index: int) -> None:
        self.stats.delivered += 1
        if index < self._max_released:
            self.stats.reordered += 1
        self._max_released = max(self._max_released, index)

    def _arm(self) -> None:
        if not self._queue:
            return
        first = self._queue[0][0]
        if self._timer is not None:
            if self._timer_at <= first:
                return
            self._timer.cancel()
        self._timer_at = first
        self._timer = self._loop.call_later(max(0.0, first - self._loop.time()), self._release)

    def _release(self) -> None:
        self._timer = None
        self._send_due(max(self._loop.time(), self._timer_at))  # timers may fire a hair early
        self._arm()

    def _send_due(self, limit: float) -> None:
        """Send on everything due by `limit`, in (release time, send order) order."""
        pending: list[Awaitable[None]] = []
        while self._queue and self._queue[0][0] <= limit:
            _, index, send, data = heapq.heappop(self._queue)
            self._account(index)
            result = send(data)
            if result is not None:
                pending.append(result)
        if pending:
            # aioice's send never suspends before the datagram is handed to the socket, so
            # awaiting these in one task keeps the order they were released in.
            task = asyncio.ensure_future(_send_all(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Drop what is held and pass everything from now on (the connection is going away)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


async def _send_all(sends: list[Awaitable[None]]) -> None:
    for i, send in enumerate(sends):
        try:
            await send
        except Exception:  # the connection closed while packets were held: they are lost, as on a real link
            for rest in sends[i + 1 :]:
                if inspect.iscoroutine(rest):
                    rest.close()
            return


_INSTALLED: weakref.WeakKeyDictionary[RTCPeerConnection, Impairer] = weakref.WeakKeyDictionary()


def impair(pc: RTCPeerConnection, imp: Impairment) -> ImpairStats:
    """Impair the client's outgoing RTP on `pc` from now on; returns the live counts.

    Call it on the test's own client peer (`client.pc`) after `Client.connect()`
    (the answer has been applied, so bundling has settled on the transport that
    carries the audio); ICE and DTLS may still be connecting, which is fine:
    they are never impaired. Idempotent: a second call on the same `pc` wraps
    nothing again, puts the new `Impairment` in effect (fresh schedule, stall
    timed from that call) and returns the same stats object.
    """
    impairer = _INSTALLED.get(pc)
    if impairer is not None:
        impairer.configure(imp)
        return impairer.stats
    ice_transports = {}
    for transceiver in pc.getTransceivers():
        for dtls in (transceiver.sender.transport, transceiver.receiver.transport):
            if dtls is not None:
                ice_transports[id(dtls.transport)] = dtls.transport
    if not ice_transports:
        raise ValueError("the peer connection has no media transport yet: call impair() after connect()")
    impairer = Impairer(imp)
    for ice in ice_transports.values():
        if not getattr(ice, "_impaired", False):
            ice._send = impairer.wrap(ice._send)
            ice._impaired = True
    _INSTALLED[pc] = impairer

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("closed", "failed"):
            impairer.close()

    return impairer.stats
