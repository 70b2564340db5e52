"""The reply's outbound audio track: a queue of PCM, paced out as 20 ms 48 kHz frames.

Implements the pipeline's AudioOutput port (pipeline/ports.py). The pipeline
writes PCM at whatever rate its TTS speaks; it is resampled to 48 kHz once, on
the way in. `recv()` (called by aiortc's sender) paces frames against the
monotonic clock, plays silence when the queue is empty or paused and never
blocks on the writer. `pause()` holds the queue (the user may only be
coughing), `clear()` drops it (barge-in); pts keeps counting through both, so
the receiver's jitter buffer never sees a jump.

Every chunk carries a `mark` (the pipeline's id for a sentence). The track
reports when the first and last audible frame of each mark actually left, and
how much of each mark had left when a clear cut it: that is what the user heard.
Those books are kept by pipeline/playback.py's PlaybackLedger, which the tests'
in-memory output shares.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable, Hashable

import av
import numpy as np
from aiortc import MediaStreamTrack

from pipeline.playback import PlaybackLedger
from pipeline.ports import PlaybackListener, Played

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
FRAME_S = FRAME_SAMPLES / RATE


class OutboundAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, rate: int = RATE
    ) -> None:
        super().__init__()
        self._clock = clock
        self._sleep = sleep  # with `clock`, what the tests replace to pace in virtual time
        self.rate = rate  # 48 kHz for WebRTC; a Realtime WebSocket client's own rate
        self._frame = rate // 50
        self._ledger = PlaybackLedger(rate)  # what is queued and what of each mark has left
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._start: float | None = None
        self._pts = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self.frames_sent = 0
        self.late_frames = 0  # frames that left more than a frame late (event-loop stalls)

    # -- writer side (the pipeline) ------------------------------------------

    def add_listener(self, listener: PlaybackListener) -> None:  # type: ignore[override]  # the AudioOutput port's, shadowing pyee's
        self._ledger.add_listener(listener)

    def write(self, pcm: bytes, sample_rate: int, mark: Hashable = None) -> None:
        """Queue mono int16 PCM at `sample_rate`; returns at once."""
        if not pcm:
            return
        samples = self._to_48k(pcm, sample_rate)
        self._ledger.write(mark, samples)
        if self._ledger.busy:
            self._drained.clear()

    def pause(self) -> None:
        """Send silence from the next frame on; the queue waits."""
        self._ledger.paused = True

    def resume(self) -> None:
        self._ledger.paused = False

    @property
    def paused(self) -> bool:
        return self._ledger.paused

    async def wait_for_playout(self) -> None:
        while self._ledger.busy:
            await self._drained.wait()

    def level_dbfs(self, window_s: float) -> float:
        return self._ledger.level_dbfs(self._clock(), window_s)

    def clear(self) -> list[Played]:
        """Drop all queued audio now (and end a pause); returns what had left of each dropped mark."""
        dropped = self._ledger.clear(self._clock())
        self._drained.set()
        # Resampler state belongs to the audio just dropped; start the next reply clean.
        self._resamplers.clear()
        return dropped

    @property
    def queued_seconds(self) -> float:
        return self._ledger.queued_samples / self.rate

    @property
    def busy(self) -> bool:
        return self._ledger.busy

    def _to_48k(self, pcm: bytes, sample_rate: int) -> np.ndarray:
        if len(pcm) % 2:
            raise ValueError("PCM must be whole int16 samples")
        if sample_rate == self.rate:
            return np.frombuffer(pcm, dtype=np.int16).copy()
        resampler = self._resamplers.get(sample_rate)
        if resampler is None:
            # One resampler per source rate, kept across writes: its filter state
            # carries over chunk boundaries, so sentences join without clicks.
            resampler = self._resamplers[sample_rate] = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    # -- reader side (aiortc's sender) ---------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        samples = await self.next_frame()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame

    async def next_frame(self) -> np.ndarray:
        """The next 20 ms of samples, when it is due to leave (silence where nothing is queued or paused)."""
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += self._frame
            due = self._start + self._pts / self.rate
            if due > now:
                await self._sleep(due - now)
            elif now - due > FRAME_S:
                self.late_frames += 1
        samples = self._ledger.take(self._frame, self._clock())
        if not self._ledger.busy:
            self._drained.set()
        self.frames_sent += 1
        return samples

    @property
    def audible(self) -> bool:
        """The frame `next_frame` returned last held queued audio."""
        return self._ledger.last_audible


class OpusPacketTrack(MediaStreamTrack):
    """What aiortc's sender reads when the call's codec is Opus: the outbound track's frames, encoded
    here, on the event loop, and handed over as packets.

    aiortc would encode each frame in its default executor thread (resampled to stereo, 96 kbps) and
    hop back to the loop, contending for the GIL with every other session's threads: `python -m
    bench scale` saw the frames leave the track evenly but reach the socket with a p99 jitter of
    10 ms at one session. A 20 ms mono frame costs libopus about 75 us, so it is encoded right here;
    the sender then only packs it (aiortc's path for pre-encoded media).
    """

    kind = "audio"

    def __init__(self, source: OutboundAudioTrack, bitrate: int = 32000) -> None:
        super().__init__()
        from rtc.opus import OpusEncoder

        self.source = source
        self._encoder = OpusEncoder(bitrate=bitrate, rate=RATE)

    async def recv(self) -> av.Packet:
        frame = await self.source.recv()
        packet = av.Packet(self._encoder.encode(frame.to_ndarray().tobytes()))
        packet.pts = frame.pts
        assert frame.time_base is not None  # the source track sets it on every frame
        packet.time_base = frame.time_base
        return packet

    def stop(self) -> None:
        super().stop()
        self.source.stop()
