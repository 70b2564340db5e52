"""One browser connection: its peer connection, tracks, data channel, pipeline and tasks.

The session owns everything it starts and `close()` cancels and awaits all of
it, whichever way the connection ends: the client's close, ICE failure, a
watchdog (no connection in time, no RTP for a while) or server shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.sdp import SessionDescription

from pipeline.events import Error, Event, Goodbye
from pipeline.ports import AudioOutput, EventSink, Pipeline
from rtc.inbound import (
    DeadlineInbound,
    Inbound,
    InboundConfig,
    PacketTap,
    TrackInbound,
    ask_for_fec,
    install_tap,
    opus_available,
    set_jitter_frames,
)
from rtc.outbound import OpusPacketTrack, OutboundAudioTrack

log = logging.getLogger("rtc.session")

# The id of the session whose work is running: set when a session is made, inherited by
# every task and callback it creates, and added to log records by the server's filter.
SESSION_ID: contextvars.ContextVar[str] = contextvars.ContextVar("session_id", default="-")

MAX_TEXT_MESSAGE = 4000  # characters of one typed message

# make_pipeline(audio_out, emit) -> the pipeline this session drives
PipelineFactory = Callable[[AudioOutput, EventSink], Pipeline]


async def wind_down(tasks: Sequence[asyncio.Task[Any]], pipeline: Pipeline, outbound: OutboundAudioTrack) -> None:
    """How every session ends, whatever its protocol: its tasks cancelled and awaited, its
    conversation closed (a failure is logged, not raised), its reply track stopped."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await pipeline.close()
    except Exception:
        log.exception("pipeline close failed")
    finally:
        outbound.stop()


class EventChannel(Protocol):
    """What the session's data channel speaks: the page's `events` protocol, or the OpenAI Realtime one
    (rtc/realtime.py). It turns the pipeline's events into messages and messages into the pipeline's inputs."""

    label: str

    def attach(self, pipeline: Pipeline) -> None: ...

    def outgoing(self, event: Event) -> None: ...

    def incoming(self, message: str) -> None: ...


# make_channel(send_text, emit) -> the session's data channel protocol
ChannelFactory = Callable[[Callable[[str], None], EventSink], EventChannel]


class PageEvents:
    """The page's protocol on the `events` channel: each event as its JSON; in, typed text and the time zone."""

    label = "events"

    def __init__(self, send: Callable[[str], None], emit: EventSink) -> None:
        self._send, self._emit = send, emit
        self.pipeline: Pipeline | None = None

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def outgoing(self, event: Event) -> None:
        self._send(json.dumps(event.to_dict()))

    def incoming(self, message: str) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        if len(message) > MAX_TEXT_MESSAGE + 200:
            self._emit(Error(stage="input", message=f"message too long (limit {MAX_TEXT_MESSAGE} characters of text)"))
            return
        try:
            data = json.loads(message)
        except ValueError:
            self._emit(Error(stage="input", message="message is not valid JSON"))
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            self._emit(Error(stage="input", message="message must be a JSON object with a string 'type'"))
            return
        if data["type"] == "text":
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                self._emit(Error(stage="input", message="'text' message needs a non-empty string 'text'"))
            elif len(text) > MAX_TEXT_MESSAGE:
                self._emit(Error(stage="input", message=f"text too long (limit {MAX_TEXT_MESSAGE} characters)"))
            else:
                pipeline.on_text(text.strip())
        elif data["type"] == "timezone":
            name = data.get("timezone")
            if not isinstance(name, str) or not 0 < len(name) <= 64:
                self._emit(Error(stage="input", message="'timezone' message needs 'timezone', an IANA name such as Europe/Lisbon"))
            else:
                pipeline.on_timezone(name)
        elif data["type"] != "ping":
            self._emit(Error(stage="input", message=f"unknown message type {data['type'][:40]!r}"))


class InvalidOffer(ValueError):
    """The offer cannot be answered; the message is safe to return to the client."""


@dataclass(frozen=True)
class SessionLimits:
    connect_timeout_s: float = 15.0  # offer answered -> ICE connected
    no_media_timeout_s: float = 5.0  # connected -> no inbound RTP for this long
    max_duration_s: float = 0.0  # 0: unlimited
    idle_timeout_s: float = 0.0  # no speech or text for this long -> goodbye (0: never)


class Session:
    def __init__(
        self,
        pc: RTCPeerConnection,
        make_pipeline: PipelineFactory,
        on_closed: Callable[[Session], None],
        limits: SessionLimits | None = None,
        observe: Callable[[Event], None] | None = None,
        inbound: InboundConfig | None = None,
        channel: ChannelFactory = PageEvents,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.pc = pc
        self.limits = limits or SessionLimits()
        self.outbound = OutboundAudioTrack()
        self.inbound: Inbound | None = None
        self.inbound_config = inbound or InboundConfig()
        self._deadline = self.inbound_config.buffer == "deadline" and opus_available()
        self.created = self.last_activity = time.monotonic()
        self.close_reason = ""
        self.close_reason_kind = ""  # a short label for metrics
        self._observe = observe
        self._on_closed = on_closed
        self._channel: RTCDataChannel | None = None
        self._pending: list[str] = []  # events sent before the data channel opened
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self.channel = channel(self._send_text, self.send_event)
        self.pipeline = make_pipeline(self.outbound, self.send_event)
        self.channel.attach(self.pipeline)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        try:
            await self.pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
            raise InvalidOffer(f"invalid SDP offer: {exc or type(exc).__name__}") from None
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise InvalidOffer("the offer has no audio m-line")
        for transceiver in audio:
            if self._deadline:
                ask_for_fec(transceiver)
            elif self.inbound_config.jitter_frames is not None:
                set_jitter_frames(transceiver.receiver, self.inbound_config.jitter_frames)
        # With Opus (and libopus here) the session encodes its own frames; any other codec: aiortc does.
        encoded = OpusPacketTrack(self.outbound) if opus_available() else None
        sender = self.pc.addTrack(encoded or self.outbound)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        if encoded is not None and answer_codec(self.pc.localDescription.sdp) != "opus":
            sender.replaceTrack(self.outbound)
        self._spawn(self._watchdog(), "watchdog")
        return self.pc.localDescription

    # -- events out ----------------------------------------------------------

    def send_event(self, event: Event) -> None:
        if self._observe is not None:
            self._observe(event)
        if event.type in ("speech_started", "transcript"):
            self.last_activity = time.monotonic()
        self.channel.outgoing(event)

    def _send_text(self, message: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            if len(self._pending) < 200:
                self._pending.append(message)
            return
        try:
            channel.send(message)
        except Exception:  # the channel closed under us: the session is going away
            log.debug("event dropped: channel closed")

    # -- aiortc callbacks ----------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.inbound is not None:
            return
        # aiortc emits "track" while applying the offer, before any packet can arrive: the
        # moment to put the tap into this track's receiver.
        receiver = next((t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        tap = PacketTap() if self._deadline and receiver is not None else None
        inbound: Inbound
        if tap is not None and install_tap(receiver, tap):
            config = self.inbound_config
            inbound = DeadlineInbound(track, tap, config.delay, config.observer)
        else:
            inbound = TrackInbound(track)
        self.inbound = inbound
        self._spawn(self._pump(inbound), "inbound")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != self.channel.label:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._drain_pending()
        else:
            channel.on("open", self._drain_pending)

    def _drain_pending(self) -> None:
        pending, self._pending = self._pending, []
        for message in pending:
            if self._channel is not None:
                self._channel.send(message)

    def _on_message(self, message: Any) -> None:
        if not isinstance(message, str):
            self.send_event(Error(stage="input", message=f"messages on {self.channel.label!r} must be JSON text"))
            return
        self.channel.incoming(message)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("connection %s", state)
        if state in ("failed", "closed"):
            self.close_soon(f"connection {state}", kind=state)

    # -- tasks ---------------------------------------------------------------

    async def _pump(self, inbound: Inbound) -> None:
        """Feeds the pipeline as fast as frames arrive, which keeps aiortc's queue drained."""
        async for frame in inbound.frames():
            try:
                self.pipeline.on_audio(frame.pcm, frame.t)
            except Exception:
                log.exception("pipeline failed on audio")
                self.send_event(Error(stage="session", message="internal error handling audio"))

    async def _watchdog(self) -> None:
        limits = self.limits
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if self.pc.connectionState != "connected":
                if now - self.created > limits.connect_timeout_s:
                    self.close_soon("no connection within the connect timeout", kind="connect_timeout")
                    return
                continue
            last = self.inbound.last_frame_at if self.inbound else None
            if (last or self.created) < now - limits.no_media_timeout_s and now - self.created > limits.no_media_timeout_s:
                self.close_soon("no audio received from the client", kind="no_media")
                return
            if limits.max_duration_s and now - self.created > limits.max_duration_s:
                self.close_soon("the maximum session length was reached, goodbye", kind="max_duration")
                return
            if limits.idle_timeout_s and now - self.last_activity > limits.idle_timeout_s:
                self.close_soon("no one has spoken for a while, goodbye", kind="idle")
                return

    # -- closing -------------------------------------------------------------

    def close_soon(self, reason: str, kind: str = "closed") -> None:
        """Close from a callback or a task of this session (which close() would cancel)."""
        if self._closing is None:
            self.close_reason, self.close_reason_kind = reason, kind
            self._closing = asyncio.get_running_loop().create_task(self._close(reason))

    async def close(self, reason: str = "closed", kind: str = "closed") -> None:
        self.close_soon(reason, kind)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        log.info("closing: %s", reason)
        if self._channel is not None and self._channel.readyState == "open":
            self.send_event(Goodbye(reason=reason))
        current = asyncio.current_task()
        await wind_down([t for t in self._tasks if t is not current], self.pipeline, self.outbound)
        await self.pc.close()
        self._on_closed(self)


def answer_codec(sdp: str) -> str:
    """The audio codec an SDP answer settled on (its audio m-line's first codec), lower case."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "audio" and media.fmt:
            # The m-line's order is the preference; the parser lists codecs in a=rtpmap order.
            first = next((c for c in media.rtp.codecs if c.payloadType == int(media.fmt[0])), None)
            return first.mimeType.split("/", 1)[1].lower() if first else ""
    return ""
