"""The media path through real aiortc peers on loopback, with the echo pipeline."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from kit.rtc_client import to_48k
from kit.speech import concat, silence, speak
from rtc.inbound import FRAME_BYTES, PcmFrame
from rtc.playout import SLEW
from tests.conftest import until

pytestmark = pytest.mark.loopback


async def test_echo_plays_back_what_was_said(start_server, clients):
    server = await start_server(pipeline="echo")
    received: list[PcmFrame] = []
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    session = server.sessions[client.session]
    # Tap the inbound stream the pipeline consumes.
    original = session.pipeline.on_audio
    session.pipeline.on_audio = lambda pcm, t: (received.append(PcmFrame(pcm, t)), original(pcm, t))[1]

    speech = speak("Testing one two three, can you hear me?")
    clip = concat(silence(0.3), speech, silence(0.2))
    # The pts of the frame the clip starts in: the client may send it late (a busy loop), but its
    # media time is when it was due on the client's clock, and that is what the server keeps.
    mic, said, frames, clip_pts = client.mic, None, [], []
    real_recv = mic.recv

    async def recv():
        frame = await real_recv()
        frames.append(frame.pts)
        if said is not None and said.done() and not clip_pts:
            clip_pts.append(frame.pts)
        return frame

    mic.recv = recv
    await until(lambda: frames)  # the frame in flight before the patch has gone
    said = mic.say(to_48k(clip))
    await until(lambda: clip_pts)
    due_at = mic._start + clip_pts[0] / 48000
    t_stop, _ = await client.wait_event("speech_stopped", timeout=15)
    await client.wait_event("state", state="listening", after=t_stop, timeout=15)

    # Inbound: exact 20 ms 16 kHz int16 frames, media time with no hole and no jump: each step is
    # a frame, less the playout buffer's slew toward the fastest path (a first packet came late).
    assert received and all(len(f.pcm) == FRAME_BYTES for f in received)
    gaps = np.diff([f.t for f in received])
    assert np.all((gaps >= 0.02 * (1 - SLEW) - 1e-6) & (gaps <= 0.02 + 1e-6)), gaps
    heard = np.frombuffer(b"".join(f.pcm for f in received), dtype=np.int16)
    # The speech is in there, intact, at the media time it was sent (plus loopback latency).
    corr, lag = _best_correlation(heard, speech)
    assert corr > 0.8, corr
    speech_media_t = received[0].t + lag / 16000
    # (the inbound media clock is the sender's RTP clock anchored at the first packet's arrival,
    # so it may read a fraction of a millisecond before the client's own send time)
    assert -0.005 <= speech_media_t - (due_at + 0.3) < 0.15

    # Echo: what came back correlates with what was sent.
    # (from when the speech's last frame was due to leave the client: the echo cannot come before
    # it, while the speech_stopped event may reach the client after the echo's first packets)
    echo = client.audio(start=due_at + 0.3 + len(speech) / 16000)[::3]  # 48 kHz -> 16 kHz is enough for a correlation
    assert _best_correlation(echo, speech)[0] > 0.6


def _best_correlation(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation of `needle` in `haystack`, and its lag in samples."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    if len(h) < len(n):
        h = np.concatenate([h, np.zeros(len(n) - len(h))])
    size = 1 << int(np.ceil(np.log2(len(h) + len(n))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)[: len(h) - len(n) + 1]
    energy = np.convolve(h**2, np.ones(len(n)), mode="valid")
    # Windows of near silence would divide FFT rounding noise by ~0: leave them out.
    energy = np.maximum(energy, 0.01 * np.sum(n**2))
    normalised = corr / np.sqrt(energy * np.sum(n**2))
    lag = int(np.argmax(normalised))
    return float(normalised[lag]), lag


async def test_lifecycle_leaves_nothing_behind(start_server, clients):
    server = await start_server(pipeline="echo")
    baseline = {t for t in asyncio.all_tasks()}
    for _ in range(20):
        client = await clients(server.url)
        await client.wait_event("state", state="listening")
        session = server.sessions[client.session]
        await client.close()
        deadline = time.monotonic() + 10
        while client.session in server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.session not in server.sessions
        assert session.outbound.readyState == "ended"
    assert server.sessions == {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leftover = [t for t in asyncio.all_tasks() - baseline if not t.done() and ":" in t.get_name()]
        if not leftover:
            break
        await asyncio.sleep(0.05)
    assert leftover == []


async def _inbound_delay(start_server, clients, jitter_frames: int | None = None) -> float:
    """Seconds from the client sending speech to the pipeline receiving it (on aiortc's path if jitter_frames is given)."""
    if jitter_frames is None:
        server = await start_server(pipeline="echo")
    else:
        server = await start_server(pipeline="echo", inbound_buffer="aiortc", rtp_jitter_frames=jitter_frames)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    session = server.sessions[client.session]
    arrivals: list[tuple[float, bytes]] = []
    original = session.pipeline.on_audio
    session.pipeline.on_audio = lambda pcm, t: (arrivals.append((time.monotonic(), pcm)), original(pcm, t))[1]
    delays = []

    def loud(since: float) -> list[float]:
        return [t for t, pcm in arrivals if t > since and np.abs(np.frombuffer(pcm, dtype=np.int16)).max() > 6000]

    for _ in range(5):  # the median: two bursts may meet a busy moment
        burst = (12000 * np.sin(2 * np.pi * 1000 * np.arange(4800) / 48000)).astype(np.int16)  # 100 ms, 1 kHz
        sent = await client.mic.say(burst)
        await until(lambda sent=sent: len(loud(sent)) > 0)
        delays.append(loud(sent)[0] - sent)
        await asyncio.sleep(0.3)  # the burst's tail is through before the next one is said
    return float(np.median(delays))


async def test_rtp_jitter_frames_sets_how_long_inbound_audio_waits(start_server, clients):
    deep = await _inbound_delay(start_server, clients, 4)  # aiortc's own default
    shallow = await _inbound_delay(start_server, clients, 1)
    print(f"\ninbound delay: depth 4 {deep * 1000:.0f} ms, depth 1 {shallow * 1000:.0f} ms")
    # each frame of depth is 20 ms of waiting before the pipeline hears anything
    assert 0.035 < deep - shallow < 0.09, (deep, shallow)


async def test_deadline_path_adds_no_delay_on_a_clean_link(start_server, clients):
    old = await _inbound_delay(start_server, clients, 2)  # the old default: aiortc's buffer, depth 2
    new = await _inbound_delay(start_server, clients)
    print(f"\ninbound delay: aiortc depth 2 {old * 1000:.0f} ms, deadline {new * 1000:.0f} ms")
    # in-order packets never wait on the deadline path; aiortc's waits for two more
    assert new < old, (new, old)
