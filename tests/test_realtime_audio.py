"""A Realtime client's audio (rtc/realtime_audio.py): G.711 both ways, formats, and chunks as frames in media time."""

from __future__ import annotations

import numpy as np
import pytest

from rtc.pcm import FRAME_BYTES, FRAME_S
from rtc.realtime_audio import ALAW, LAG_S, MAX_GAP_S, ULAW, ChunkFramer, Decoder, Encoder, g711_decode, g711_encode


def test_g711_tables_match_the_standard_at_their_ends() -> None:
    # ITU-T G.711: u-law 0xFF is 0 and 0x00 the most negative; A-law 0xD5 is +8 and 0x2A the most negative.
    assert (ULAW[0xFF], ULAW[0x00], ULAW[0x80]) == (0, -32124, 32124)
    assert (ALAW[0xD5], ALAW[0x55], ALAW[0xAA], ALAW[0x2A]) == (8, -8, 32256, -32256)


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_round_trip_keeps_a_voice_band_signal(fmt) -> None:
    x = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 20000).astype(np.int16)
    y = g711_decode(g711_encode(x, fmt), fmt)
    assert len(y) == len(x) and np.corrcoef(x, y)[0, 1] > 0.999
    assert all(g711_encode(g711_decode(bytes([c]), fmt), fmt) == bytes([c]) for c in range(256) if c not in (0x7F, 0xFF, 0xD5))


def test_formats_convert_to_16k_in_and_from_24k_out() -> None:
    second_24k = (np.sin(np.arange(24000) / 5) * 8000).astype("<i2").tobytes()
    assert abs(len(Decoder("audio/pcm")(second_24k)) - 32000) <= 64  # 16 kHz int16, less the resampler's delay
    assert abs(len(Decoder("audio/pcmu")(bytes(8000))) - 32000) <= 64
    frame = np.zeros(480, dtype=np.int16)  # 20 ms at 24 kHz
    assert len(Encoder("audio/pcm", 24000)(frame)) == 960
    encode = Encoder("audio/pcmu", 24000)
    assert sum(len(encode(frame)) for _ in range(10)) >= 10 * 160 - 32
    with pytest.raises(ValueError):
        Decoder("audio/pcm")(b"\x00\x01\x02")


def chunk(seconds: float) -> bytes:
    return b"\x01\x00" * int(16000 * seconds)


def test_chunks_become_contiguous_frames_from_the_first_ones_arrival() -> None:
    framer = ChunkFramer()
    frames = framer.push(chunk(0.1), now=10.0)
    frames += framer.push(chunk(0.03), now=10.13)
    frames += framer.push(chunk(0.05), now=10.185)  # a little late: still follows on
    assert all(len(f.pcm) == FRAME_BYTES for f in frames) and len(frames) == 9
    assert frames[0].t == pytest.approx(9.9)
    assert np.allclose(np.diff([f.t for f in frames]), FRAME_S)


def test_a_client_that_falls_silent_gets_silence_in_its_place() -> None:
    framer = ChunkFramer()
    framer.push(chunk(0.1), now=10.0)
    assert framer.tick(10.0 + LAG_S - 0.01) == []  # within LAG_S: it may only be late
    filled = framer.tick(11.0)
    assert filled and all(f.pcm == bytes(FRAME_BYTES) for f in filled)
    assert filled[-1].t + FRAME_S <= 11.0 - LAG_S < filled[-1].t + 2 * FRAME_S
    after = framer.push(chunk(0.02), now=11.1)
    assert after[0].t == pytest.approx(filled[-1].t + FRAME_S)  # no hole, no jump


def test_text_only_clients_still_see_time_pass_and_a_long_gap_starts_afresh() -> None:
    framer = ChunkFramer()
    assert framer.tick(5.0) == [] and framer.t_next == pytest.approx(5.0 - LAG_S)
    assert len(framer.tick(6.0)) == 50
    framer.push(chunk(0.02), now=6.0 + MAX_GAP_S + 5)  # nobody ticked meanwhile (a stalled loop)
    assert framer.t_next == pytest.approx(6.0 + MAX_GAP_S + 5)
