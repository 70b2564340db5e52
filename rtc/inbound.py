"""The browser's audio, as 20 ms frames of 16 kHz mono int16 with media timestamps.

Two ways in, chosen by INBOUND_BUFFER:

- `deadline` (the default), `DeadlineInbound`: aiortc's receiver still does SRTP,
  RTCP receiver reports (which tell the browser about loss, so it turns its FEC on)
  and depayloading, but each Opus packet is taken from it where it would enter
  aiortc's jitter buffer (`PacketTap`) and goes to `rtc.playout.PlayoutBuffer`,
  which orders, conceals and releases frames by their deadline, decoding with
  libopus (`rtc.opus`) straight to 16 kHz mono.
- `aiortc`, `TrackInbound`: aiortc's own jitter buffer and decoder, read from the
  track (48 kHz stereo, resampled here); RTP_JITTER_FRAMES sets its depth. Kept as
  the baseline `python -m bench network` compares against.

The tap replaces one private attribute of the pinned aiortc (`RTCRtpReceiver`'s
name-mangled `__jitter_buffer`, only ever called as `.add(packet)`). If a future
aiortc changes it, `install_tap` says so and the session falls back to `aiortc`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from rtc.opus import OpusDecoder, OpusUnavailable, libopus
from rtc.pcm import FRAME_BYTES, FRAME_S, RATE, PcmFrame
from rtc.playout import DelayBounds, PlayoutBuffer, PlayoutObserver, RtpAudio

__all__ = ["FRAME_BYTES", "PcmFrame", "Inbound", "InboundConfig", "TrackInbound", "DeadlineInbound", "PacketTap", "install_tap"]

log = logging.getLogger("rtc.inbound")

RESYNC_S = 0.5  # pts and arrival disagreeing by more than this means the sender's clock jumped
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
# What the server asks the browser's Opus encoder for, in the answer's fmtp (RFC 7587):
# in-band FEC (the browser then sends it once our receiver reports show loss), no DTX.
OPUS_FMTP: dict[str, int | str | None] = {"minptime": 10, "useinbandfec": 1, "usedtx": 0}

InboundBuffer = Literal["deadline", "aiortc"]


@dataclass(frozen=True)
class InboundConfig:
    buffer: InboundBuffer = "deadline"
    delay: DelayBounds = field(default_factory=DelayBounds)  # the deadline path's target delay bounds
    jitter_frames: int | None = None  # aiortc's jitter buffer depth on the `aiortc` path (None: its own 4)
    observer: PlayoutObserver | None = None  # the server's counters


def set_jitter_frames(receiver: Any, frames: int) -> None:
    """How many later frames aiortc's audio jitter buffer waits for before releasing one (`aiortc` path).

    aiortc fixes it at 4 (80 ms of delay before anything is decoded) and offers no
    setting, so the attribute of the pinned version is set here; if a future aiortc
    renames it, its own default stays and this says so.
    """
    buffer = getattr(receiver, JITTER_BUFFER_ATTR, None)
    if buffer is None or not hasattr(buffer, "_prefetch"):
        log.warning("cannot set the RTP jitter buffer depth with this aiortc; keeping its default")
        return
    buffer._prefetch = frames


def ask_for_fec(transceiver: Any) -> bool:
    """Put OPUS_FMTP on the negotiated Opus codec, so the answer carries it; False if this aiortc differs."""
    codecs = getattr(transceiver, "_codecs", None)
    opus = [c for c in codecs or [] if getattr(c, "mimeType", "").lower() == "audio/opus"]
    if not opus:
        log.warning("no negotiated Opus codec found on the transceiver; the answer asks for no FEC")
        return False
    for codec in opus:
        codec.parameters = {**codec.parameters, **OPUS_FMTP}
    return True


class Inbound(Protocol):
    @property
    def frames_in(self) -> int:
        """Packets (deadline) or decoded frames (aiortc) received."""
        ...

    @property
    def last_frame_at(self) -> float | None:
        """Monotonic arrival of the latest, for the no-RTP watchdog."""
        ...

    def frames(self) -> AsyncIterator[PcmFrame]: ...


# ---------------------------------------------------------------- aiortc's own path


class TrackInbound:
    """aiortc's jitter buffer and decoder: one `av.AudioResampler` per stream re-chunked into exact frames.

    Media time: the first frame is anchored to the monotonic clock; later frames are placed
    by their RTP-derived pts, so a late-delivered frame keeps its true time and gaps stay
    gaps. The anchor moves only if the sender's clock jumps.
    """

    def __init__(self, track: MediaStreamTrack, clock: Callable[[], float] = time.monotonic) -> None:
        self._track = track
        self._clock = clock
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._buffer = b""
        self._buffer_t = 0.0  # media time of _buffer[0]
        self._anchor: float | None = None  # monotonic time of pts 0
        self.frames_in = 0
        self.last_frame_at: float | None = None

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
            if not isinstance(frame, av.AudioFrame):
                continue  # an audio track yields audio frames; this keeps the types honest
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


# ---------------------------------------------------------------- the deadline path


class PacketTap:
    """Stands where aiortc's audio `JitterBuffer` was in the receiver: takes every depayloaded packet.

    aiortc calls `add(packet)` on the event loop for each RTP packet it accepted (after SRTP,
    statistics for its receiver reports, RTX unwrapping and depayloading); returning no frame
    means aiortc's decoder thread never runs, so the packet's only consumer is the playout buffer.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.buffer: PlayoutBuffer | None = None  # set by the DeadlineInbound reading from this tap
        self.arrived = asyncio.Event()
        self.packets = 0
        self.last_at: float | None = None

    def add(self, packet: Any) -> tuple[bool, None]:
        now = self._clock()
        self.packets += 1
        self.last_at = now
        if self.buffer is not None:
            data = getattr(packet, "_data", packet.payload)  # aiortc's depayloaded Opus frame
            self.buffer.push(RtpAudio(packet.sequence_number, packet.timestamp, bytes(data), now))
            self.arrived.set()
        return False, None  # (no picture loss to report, no frame for aiortc's decoder)


def install_tap(receiver: Any, tap: PacketTap) -> bool:
    """Put `tap` in place of the receiver's audio jitter buffer; False (and a warning) if this aiortc differs."""
    current = getattr(receiver, JITTER_BUFFER_ATTR, None)
    if not isinstance(current, JitterBuffer) or not callable(getattr(receiver, "_handle_rtp_packet", None)):
        log.warning("this aiortc's receiver has no audio jitter buffer where 1.16 had it; using INBOUND_BUFFER=aiortc")
        return False
    setattr(receiver, JITTER_BUFFER_ATTR, tap)
    return True


@functools.cache
def opus_available() -> bool:
    """Whether libopus loads (asked once per process: every session's offer asks)."""
    try:
        libopus()
    except OpusUnavailable as exc:
        log.warning("%s; using INBOUND_BUFFER=aiortc", exc)
        return False
    return True


class DeadlineInbound:
    """Frames from the tap's packets through a PlayoutBuffer; ends when the track does."""

    def __init__(
        self,
        track: MediaStreamTrack,
        tap: PacketTap,
        bounds: DelayBounds | None = None,
        observer: PlayoutObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._track = track
        self._tap = tap
        self._clock = clock
        self.decoder = OpusDecoder(RATE)
        self.buffer = PlayoutBuffer(self.decoder, bounds, observer)
        tap.buffer = self.buffer

    @property
    def frames_in(self) -> int:
        return self._tap.packets

    @property
    def last_frame_at(self) -> float | None:
        return self._tap.last_at

    async def _track_ended(self) -> None:
        # aiortc's decoder thread gets no packets from the tap, but still ends the track
        # when the receiver stops: that is how the end of the stream shows here.
        try:
            while True:
                await self._track.recv()
        except MediaStreamError:
            pass

    async def frames(self) -> AsyncIterator[PcmFrame]:
        ended = asyncio.ensure_future(self._track_ended())
        try:
            while not ended.done():
                self._tap.arrived.clear()
                for frame in self.buffer.pop(self._clock()):
                    yield frame
                wake = self.buffer.wake_at()
                timeout = None if wake is None else max(0.0, wake - self._clock())
                arrived = asyncio.ensure_future(self._tap.arrived.wait())
                await asyncio.wait({arrived, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                arrived.cancel()
        finally:
            ended.cancel()
            self._tap.buffer = None
            self.decoder.close()
