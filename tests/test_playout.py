"""The deadline playout buffer (rtc/playout.py) in virtual time, and its libopus decoder (rtc/opus.py).

The buffer tests use a decoder that marks what it made (a packet's number, concealment or
FEC) so every released sample can be traced; `now` is passed in, so no test sleeps.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from rtc.opus import OpusDecoder, version
from rtc.pcm import FRAME_BYTES
from rtc.playout import DelayBounds, PlayoutBuffer, RtpAudio

pytestmark = pytest.mark.fast

CONCEALED, RECOVERED = -1, -2
FRAME = 0.02


class MarkingDecoder:
    """decode -> the packet's number in every sample; conceal -> -1; recover (FEC) -> -2."""

    def __init__(self, fec: bool | None = True) -> None:
        self.fec = fec

    def decode(self, payload: bytes) -> bytes:
        return np.full(320, int.from_bytes(payload, "big"), np.int16).tobytes()

    def conceal(self, samples: int) -> bytes:
        return np.full(samples, CONCEALED, np.int16).tobytes()

    def recover(self, next_payload: bytes, samples: int) -> bytes:
        return np.full(samples, RECOVERED if self.fec else CONCEALED, np.int16).tobytes()

    def has_fec(self, payload: bytes) -> bool | None:
        return self.fec


def packet(n: int, arrival: float, seq0: int = 1000, ts0: int = 50_000) -> RtpAudio:
    """Packet n of a 20 ms stream (its payload is n, so the marking decoder shows it)."""
    return RtpAudio((seq0 + n) % 65536, (ts0 + n * 960) % 2**32, n.to_bytes(2, "big"), arrival)


def marks(frames) -> list[int]:
    """The mark of each released frame (its packet number, or CONCEALED/RECOVERED)."""
    out = []
    for f in frames:
        values = np.frombuffer(f.pcm, np.int16)
        assert len(f.pcm) == FRAME_BYTES and (values == values[0]).all()
        out.append(int(values[0]))
    return out


def send(buffer: PlayoutBuffer, n: int, at: float, **kw) -> list[int]:
    buffer.push(packet(n, at, **kw))
    return marks(buffer.pop(at))


def steady(buffer: PlayoutBuffer, count: int, t0: float = 10.0) -> list[int]:
    out: list[int] = []
    for n in range(count):
        out += send(buffer, n, t0 + 0.02 + n * FRAME)
    return out


def test_in_order_packets_never_wait_and_media_time_is_continuous() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    released = []
    for n in range(20):
        buffer.push(packet(n, 10.02 + n * FRAME))
        frames = buffer.pop(10.02 + n * FRAME)
        assert marks(frames) == [n], "each frame leaves the moment its packet lands"
        released += frames
    assert np.allclose(np.diff([f.t for f in released]), FRAME)
    assert buffer.stats.last_delay_s == pytest.approx(0, abs=1e-9)
    assert buffer.wake_at() is None


def test_a_late_first_packet_does_not_put_media_time_ahead_of_arrival_for_good() -> None:
    """The loop was busy as the call started: packet 0 landed 90 ms late, the rest on time."""
    buffer = PlayoutBuffer(MarkingDecoder())
    frames = []
    for n in range(100):
        arrival = 10.02 + n * FRAME + (0.09 if n == 0 else 0.0)
        buffer.push(packet(n, max(arrival, 10.11)))  # 1..4 queued behind 0, then on time
        frames += buffer.pop(max(arrival, 10.11))
    steps = np.diff([f.t for f in frames])
    assert (steps > 0).all() and np.allclose(steps[steps < FRAME - 1e-9], FRAME * 0.9), "a slew, never a jump back"
    assert frames[0].t == pytest.approx(10.11), "anchored at the first packet"
    assert frames[-1].t == pytest.approx(10.02 + 99 * FRAME), "then on the fastest path: not ahead of the wall clock"


def test_a_reordered_packet_is_waited_for_not_concealed() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    assert steady(buffer, 10) == list(range(10))
    t = 10.02 + 10 * FRAME  # when 10 would have come
    assert buffer.target_s == pytest.approx(0.04), "a clean link: the lower bound"
    assert send(buffer, 11, t + FRAME) == [], "10 is missing: 11 waits"
    assert buffer.wake_at() == pytest.approx(t + 0.04)
    assert send(buffer, 10, t + 0.03) == [10, 11], "10 came before its deadline"
    assert buffer.stats.concealed == buffer.stats.recovered == 0


def test_a_lost_packet_is_rebuilt_from_the_next_ones_fec_at_its_deadline() -> None:
    buffer = PlayoutBuffer(MarkingDecoder(fec=True))
    steady(buffer, 10)
    t = 10.02 + 10 * FRAME
    assert send(buffer, 11, t + FRAME) == []
    deadline = buffer.wake_at()
    assert deadline == pytest.approx(t + buffer.target_s)
    assert marks(buffer.pop(deadline - 0.001)) == [], "not before its deadline"
    assert marks(buffer.pop(deadline)) == [RECOVERED, 11]
    assert buffer.stats.recovered == 1 and buffer.stats.concealed == 0
    # ... and when it came after all, it is dropped as late
    assert send(buffer, 10, deadline + 0.01) == []
    assert buffer.stats.late == 1


def test_without_fec_data_the_loss_is_counted_as_concealed() -> None:
    buffer = PlayoutBuffer(MarkingDecoder(fec=False))
    steady(buffer, 10)
    assert send(buffer, 11, 10.02 + 11 * FRAME) == []
    assert marks(buffer.pop(100.0)) == [CONCEALED, 11]
    assert buffer.stats.concealed == 1 and buffer.stats.recovered == 0


def test_a_burst_is_concealed_frame_by_frame_and_fec_rebuilds_its_last() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    steady(buffer, 10)
    out = send(buffer, 14, 10.02 + 14 * FRAME)  # 10..13 lost; the deadlines of 10..12 have passed
    assert out == [CONCEALED, CONCEALED, CONCEALED]
    out += marks(buffer.pop(100.0))
    assert out == [CONCEALED, CONCEALED, CONCEALED, RECOVERED, 14]
    assert (buffer.stats.concealed, buffer.stats.recovered) == (3, 1)


def test_duplicates_are_ignored() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    steady(buffer, 5)
    assert send(buffer, 3, 10.2) == [] and send(buffer, 4, 10.2) == []
    assert send(buffer, 6, 10.14) == []
    assert send(buffer, 6, 10.145) == []
    assert send(buffer, 5, 10.15) == [5, 6]
    assert buffer.stats.duplicate == 3 and buffer.stats.late == 0


def test_a_stall_costs_delay_not_words_and_the_delay_comes_back() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    out = steady(buffer, 50)
    target_before = buffer.target_s
    # packets 50..64 are held by the link for 300 ms, then land together
    release = 10.02 + 64 * FRAME  # when 64 would have come: 50 is 280 ms late
    assert buffer.wake_at() is None, "nothing later is here: nothing to conceal"
    for n in range(50, 65):
        out += send(buffer, n, release)
    assert out == list(range(65)), "every packet played, in order"
    assert buffer.stats.concealed == buffer.stats.recovered == buffer.stats.late == 0
    assert buffer.stats.last_delay_s == pytest.approx(0.0, abs=1e-9), "the burst's last packet was on time"
    # from then on, the packets are on time again: within 2 s the target is back where it was
    t = release
    for n in range(65, 165):
        t = 10.02 + n * FRAME
        assert send(buffer, n, t) == [n]
        assert buffer.stats.last_delay_s < 0.001
        if t - release >= 2.0:
            break
    assert buffer.target_s == pytest.approx(target_before)


def test_the_target_follows_jitter_within_its_bounds() -> None:
    rng = np.random.default_rng(1)
    buffer = PlayoutBuffer(MarkingDecoder(), DelayBounds(0.02, 0.1))
    for n in range(100):
        buffer.push(packet(n, 10.0 + n * FRAME))
        buffer.pop(1e9)
    assert buffer.target_s == pytest.approx(0.02), "a clean link: the lower bound"
    for n in range(100, 200):
        buffer.push(packet(n, 10.0 + n * FRAME + rng.uniform(0, 0.06)))
        buffer.pop(1e9)
    assert 0.05 < buffer.target_s < 0.07, "about the 95th percentile of 0..60 ms lateness"
    for n in range(200, 300):
        buffer.push(packet(n, 10.0 + n * FRAME + rng.uniform(0, 0.5)))
        buffer.pop(1e9)
    assert buffer.target_s == pytest.approx(0.1), "no more than the upper bound"


def test_sequence_numbers_and_timestamps_wrap() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    out = []
    for n in range(20):
        out += send(buffer, n, 10.0 + n * FRAME, seq0=65530, ts0=2**32 - 960 * 3)
    assert out == list(range(20))


def test_a_timestamp_gap_without_loss_is_filled_and_a_long_one_starts_a_new_timeline() -> None:
    buffer = PlayoutBuffer(MarkingDecoder())
    frames = []
    for n in range(5):
        buffer.push(packet(n, 10.0 + n * FRAME))
        frames += buffer.pop(10.0 + n * FRAME)
    # the sender paused 100 ms (DTX) without skipping a sequence number
    buffer.push(RtpAudio(1005, 50_000 + 10 * 960, (5).to_bytes(2, "big"), 10.2))
    frames += buffer.pop(10.2)
    assert marks(frames) == [0, 1, 2, 3, 4, CONCEALED, CONCEALED, CONCEALED, CONCEALED, CONCEALED, 5]
    assert np.allclose(np.diff([f.t for f in frames]), FRAME), "media time has no hole"
    assert buffer.stats.concealed == 0, "not a loss"
    # ten seconds later: a new timeline, not ten seconds of concealment
    buffer.push(RtpAudio(1006, 50_000 + 510 * 960, (6).to_bytes(2, "big"), 20.3))
    frames = buffer.pop(20.3)
    assert marks(frames) == [6] and buffer.stats.resync == 1
    assert frames[0].t == pytest.approx(20.3)


# ---------------------------------------------------------------- libopus


def opus_packets(fec: bool, seconds: float = 1.0) -> tuple[np.ndarray, list[bytes]]:
    """A 16 kHz reference (a gliding tone) and its 20 ms Opus packets, encoded as a browser would (48 kHz)."""
    t = np.arange(int(48000 * seconds)) / 48000
    signal = (8000 * np.sin(2 * np.pi * (300 + 200 * t) * t)).astype(np.int16)
    encoder = av.CodecContext.create("libopus", "w")
    encoder.bit_rate, encoder.format, encoder.layout, encoder.sample_rate = 32000, "s16", "mono", 48000
    encoder.time_base = fractions.Fraction(1, 48000)
    encoder.options = {"application": "voip"} | ({"fec": "1", "packet_loss": "20"} if fec else {})
    packets: list[bytes] = []
    for i in range(len(signal) // 960):
        frame = av.AudioFrame.from_ndarray(signal[i * 960 : (i + 1) * 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        packets += [bytes(p) for p in encoder.encode(frame)]
    return signal[::3], packets


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    ref, out = reference.astype(np.float64), decoded.astype(np.float64)
    # the decoder's delay: align by cross-correlation within 10 ms
    lags = range(0, 160)
    lag = max(lags, key=lambda k: float(np.dot(ref[: len(ref) - k], out[k : k + len(ref) - k])))
    ref, out = ref[: len(ref) - lag], out[lag : lag + len(ref) - lag]
    return float(10 * np.log10(np.sum(ref**2) / max(1e-9, np.sum((ref - out) ** 2))))


def test_libopus_is_found_and_decodes_straight_to_16_khz_mono() -> None:
    assert version().startswith("libopus 1.")
    _, packets = opus_packets(fec=False)
    decoder = OpusDecoder(16000)
    assert decoder.samples_in(packets[0]) == 320
    assert len(decoder.decode(packets[0])) == FRAME_BYTES
    assert decoder.decode(b"\xff\xff\xff") == b"", "a corrupt packet is refused, not a crash"
    assert len(decoder.conceal(320)) == FRAME_BYTES


def test_fec_rebuilds_a_lost_packet_better_than_concealment() -> None:
    reference, packets = opus_packets(fec=True)
    decoder = OpusDecoder(16000)
    if decoder.has_fec(packets[10]) is not None:
        assert decoder.has_fec(packets[10]), "the encoder was asked for FEC"
        assert not OpusDecoder(16000).has_fec(opus_packets(fec=False)[1][10])
    lost = set(range(10, 50, 5))

    def decode(use_fec: bool) -> np.ndarray:
        d = OpusDecoder(16000)
        out = []
        for i, p in enumerate(packets):
            if i in lost:
                continue
            if i - 1 in lost:
                out.append(d.recover(p, 320) if use_fec else d.conceal(320))
            out.append(d.decode(p))
        return np.frombuffer(b"".join(out), np.int16)

    with_fec, with_plc = snr_db(reference, decode(True)), snr_db(reference, decode(False))
    assert with_fec > with_plc + 3, (with_fec, with_plc)
