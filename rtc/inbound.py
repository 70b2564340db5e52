"""The browser's audio, as 20 ms frames of 16 kHz mono int16 with media timestamps.

aiortc decodes Opus to 48 kHz (stereo, packed s16); one `av.AudioResampler`
per stream, kept across frames, converts it. Resampler output sizes vary, so
the samples are re-chunked into exact 320-sample frames.

Media time: the first frame is anchored to the monotonic clock; later frames
are placed by their RTP-derived pts, so a late-delivered frame keeps its true
time and gaps stay gaps. The anchor moves only if the sender's clock jumps.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

RATE = 16000
FRAME_SAMPLES = 320
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_S = FRAME_SAMPLES / RATE
RESYNC_S = 0.5  # pts and arrival disagreeing by more than this means the sender's clock jumped


@dataclass(frozen=True)
class PcmFrame:
    pcm: bytes  # 320 samples, 16 kHz mono int16
    t: float  # media time of the first sample (monotonic clock domain)


class InboundAudio:
    def __init__(self, track: MediaStreamTrack, clock: Callable[[], float] = time.monotonic) -> None:
        self._track = track
        self._clock = clock
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._buffer = b""
        self._buffer_t = 0.0  # media time of _buffer[0]
        self._anchor: float | None = None  # monotonic time of pts 0
        self.frames_in = 0
        self.last_frame_at: float | None = None  # monotonic arrival of the latest packet, for the no-RTP watchdog

    def _media_time(self, frame: av.AudioFrame) -> float:
        now = self._clock()
        if frame.pts is None or frame.time_base is None:
            return now
        pts_s = float(frame.pts * frame.time_base)
        if self._anchor is None or abs(self._anchor + pts_s - now) > RESYNC_S:
            self._anchor = now - pts_s
        return self._anchor + pts_s

    async def frames(self) -> AsyncIterator[PcmFrame]:
        """Yields frames until the track ends. Consume it promptly: it is what drains aiortc's queue."""
        while True:
            try:
                frame = await self._track.recv()
            except MediaStreamError:
                return
            self.frames_in += 1
            self.last_frame_at = self._clock()
            t = self._media_time(frame)
            expected = self._buffer_t + len(self._buffer) / 2 / RATE
            if not self._buffer or abs(t - expected) > 0.1:
                # First frame or a gap in the stream: restart the chunking clock here.
                self._buffer = b""
                self._buffer_t = t
            for out in self._resampler.resample(frame):
                self._buffer += bytes(out.planes[0])[: out.samples * 2]
            while len(self._buffer) >= FRAME_BYTES:
                pcm, self._buffer = self._buffer[:FRAME_BYTES], self._buffer[FRAME_BYTES:]
                yield PcmFrame(pcm, self._buffer_t)
                self._buffer_t += FRAME_S
