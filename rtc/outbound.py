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
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack

from pipeline.ports import Playback, PlaybackKind, PlaybackListener, Played

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
FRAME_S = FRAME_SAMPLES / RATE
TIME_BASE = fractions.Fraction(1, RATE)
LEVEL_MEMORY_S = 1.0  # how far back level_dbfs() can look


@dataclass
class _Chunk:
    mark: Hashable
    samples: np.ndarray  # int16 at 48 kHz
    offset: int = 0


class OutboundAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._queue: deque[_Chunk] = deque()
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._totals: dict[Hashable, int] = {}
        self._played: dict[Hashable, int] = {}
        self._listeners: list[PlaybackListener] = []
        self._start: float | None = None
        self._pts = 0
        self._current: Hashable | None = None  # mark whose audio is leaving now
        self._last: Hashable | None = None  # mark that played last, kept until another starts
        self._paused = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._levels: deque[tuple[float, float]] = deque()  # (t, dBFS) of audible frames that left
        self.frames_sent = 0
        self.late_frames = 0  # frames that left more than a frame late (event-loop stalls)

    # -- writer side (the pipeline) ------------------------------------------

    def add_listener(self, listener: PlaybackListener) -> None:
        self._listeners.append(listener)

    def write(self, pcm: bytes, sample_rate: int, mark: Hashable = None) -> None:
        """Queue mono int16 PCM at `sample_rate`; returns at once."""
        if not pcm:
            return
        samples = self._to_48k(pcm, sample_rate)
        if len(samples) == 0:
            return
        self._queue.append(_Chunk(mark, samples))
        self._drained.clear()
        self._totals[mark] = self._totals.get(mark, 0) + len(samples)
        self._played.setdefault(mark, 0)

    def pause(self) -> None:
        """Send silence from the next frame on; the queue waits."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    async def wait_for_playout(self) -> None:
        while self._queue:
            await self._drained.wait()

    def level_dbfs(self, window_s: float) -> float:
        since = self._clock() - window_s
        return max((db for t, db in self._levels if t >= since), default=-math.inf)

    def clear(self) -> list[Played]:
        """Drop all queued audio now (and end a pause); returns what had left of each dropped mark."""
        dropped: list[Played] = []
        seen: set[Hashable] = set()
        if self._last is not None and (not self._queue or self._queue[0].mark != self._last):
            # The mark that played last ran dry before the clear (its writer was behind):
            # report it too, since only its played/total says how much was heard.
            seen.add(self._last)
            dropped.append(Played(self._last, self._played.get(self._last, 0), self._totals.get(self._last, 0)))
        for chunk in self._queue:
            if chunk.mark not in seen:
                seen.add(chunk.mark)
                dropped.append(Played(chunk.mark, self._played.get(chunk.mark, 0), self._totals.get(chunk.mark, 0)))
        self._queue.clear()
        self._drained.set()
        self._paused = False
        # Resampler state belongs to the audio just dropped; start the next reply clean.
        self._resamplers.clear()
        for p in dropped:
            self._forget(p.mark)
        if self._current is not None:
            self._emit(PlaybackKind.END, self._current, self._clock())
        if self._last is not None:
            self._forget(self._last)
        self._current = self._last = None
        return dropped

    @property
    def queued_seconds(self) -> float:
        return sum(len(c.samples) - c.offset for c in self._queue) / RATE

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def _to_48k(self, pcm: bytes, sample_rate: int) -> np.ndarray:
        if len(pcm) % 2:
            raise ValueError("PCM must be whole int16 samples")
        if sample_rate == RATE:
            return np.frombuffer(pcm, dtype=np.int16).copy()
        resampler = self._resamplers.get(sample_rate)
        if resampler is None:
            # One resampler per source rate, kept across writes: its filter state
            # carries over chunk boundaries, so sentences join without clicks.
            resampler = self._resamplers[sample_rate] = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    # -- reader side (aiortc's sender) ---------------------------------------

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            from aiortc.mediastreams import MediaStreamError

            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > FRAME_S:
                self.late_frames += 1
        samples = self._next_samples()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        self.frames_sent += 1
        return frame

    def _next_samples(self) -> np.ndarray:
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        t = self._clock()
        while filled < FRAME_SAMPLES and self._queue and not self._paused:
            chunk = self._queue[0]
            if chunk.mark != self._current:
                if self._current is not None:
                    self._emit(PlaybackKind.END, self._current, t + filled / RATE)
                if self._last is not None and self._last != chunk.mark:
                    self._forget(self._last)
                self._current = self._last = chunk.mark
                self._emit(PlaybackKind.START, chunk.mark, t + filled / RATE)
            take = min(FRAME_SAMPLES - filled, len(chunk.samples) - chunk.offset)
            out[filled : filled + take] = chunk.samples[chunk.offset : chunk.offset + take]
            chunk.offset += take
            filled += take
            self._played[chunk.mark] = self._played.get(chunk.mark, 0) + take
            if chunk.offset >= len(chunk.samples):
                self._queue.popleft()
        if filled:
            self._note_level(t, out)
        if not self._queue:
            self._drained.set()
            if self._current is not None:
                # Nothing follows (yet): the mark's audio ends with this frame. If more of
                # it arrives later it starts again; its counts are kept until another mark plays.
                self._emit(PlaybackKind.END, self._current, t + filled / RATE)
                self._current = None
        return out

    def _note_level(self, t: float, samples: np.ndarray) -> None:
        power = float(np.mean(samples.astype(np.float32) ** 2))
        self._levels.append((t, 10 * math.log10(power / 32768**2) if power > 0 else -math.inf))
        while self._levels and self._levels[0][0] < t - LEVEL_MEMORY_S:
            self._levels.popleft()

    def _forget(self, mark: Hashable) -> None:
        self._totals.pop(mark, None)
        self._played.pop(mark, None)

    def _emit(self, kind: PlaybackKind, mark: Hashable, t: float) -> None:
        event = Playback(kind, mark, t)
        for listener in self._listeners:
            listener(event)


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

    async def recv(self) -> av.Packet:  # type: ignore[override]
        frame = await self.source.recv()
        packet = av.Packet(self._encoder.encode(frame.to_ndarray().tobytes()))
        packet.pts = frame.pts
        packet.time_base = frame.time_base
        return packet

    def stop(self) -> None:
        super().stop()
        self.source.stop()
