"""The outbound track: 20 ms frames, steady pts, silence when idle, pause/resume, clear, what was heard."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from pipeline.ports import Playback
from rtc.outbound import FRAME_SAMPLES, RATE, OutboundAudioTrack

pytestmark = pytest.mark.fast


def tone(seconds: float, rate: int, amplitude: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()


def level(frame) -> float:
    return float(np.sqrt(np.mean(frame.to_ndarray().astype(np.float64) ** 2)))


async def test_frames_are_20ms_with_steady_pts_and_silence_when_idle():
    track = OutboundAudioTrack()
    frames = [await track.recv() for _ in range(5)]
    assert all(f.samples == FRAME_SAMPLES and f.sample_rate == RATE and f.format.name == "s16" for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(5)]
    assert all(level(f) == 0 for f in frames)


async def test_resamples_any_rate_to_48k_once():
    track = OutboundAudioTrack()
    for rate in (16000, 22050, 24000, 48000):
        track.write(tone(1.0, rate), rate, mark=rate)
    # about one second of 48 kHz audio per write, whatever the source rate
    assert abs(track.queued_seconds - 4.0) < 0.02


async def test_clear_drops_queue_at_once_keeps_pts_and_reports_heard():
    track = OutboundAudioTrack()
    events: list[tuple[str, object, float]] = []
    track.add_listener(lambda e: events.append((e.kind, e.mark, e.t)))
    track.write(tone(1.0, 24000), 24000, mark="a")
    track.write(tone(1.0, 24000), 24000, mark="b")
    frames = [await track.recv() for _ in range(60)]  # 1.2 s: all of "a", 0.2 s of "b"
    assert all(level(f) > 1000 for f in frames[:50])
    assert [e[:2] for e in events] == [("start", "a"), ("end", "a"), ("start", "b")]
    dropped = track.clear()
    assert len(dropped) == 1 and dropped[0].mark == "b"
    assert abs(dropped[0].played / RATE - 0.2) < 0.011 and abs(dropped[0].total / RATE - 1.0) < 0.011
    after = [await track.recv() for _ in range(3)]
    assert all(level(f) == 0 for f in after), "audio after clear"
    pts = [f.pts for f in frames + after]
    assert np.all(np.diff(pts) == FRAME_SAMPLES), "pts must not jump or reset across clear"
    assert events[-1][:2] == ("end", "b")
    # the track keeps working after a clear
    track.write(tone(0.1, 16000), 16000, mark="c")
    assert level(await track.recv()) > 1000


class VirtualClock:
    """The track's clock and sleep in virtual time: a sleep moves the clock on by exactly its length."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


async def test_pacing_keeps_to_the_clock_and_catches_up_after_a_stall():
    clock = VirtualClock()
    track = OutboundAudioTrack(clock=clock.now, sleep=clock.sleep)
    track.write(tone(5.0, 24000), 24000, mark="x")
    sent: list[tuple[float, int]] = []
    for i in range(500):  # 10 s
        if i == 200:
            clock.t += 0.11  # the event loop stalled 110 ms before asking for frame 200
        frame = await track.recv()
        sent.append((clock.t, frame.pts))
    t0 = sent[0][0]
    lateness = [t - (t0 + p / RATE) for t, p in sent]
    assert [p for _, p in sent] == [i * FRAME_SAMPLES for i in range(500)]
    assert min(lateness) > -1e-9, "never early"
    # The frames due during the stall leave at once; from the first one due after it, on time
    # again: the clock is absolute, so a stall is caught up, not carried forward.
    assert [i for i, late in enumerate(lateness) if late > 1e-9] == [200, 201, 202, 203, 204]
    assert lateness[200] == pytest.approx(0.09) and lateness[204] == pytest.approx(0.01)
    assert track.late_frames == 4, "frames more than a frame late"
    assert sent[-1][0] == pytest.approx(t0 + 499 * 0.02)


async def test_pause_holds_the_queue_and_resume_continues_from_the_same_sample():
    track = OutboundAudioTrack()
    events: list[Playback] = []
    track.add_listener(events.append)
    track.write(tone(0.2, 48000), 48000, mark="a")
    first = [await track.recv() for _ in range(5)]  # 0.1 s of "a"
    track.pause()
    paused = [await track.recv() for _ in range(5)]
    assert all(level(f) > 1000 for f in first) and all(level(f) == 0 for f in paused), "silence while paused"
    assert track.busy and [e.kind for e in events] == ["start"], "a pause neither ends the mark nor drops it"
    waiter = asyncio.ensure_future(track.wait_for_playout())
    await asyncio.sleep(0)
    assert not waiter.done(), "a paused queue is not played out"
    track.resume()
    rest = [await track.recv() for _ in range(5)]
    assert all(level(f) > 1000 for f in rest)
    # exactly the samples after the pause point: the tone's phase carries on
    expected = tone(0.2, 48000)[5 * FRAME_SAMPLES * 2 : 6 * FRAME_SAMPLES * 2]
    assert rest[0].to_ndarray().tobytes() == expected
    await asyncio.wait_for(waiter, 1)
    assert [e.kind for e in events] == ["start", "end"] and not track.busy


async def test_clear_ends_a_pause_and_level_reports_what_left():
    track = OutboundAudioTrack()
    assert track.level_dbfs(1.0) == -math.inf
    track.write(tone(0.1, 48000, amplitude=3277), 48000, mark="a")  # sine at -20 dBFS peak: -23 dBFS RMS
    await track.recv()
    assert abs(track.level_dbfs(1.0) - (-23.0)) < 0.3
    track.pause()
    played = track.clear()
    assert [p.mark for p in played] == ["a"] and played[0].share == 0.2 and not track.paused
    await asyncio.wait_for(track.wait_for_playout(), 1)


async def test_the_sent_track_encodes_each_frame_to_opus_in_order():
    """OpusPacketTrack: what aiortc's sender reads; one Opus packet per 20 ms frame, same pts, the audio intact."""
    from rtc.opus import OpusDecoder
    from rtc.outbound import OpusPacketTrack

    source = OutboundAudioTrack()
    sent = OpusPacketTrack(source)
    audio = tone(0.4, RATE)
    source.write(audio, RATE, mark="tone")
    packets = [await sent.recv() for _ in range(20)]
    assert [p.pts for p in packets] == [i * FRAME_SAMPLES for i in range(20)]
    assert all(20 < p.size < 400 for p in packets), [p.size for p in packets]
    decoder = OpusDecoder(RATE)
    heard = np.concatenate([np.frombuffer(decoder.decode(bytes(p)), dtype=np.int16) for p in packets])
    x = np.frombuffer(audio, dtype=np.int16)[4800:14400].astype(np.float64)
    best = max(np.corrcoef(x, heard[4800 + lag : 14400 + lag])[0, 1] for lag in range(0, 960))
    assert best > 0.95, best  # libopus's look-ahead delays it a little; the tone is the same
    sent.stop()
    assert source.readyState == "ended"


def test_answer_codec_reads_the_audio_m_line():
    from rtc.session import answer_codec

    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    assert answer_codec(sdp) == "opus"
    assert answer_codec(sdp.replace("SAVPF 111 0", "SAVPF 0 111")) == "pcmu"
    assert answer_codec("v=0\r\n") == ""
