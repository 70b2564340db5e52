"""The uplink impairment helper (kit/impair.py): its schedule on a fake clock, and on a real peer.

The schedule tests drive `Impairer` with synthetic 20 ms packets and a fake
clock, so they are exact and take no time. One test applies it to a real aiortc
client against the real app (the OpenAI-protocol stand-in as engines) and reads
what the server's receiver counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from kit.impair import Impairer, Impairment, ImpairStats, impair, is_rtp
from kit.rtc_client import to_48k
from kit.speech import concat, silence, speak
from kit.standin import StandinConfig

INTERVAL = 0.02  # one Opus packet per 20 ms


class FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """time() and call_later() on a clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, FakeHandle, Callable[..., object], tuple[Any, ...]]] = []
        self._n = 0

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeHandle:
        handle = FakeHandle()
        self._n += 1
        heapq.heappush(self._timers, (self.now + delay, self._n, handle, callback, args))
        return handle

    def advance_to(self, t: float) -> None:
        while self._timers and self._timers[0][0] <= t:
            when, _, handle, callback, args = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                callback(*args)
        self.now = max(self.now, t)


def rtp(seq: int, payload: bytes = b"\x00" * 40) -> bytes:
    """An SRTP-looking packet: version 2, Opus payload type 96; the header is cleartext in SRTP."""
    return bytes([0x80, 96]) + (seq % 65536).to_bytes(2, "big") + (seq * 960 % 2**32).to_bytes(4, "big") + b"\x12\x34\x56\x78" + payload


def seq_of(data: bytes) -> int:
    return int.from_bytes(data[2:4], "big")


class Link:
    """An Impairer on a fake clock in front of a send that records (time, datagram)."""

    def __init__(self, imp: Impairment) -> None:
        self.loop = FakeLoop()
        self.out: list[tuple[float, bytes]] = []
        self.impairer = Impairer(imp, self.loop)
        self.stats: ImpairStats = self.impairer.stats
        self.send = self.impairer.wrap(lambda data: self.out.append((self.loop.now, data)))

    async def run(self, n: int, offset: float = 0.0) -> None:
        """Send RTP packets 0..n-1, packet i at i * 20 ms + offset, then let everything out."""
        for i in range(n):
            self.loop.advance_to(i * INTERVAL + offset)
            await self.send(rtp(i))
        self.loop.advance_to(n * INTERVAL + 60.0)

    @property
    def seqs(self) -> list[int]:
        return [seq_of(d) for _, d in self.out if is_rtp(d)]


def late_count(seqs: list[int]) -> int:
    """Packets that arrive after one sent later than them (RFC 4737)."""
    late, highest = 0, -1
    for s in seqs:
        if s < highest:
            late += 1
        highest = max(highest, s)
    return late


def runs(indexes: list[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in a sorted list."""
    lengths: list[int] = []
    for i, x in enumerate(indexes):
        if i and x == indexes[i - 1] + 1:
            lengths[-1] += 1
        else:
            lengths.append(1)
    return lengths


# -- the schedule, on a fake clock ----------------------------------------------


async def test_random_loss_drops_about_the_asked_fraction_and_nothing_else():
    link = Link(Impairment(loss=0.05, seed=1))
    await link.run(5000)
    stats = link.stats
    assert stats.sent == 5000 and 0.04 <= stats.dropped / stats.sent <= 0.06
    assert stats.delivered == 5000 - stats.dropped and stats.pending == 0
    assert sorted(set(range(5000)) - set(link.seqs)) == stats.dropped_indexes
    # No delay asked: what is not dropped goes out at once, in order.
    assert link.seqs == sorted(link.seqs) and stats.delayed == stats.reordered == 0
    assert all(abs(t - seq_of(d) * INTERVAL) < 1e-9 for t, d in link.out)


async def test_burst_loss_drops_runs_of_the_asked_lengths_near_the_asked_fraction():
    link = Link(Impairment(burst_loss=0.05, burst_len=(2, 6), seed=2))
    await link.run(20000)
    lengths = runs(link.stats.dropped_indexes)
    assert len(lengths) > 100 and all(2 <= n <= 6 for n in lengths), sorted(set(lengths))
    assert {2, 6} <= set(lengths)  # both ends of the range occur
    assert 0.035 <= link.stats.dropped / link.stats.sent <= 0.065
    # Independent 5 % loss would leave most losses single; here none is.
    single = Link(Impairment(loss=0.05, seed=2))
    await single.run(20000)
    assert runs(single.stats.dropped_indexes).count(1) > 0.8 * len(runs(single.stats.dropped_indexes))


async def test_jitter_wider_than_the_packet_interval_reorders_packets():
    link = Link(Impairment(delay_ms=30, jitter_ms=25, seed=3))
    await link.run(500)
    assert sorted(link.seqs) == list(range(500))  # nothing lost
    late = late_count(link.seqs)
    assert late > 10 and link.stats.reordered == late
    assert link.stats.delayed == 500
    for t, d in link.out:
        assert 0.005 - 1e-9 <= t - seq_of(d) * INTERVAL <= 0.055 + 1e-9


async def test_no_reordering_without_jitter_or_with_jitter_inside_the_interval():
    steady = Link(Impairment(delay_ms=30, seed=4))
    await steady.run(500)
    assert steady.seqs == list(range(500)) and steady.stats.reordered == 0
    assert all(abs(t - seq_of(d) * INTERVAL - 0.030) < 1e-9 for t, d in steady.out)
    assert steady.stats.delayed == 500
    # ± 8 ms: two packets' delays differ by at most 16 ms < 20 ms apart, so they keep their order.
    narrow = Link(Impairment(delay_ms=30, jitter_ms=8, seed=4))
    await narrow.run(500)
    assert narrow.seqs == list(range(500)) and narrow.stats.reordered == 0


async def test_a_stall_holds_packets_then_releases_them_together_in_order():
    link = Link(Impairment(stall_at_s=1.0, stall_ms=300))
    await link.run(100, offset=0.01)  # packet i leaves at i * 20 ms + 10 ms
    assert link.seqs == list(range(100))
    held = [(t, seq_of(d)) for t, d in link.out if abs(t - 1.3) < 1e-9]
    assert [s for _, s in held] == list(range(50, 65))  # sent at 1.01 .. 1.29 s
    assert link.stats.stalled == link.stats.delayed == 15 and link.stats.reordered == 0
    for t, d in link.out:
        if not 50 <= seq_of(d) < 65:
            assert abs(t - seq_of(d) * INTERVAL - 0.01) < 1e-9  # the rest go out at once


async def test_a_packet_sent_after_a_stall_never_overtakes_the_held_burst_when_its_timer_is_late():
    # A busy loop fires the stall's timer late; the sender's next packet comes first. On a link it
    # queues behind the burst (CI once saw it overtake, and the server concealed the whole burst).
    link = Link(Impairment(stall_at_s=1.0, stall_ms=300))
    for i in range(65):  # packet i leaves at i * 20 ms + 10 ms; 50..64 are held until 1.3 s
        link.loop.advance_to(i * INTERVAL + 0.01)
        await link.send(rtp(i))
    link.loop.now = 1.31  # past the stall's end, its timer not yet fired
    await link.send(rtp(65))
    link.loop.advance_to(5.0)
    assert link.seqs == list(range(66)) and link.stats.reordered == 0
    assert link.stats.pending == 0


async def test_rtcp_dtls_and_stun_pass_untouched_and_at_once():
    link = Link(Impairment(loss=0.9, delay_ms=200, jitter_ms=50, stall_at_s=0.0, stall_ms=1000, seed=5))
    others = [
        bytes([0x80, 200]) + b"\x00\x06" + b"\x00" * 24,  # RTCP sender report
        bytes([0x81, 201]) + b"\x00\x07" + b"\x00" * 28,  # RTCP receiver report
        bytes([23, 0xFE, 0xFD]) + b"\x00" * 40,  # DTLS application data (the data channel's SCTP)
        bytes([22, 0xFE, 0xFD]) + b"\x00" * 40,  # DTLS handshake
        bytes([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]) + b"\x00" * 12,  # STUN binding request
        bytes([0x80, 96, 0, 1]),  # too short to be RTP
    ]
    for i, data in enumerate(others):
        link.loop.advance_to(i * 0.01)
        await link.send(data)
        assert link.out[-1] == (i * 0.01, data)
    assert link.stats.passed == len(others) and link.stats.sent == 0


async def test_the_schedule_is_the_same_for_the_same_seed():
    imp = dict(loss=0.05, burst_loss=0.03, delay_ms=40, jitter_ms=30)
    a, b, c = Link(Impairment(**imp, seed=7)), Link(Impairment(**imp, seed=7)), Link(Impairment(**imp, seed=8))
    for link in (a, b, c):
        await link.run(2000)
    assert a.out == b.out and a.stats == b.stats
    assert a.stats.dropped_indexes != c.stats.dropped_indexes


def test_impairment_settings_are_checked():
    for bad in (dict(loss=1.0), dict(burst_loss=-0.1), dict(burst_len=(3, 2)), dict(burst_len=(0, 2)), dict(jitter_ms=-1)):
        with pytest.raises(ValueError):
            Impairment(**bad)


async def test_impair_wraps_the_ice_transport_once_and_needs_a_media_transport():
    bare = RTCPeerConnection()
    with pytest.raises(ValueError, match="after connect"):
        impair(bare, Impairment())
    await bare.close()
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("audio")
        ice = transceiver.sender.transport.transport
        stats = impair(pc, Impairment(loss=0.1))
        wrapped = ice._send
        assert impair(pc, Impairment(loss=0.2)) is stats and ice._send is wrapped
    finally:
        await pc.close()


# -- what aiortc's receiver does with a gap (the pinned aiortc 1.16) ----------------


def test_aiortc_audio_jitter_buffer_stalls_on_a_gap_and_keeps_the_delay():
    """One lost packet: nothing comes out for the next 14 arrivals (320 ms without a frame),
    two received frames before the gap are thrown away with it, and from then on every frame
    leaves 12 packets (240 ms) later than before, for good. RTP_JITTER_FRAMES=2 as the product sets it."""
    buffer = JitterBuffer(capacity=16, prefetch=2)
    released: list[tuple[int, int | None]] = []  # (seq added, frame released)
    for seq in range(40):
        if seq == 10:
            continue  # lost
        packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 960)
        packet._data = b"\x01"  # type: ignore[attr-defined]
        _, frame = buffer.add(packet)
        released.append((seq, None if frame is None else frame.timestamp // 960))
    out = {seq: frame for seq, frame in released}
    assert all(out[seq] == seq - 2 for seq in range(2, 10))  # two frames behind before the gap
    assert all(out[seq] is None for seq in range(11, 25))  # stalled for 14 arrivals (and 10 never came)
    frames = [f for _, f in released if f is not None]
    assert 8 not in frames and 9 not in frames and 10 not in frames
    assert all(out[seq] == seq - 14 for seq in range(25, 40))  # 14 frames behind from now on


# -- on a real peer ---------------------------------------------------------------


async def test_a_lossy_jittery_uplink_reaches_the_server_with_gaps_and_the_turn_still_happens(assistant, clients):
    question = "What is the capital of France?"
    server, _ = await assistant(StandinConfig(stt_text=question))
    client = await clients(server.url)
    stats = impair(client.pc, Impairment(loss=0.05, delay_ms=30, jitter_ms=15, seed=11))
    await client.wait_event("state", state="listening")
    await client.mic.say(to_48k(concat(silence(0.2), speak(question), silence(0.1))))

    await client.wait_event("speech_started", timeout=15)
    _, transcript = await client.wait_event("transcript", timeout=20)
    assert transcript["text"] == question

    session = server.sessions[client.session]
    receiver = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "audio")
    inbound = [s for s in (await receiver.getStats()).values() if s.type == "inbound-rtp"]
    assert len(inbound) == 1
    received, lost = inbound[0].packetsReceived, inbound[0].packetsLost
    assert stats.sent > 100 and stats.dropped > 0 and stats.delayed > 0
    # The server got only what the link let through (some may still be in flight), and its own
    # sequence-number accounting sees the holes.
    assert 0 < received <= stats.delivered < stats.sent
    assert lost > 0
    assert session.pc.connectionState == "connected"
