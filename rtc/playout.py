"""The browser's Opus packets in, continuous 20 ms PCM frames out, each by its deadline.

Why not aiortc's jitter buffer: it releases a frame only when later packets push it
out, so a lost packet stalls it until it overflows and then good frames are thrown
away, and it has no concealment: a loss is a hole, and a late burst raises the delay
for the rest of the session. Here:

- Packets are ordered by (unwrapped) sequence number; a duplicate is ignored.
- A frame is released as soon as it and everything before it are here. The consumer
  is a VAD and a recogniser, not a loudspeaker, so an in-order frame never waits.
- A missing packet is waited for until its **deadline**: the time it would have
  arrived on the fastest path seen (`base`, the least transit time over the last
  5-10 s) plus the **target delay**, the 95th percentile of how late packets came
  over the last second (plus 5 ms for timer slack), kept within
  [INBOUND_DELAY_MIN_MS, INBOUND_DELAY_MAX_MS]. Once the deadline passes and a
  later packet is here, the missing one is concealed: rebuilt from the next
  packet's in-band FEC when it is the packet right before it (libopus conceals
  where there is no FEC data), otherwise Opus packet-loss concealment. A packet
  arriving after its slot was concealed is dropped as late.
- While nothing later has arrived (a stall: the link holds everything, then
  delivers it in one burst) nothing is concealed: the burst is released in order
  as it lands, so a stall costs delay, never words, and the delay is back to
  normal as soon as the burst is out.
- Media time is the sender's RTP clock on the monotonic clock, anchored at the
  first packet, so the segmenter never sees a hole or a jump; only a gap of over
  RESYNC_GAP_S (the sender stopped, or its clock jumped) starts the timeline afresh.
  A first packet that came late (the loop was busy as the call started) would put
  media time ahead of the wall clock the replies are played on for the whole
  session, so the anchor slews to the fastest path seen, SLEW of a frame at a
  time: media time never runs backwards and soon never runs ahead of arrival.

Everything here is synchronous and takes `now` from the caller, so the tests drive
it in virtual time.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from rtc.pcm import FRAME_BYTES, FRAME_SAMPLES, RATE, PcmFrame

RTP_RATE = 48000  # Opus's RTP clock, whatever the audio bandwidth (RFC 7587)
TS_PER_SAMPLE = RTP_RATE // RATE
PACKET_TS = RTP_RATE // 50  # 20 ms, what browsers send; used only to size a gap of unknown duration
GRAIN_SAMPLES = RATE // 400  # libopus makes up audio in whole 2.5 ms
MAX_FEC_SAMPLES = RATE * 120 // 1000  # the longest packet FEC can rebuild
RESYNC_GAP_S = 5.0  # a gap longer than this is a new timeline, not something to conceal
MARGIN_S = 0.005  # timer slack added to the measured lateness
JITTER_WINDOW = 50  # packets: the last second
BASE_EPOCH_S = 5.0  # the fastest transit is the least over the current and the previous epoch
SLEW = 0.1  # of each frame's duration, the most the anchor moves back toward the fastest path

PlayoutCount = Literal["concealed", "recovered", "late", "duplicate", "resync"]


class Decoder(Protocol):
    def decode(self, payload: bytes) -> bytes: ...
    def conceal(self, samples: int) -> bytes: ...
    def recover(self, next_payload: bytes, samples: int) -> bytes: ...
    def has_fec(self, payload: bytes) -> bool | None: ...


class PlayoutObserver(Protocol):
    """Where the counts go (the server's /metrics); frames in 20 ms units, packets one by one."""

    def count(self, kind: PlayoutCount, n: int = 1) -> None: ...
    def delay(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class RtpAudio:
    """One received Opus packet, as the receiver hands it over."""

    seq: int  # RTP sequence number (16 bits)
    timestamp: int  # RTP timestamp (32 bits, 48 kHz)
    payload: bytes
    arrival: float  # monotonic seconds


@dataclass(frozen=True)
class DelayBounds:
    min_s: float = 0.04
    max_s: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.min_s <= self.max_s:
            raise ValueError("need 0 <= min <= max")


@dataclass
class PlayoutStats:
    packets: int = 0  # accepted (in time, not duplicates)
    concealed: int = 0  # 20 ms frames made up by packet-loss concealment
    recovered: int = 0  # 20 ms frames rebuilt from the next packet's FEC (counted as concealed where it had none)
    late: int = 0  # packets that came after their slot had been concealed: dropped
    duplicate: int = 0  # packets already had: ignored
    resync: int = 0  # timelines started afresh after a long gap or a clock jump
    last_delay_s: float = 0.0  # how long after its fastest possible arrival the latest packet was released


def _unwrap(value: int, reference: int, bits: int) -> int:
    """`value` (mod 2**bits) as the integer nearest to `reference`."""
    span = 1 << bits
    return reference + ((value - reference + span // 2) % span) - span // 2


class PlayoutBuffer:
    def __init__(self, decoder: Decoder, bounds: DelayBounds | None = None, observer: PlayoutObserver | None = None) -> None:
        self.decoder = decoder
        self.bounds = bounds or DelayBounds()
        self.stats = PlayoutStats()
        self._observer = observer
        self._pending: dict[int, tuple[int, bytes]] = {}  # unwrapped seq -> (unwrapped timestamp, payload)
        self._started = False
        self._last_seq = 0  # unwrapped, of the latest packet seen (the unwrap reference)
        self._last_ts = 0
        self._next_seq = 0  # the next packet to release
        self._next_ts = 0  # the RTP time of the next sample to release
        self._concealed: collections.deque[int] = collections.deque(maxlen=256)  # recent seqs made up
        self._anchor = 0.0  # monotonic time of RTP time 0 (media time = anchor + ts / RTP_RATE)
        self._pcm = bytearray()  # decoded, not yet a whole frame
        self._pcm_ts = 0  # RTP time of _pcm[0]
        self._lateness: collections.deque[float] = collections.deque(maxlen=JITTER_WINDOW)
        self._base_now = self._base_prev = float("inf")
        self._epoch_start: float | None = None

    # -- timing ----------------------------------------------------------------

    @property
    def base(self) -> float:
        """The least transit (arrival - RTP time) seen lately: the fastest path."""
        return min(self._base_now, self._base_prev)

    @property
    def target_s(self) -> float:
        """How long after its fastest possible arrival a missing packet is waited for."""
        if not self._lateness:
            return self.bounds.min_s
        p95 = float(np.percentile(self._lateness, 95)) + MARGIN_S
        return min(self.bounds.max_s, max(self.bounds.min_s, p95))

    def _deadline(self, ts: int) -> float:
        return self.base + ts / RTP_RATE + self.target_s

    def _observe_transit(self, ts: int, arrival: float) -> None:
        transit = arrival - ts / RTP_RATE
        if self._epoch_start is None or arrival - self._epoch_start >= BASE_EPOCH_S:
            self._base_prev, self._base_now, self._epoch_start = self._base_now, transit, arrival
        self._base_now = min(self._base_now, transit)
        self._lateness.append(transit - self.base)

    def wake_at(self) -> float | None:
        """When `pop` will conceal without any new packet: the deadline of a missing packet with later ones here."""
        if not self._pending or self._next_seq in self._pending:
            return None
        return self._deadline(self._next_ts)

    # -- packets in ------------------------------------------------------------

    def push(self, packet: RtpAudio) -> None:
        if not self._started:
            seq, ts = packet.seq, packet.timestamp
            self._start(seq, ts, packet.arrival)
        else:
            seq = _unwrap(packet.seq, self._last_seq, 16)
            ts = _unwrap(packet.timestamp, self._last_ts, 32)
        if seq < self._next_seq or seq in self._pending:
            kind: PlayoutCount = "late" if seq in self._concealed else "duplicate"
            if seq < self._next_seq - 1000:  # far behind: the sender restarted its sequence
                self._restart(seq, ts, packet.arrival)
            else:
                self._count(kind)
                return
        elif abs(ts - self._next_ts) / RTP_RATE > RESYNC_GAP_S or seq - self._next_seq > RESYNC_GAP_S * 50:
            self._restart(seq, ts, packet.arrival)
        if seq > self._last_seq:
            self._last_seq, self._last_ts = seq, ts
        self._pending[seq] = (ts, packet.payload)
        self.stats.packets += 1
        self._observe_transit(ts, packet.arrival)

    def _start(self, seq: int, ts: int, arrival: float) -> None:
        self._started = True
        self._last_seq, self._last_ts = seq - 1, ts
        self._next_seq, self._next_ts = seq, ts
        self._pcm, self._pcm_ts = bytearray(), ts
        self._anchor = arrival - ts / RTP_RATE

    def _restart(self, seq: int, ts: int, arrival: float) -> None:
        """A new timeline at this packet; anything still pending of the old one is dropped."""
        self._pending.clear()
        self._lateness.clear()
        self._base_now = self._base_prev = float("inf")
        self._epoch_start = None
        self._start(seq, ts, arrival)
        self._count("resync")

    # -- frames out ------------------------------------------------------------

    def pop(self, now: float) -> list[PcmFrame]:
        """Every frame due by `now`, in order: the ones that are here, and the missing ones past their deadline."""
        frames: list[PcmFrame] = []
        while self._pending:
            item = self._pending.pop(self._next_seq, None)
            if item is not None:
                ts, payload = item
                self._play(ts, payload, now, frames)
            elif now >= self._deadline(self._next_ts):
                self._conceal_next(frames)
            else:
                break
        return frames

    def _play(self, ts: int, payload: bytes, now: float, frames: list[PcmFrame]) -> None:
        gap = ts - self._next_ts
        if 0 < gap:  # no packet was lost, but time was (the sender's DTX): fill it with what the decoder makes of it
            self._emit(self._made_up(gap // TS_PER_SAMPLE), frames)
        pcm = self.decoder.decode(payload) or self._made_up(PACKET_TS // TS_PER_SAMPLE)
        self._emit(pcm, frames)
        self._next_seq += 1
        self._next_ts = ts + len(pcm) // 2 * TS_PER_SAMPLE
        delay = max(0.0, now - (self.base + ts / RTP_RATE))
        self.stats.last_delay_s = delay
        if self._observer is not None:
            self._observer.delay(delay)

    def _conceal_next(self, frames: list[PcmFrame]) -> None:
        """Make up the missing packet `_next_seq`, with FEC from the packet after it if that one is here."""
        first = min(self._pending)  # the earliest packet we have, after the gap
        first_ts, first_payload = self._pending[first]
        missing = first - self._next_seq
        span = first_ts - self._next_ts
        slot = span // missing if span > 0 else 0
        slot -= slot % (GRAIN_SAMPLES * TS_PER_SAMPLE)  # whole 2.5 ms, as libopus needs
        if slot > 0:
            samples = slot // TS_PER_SAMPLE
            fec = missing == 1 and self.decoder.has_fec(first_payload) is True
            self._emit(self._made_up(samples, first_payload if missing == 1 else None), frames)
            self._count("recovered" if fec else "concealed", max(1, round(slot / PACKET_TS)))
        self._concealed.append(self._next_seq)
        self._next_seq += 1
        self._next_ts += slot

    def _made_up(self, samples: int, next_payload: bytes | None = None) -> bytes:
        """Exactly `samples` of audio for a stretch no packet gave: FEC from the next packet, else concealment.

        libopus takes at most 120 ms and whole 2.5 ms at a time, so longer stretches are made
        in 20 ms pieces and anything it did not fill is silence.
        """
        if next_payload is not None and samples <= MAX_FEC_SAMPLES:
            pcm = self.decoder.recover(next_payload, samples)
        else:
            pieces, left = [], samples
            while left >= GRAIN_SAMPLES:
                n = min(PACKET_TS // TS_PER_SAMPLE, left - left % GRAIN_SAMPLES)
                pieces.append(self.decoder.conceal(n).ljust(n * 2, b"\0")[: n * 2])
                left -= n
            pcm = b"".join(pieces)
        return pcm[: samples * 2].ljust(samples * 2, b"\0")

    def _emit(self, pcm: bytes, frames: list[PcmFrame]) -> None:
        self._pcm += pcm
        while len(self._pcm) >= FRAME_BYTES:
            self._anchor -= min(max(0.0, self._anchor - self.base), SLEW * FRAME_SAMPLES / RATE)
            frames.append(PcmFrame(bytes(self._pcm[:FRAME_BYTES]), self._anchor + self._pcm_ts / RTP_RATE))
            del self._pcm[:FRAME_BYTES]
            self._pcm_ts += FRAME_SAMPLES * TS_PER_SAMPLE

    def _count(self, kind: PlayoutCount, n: int = 1) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + n)
        if self._observer is not None:
            self._observer.count(kind, n)
