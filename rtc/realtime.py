"""`/v1/realtime`: the OpenAI Realtime protocol over a WebSocket, in front of the same pipeline.

An adapter, like the page's `/offer` + `events`: it turns the client's events into the
pipeline's inputs (audio frames in media time, text, commit, cancel, truncate, instructions)
and the pipeline's events and reply audio into the protocol's server events. The conversation
itself (turn-taking, barge-in, heard-only history, engines) is the pipeline's, unchanged.

Events are parsed with the `openai` SDK's own types (`openai.types.realtime`): what the SDK
would not send is an `error` event, and the session goes on. The reply's audio leaves as
`response.output_audio.delta`, 20 ms at a time as it is due (the same pacing and playback
books as the WebRTC track), so a barge-in stops it at once and what "played" means is the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic
from aiohttp import WSMsgType, web
from openai.types.realtime import RealtimeClientEvent

from pipeline.events import (
    Error,
    Event,
    Goodbye,
    Reply,
    ReplyDelta,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    State,
    StateName,
    Transcript,
)
from pipeline.ports import EventSink, Pipeline
from rtc.outbound import OutboundAudioTrack
from rtc.pcm import RATE
from rtc.realtime_audio import RATES, AudioFormat, ChunkFramer, Decoder, Encoder
from rtc.session import MAX_TEXT_MESSAGE, PipelineFactory, SessionLimits, wind_down

log = logging.getLogger("rtc.realtime")

OUTPUT_RATE = 24000  # the reply is kept at the protocol's PCM rate; G.711 is made from it
TICK_S = 0.1
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a 60 s append at 24 kHz is 3.8 MB of base64
MAX_BUFFER_S = 60.0  # audio a client may append before it commits
MIN_COMMIT_S = 0.1  # what OpenAI's server also refuses to commit
MAX_QUEUED = 3000  # server events waiting for a client that does not read (a minute of audio deltas)
MODEL = "voice-assistant"

_CLIENT_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeClientEvent)


class ProtocolError(ValueError):
    """A client event that cannot be acted on; `code` and the message go back in an `error` event."""

    def __init__(self, message: str, code: str = "invalid_event", param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


@dataclass
class _Response:
    number: int  # the pipeline's turn
    id: str
    item_id: str

    @property
    def part(self) -> dict[str, Any]:
        """What names its one audio content part in every event about it."""
        return {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}


class RealtimeEvents:
    """The OpenAI Realtime protocol as a session's event channel: over the WebSocket (`RealtimeSocket`,
    audio in events too) or on a WebRTC call's `oai-events` data channel (audio on the call's tracks)."""

    label = "oai-events"

    def __init__(self, send: Callable[[str], None], emit: EventSink | None = None, feed: Callable[[bytes], None] | None = None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._send_text = send
        self._feed = feed  # where appended 16 kHz audio goes under turn detection; None: it comes on a media track
        self.voice = "default"
        self.instructions = ""
        self.vad = True  # the server's turn detection (server_vad / semantic_vad); False: the client commits
        self.input_format: AudioFormat = "audio/pcm"
        self.output_format: AudioFormat = "audio/pcm"
        self.encoder = Encoder(self.output_format, OUTPUT_RATE)
        self._decoder = Decoder(self.input_format)
        self._buffer = bytearray()  # appended 16 kHz audio the client has not committed (its own turn detection)
        self._committed: bytes | None = None  # committed audio waiting for response.create
        self._text: list[str] = []  # user text items waiting for response.create
        self._responses: dict[int, _Response] = {}  # open responses by turn number
        self.speaking: _Response | None = None  # whose audio is leaving now
        self._speech: int | None = None  # the turn of the user's speech in progress, once started
        self._ids = 0
        self.media_ms: Callable[[], int] = lambda: 0  # the input's media time, for speech_started/stopped
        self.last_activity = time.monotonic()
        self.pipeline: Pipeline | None = None

    def attach(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.instructions = getattr(getattr(pipeline, "history", None), "system_prompt", "")
        self._send("session.created", session=self._session())

    @property
    def _pipeline(self) -> Pipeline:
        assert self.pipeline is not None
        return self.pipeline

    def audio_delta(self, samples: np.ndarray) -> None:
        """A 20 ms frame of reply audio left: a WebSocket client gets it as a delta."""
        response = self.speaking
        if response is not None:
            self._send("response.output_audio.delta", **response.part, delta=base64.b64encode(self.encoder(samples)).decode())

    # -- client events in ----------------------------------------------------------

    def incoming(self, data: str) -> None:
        event_id = None
        try:
            if len(data) > MAX_EVENT_BYTES:
                raise ProtocolError(f"event too large (limit {MAX_EVENT_BYTES} bytes)", "event_too_large")
            try:
                raw = json.loads(data)
            except ValueError:
                raise ProtocolError("event is not valid JSON", "invalid_json") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                raise ProtocolError("an event is a JSON object with a string 'type'", "invalid_event")
            event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
            try:
                event = _CLIENT_EVENT.validate_python(raw)
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"][1:]) or None
                known = first["type"] != "union_tag_invalid"
                message = f"{first['msg']} at {where}" if known and where else f"unknown event type {raw['type'][:60]!r}"
                raise ProtocolError(message, "invalid_event" if known else "unknown_event", where) from None
            self._handle(event)
        except ProtocolError as exc:
            self._error(str(exc), exc.code, param=exc.param, event_id=event_id)
        except Exception:
            log.exception("realtime event failed")
            self._error("internal error handling the event", "internal", kind="server_error", event_id=event_id)

    def _handle(self, event: Any) -> None:
        kind = event.type
        if kind == "input_audio_buffer.append":
            self._append(event.audio)
        elif kind == "input_audio_buffer.commit":
            self._commit()
        elif kind == "input_audio_buffer.clear":
            self._buffer.clear()
            self._send("input_audio_buffer.cleared")
        elif kind == "conversation.item.create":
            self._create_item(event.item)
        elif kind == "response.create":
            self._respond()
        elif kind == "response.cancel":
            self._pipeline.on_cancel()
        elif kind == "conversation.item.truncate":
            self._truncate(event.item_id, event.content_index, event.audio_end_ms)
        elif kind == "session.update":
            self._update(event.session)
        else:
            raise ProtocolError(f"{kind} is not supported by this server", "unsupported_event")

    def _append(self, audio: str) -> None:
        if self._feed is None:
            raise ProtocolError("on a call the audio comes over its media track, not in events", "unsupported_event")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("'audio' is not valid base64", "invalid_audio", "audio") from None
        try:
            pcm = self._decoder(data)
        except ValueError as exc:
            raise ProtocolError(str(exc), "invalid_audio", "audio") from None
        if self.vad:
            assert self._feed is not None
            self._feed(pcm)
            return
        if (len(self._buffer) + len(pcm)) / 2 / RATE > MAX_BUFFER_S:
            raise ProtocolError(f"the input audio buffer holds at most {MAX_BUFFER_S:.0f} s: commit or clear it", "buffer_full")
        self._buffer += pcm

    def _commit(self) -> None:
        if self.vad:
            raise ProtocolError(
                "turn detection is on: the server commits the audio itself (set turn_detection to null to commit)", "vad_on"
            )
        if len(self._buffer) / 2 / RATE < MIN_COMMIT_S:
            raise ProtocolError(f"the input audio buffer holds less than {MIN_COMMIT_S * 1000:.0f} ms", "input_audio_buffer_commit_empty")
        self._committed, self._buffer = bytes(self._buffer), bytearray()
        self.last_activity = time.monotonic()
        self._send("input_audio_buffer.committed", item_id=self._item_id("user"), previous_item_id=None)

    def _create_item(self, item: Any) -> None:
        if getattr(item, "type", None) != "message" or getattr(item, "role", None) != "user":
            raise ProtocolError("only user message items are supported", "unsupported_item", "item")
        parts = [c.text for c in item.content if c.type == "input_text" and c.text]
        if not parts or len(parts) != len(item.content):
            raise ProtocolError("a user item here is text: content of input_text parts", "unsupported_item", "item.content")
        text = " ".join(p.strip() for p in parts).strip()
        if not text or len(text) > MAX_TEXT_MESSAGE:
            raise ProtocolError(f"the text must be 1 to {MAX_TEXT_MESSAGE} characters", "invalid_text", "item.content")
        self._text.append(text)
        self.last_activity = time.monotonic()
        item_id = item.id or self._item_id("user")
        done = {"id": item_id, "type": "message", "role": "user", "status": "completed", "content": [{"type": "input_text", "text": text}]}
        self._send("conversation.item.added", previous_item_id=None, item=done)
        self._send("conversation.item.done", previous_item_id=None, item=done)

    def _respond(self) -> None:
        if self._text:
            text, self._text = " ".join(self._text), []
            self._pipeline.on_text(text)
        elif self._committed is not None:
            pcm, self._committed = self._committed, None
            self._pipeline.on_commit(pcm)
        else:
            raise ProtocolError("nothing to respond to: create a user item or commit audio first", "nothing_to_respond_to")

    def _truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        number = _turn_of(item_id, "item_")
        if number is None or audio_end_ms < 0 or not self._pipeline.on_truncate(number, audio_end_ms / 1000):
            raise ProtocolError(f"no assistant item {item_id[:40]!r} to truncate", "item_truncate_invalid_item_id", "item_id")
        self._send("conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms)

    def _update(self, session: Any) -> None:
        if getattr(session, "type", "realtime") != "realtime":
            raise ProtocolError("this server holds conversations: session.type is 'realtime'", "unsupported_session", "session.type")
        if session.instructions is not None:
            if len(session.instructions) > 20 * MAX_TEXT_MESSAGE:
                raise ProtocolError("instructions too long", "invalid_instructions", "session.instructions")
            self.instructions = session.instructions
            self._pipeline.on_instructions(session.instructions)
        audio = session.audio
        if audio is not None and audio.input is not None:
            if audio.input.format is not None:
                self.input_format = audio.input.format.type or "audio/pcm"
                self._decoder = Decoder(self.input_format)
            if "turn_detection" in audio.input.model_fields_set:
                if audio.input.turn_detection is None and self._feed is None:
                    raise ProtocolError(
                        "a call's turns are found by the server", "unsupported_session", "session.audio.input.turn_detection"
                    )
                self.vad = audio.input.turn_detection is not None
                self._buffer.clear()
        if audio is not None and audio.output is not None and audio.output.format is not None:
            self.output_format = audio.output.format.type or "audio/pcm"
            self.encoder = Encoder(self.output_format, OUTPUT_RATE)
        if audio is not None and audio.output is not None and audio.output.voice:
            voice = audio.output.voice if isinstance(audio.output.voice, str) else getattr(audio.output.voice, "id", "")
            if not voice or len(voice) > 64:
                raise ProtocolError("a voice is a name of at most 64 characters", "invalid_voice", "session.audio.output.voice")
            self.voice = voice
            self._pipeline.on_voice(voice)
        self._send("session.updated", session=self._session())

    # -- pipeline events out ---------------------------------------------------------

    def outgoing(self, event: Event) -> None:
        if isinstance(event, SpeechStartedEvent):
            self.last_activity = time.monotonic()
            self._send("input_audio_buffer.speech_started", audio_start_ms=self.media_ms(), item_id=self._item_id("user", event.turn))
            self._speech = event.turn
        elif isinstance(event, SpeechStoppedEvent):
            self._stopped(event.turn)
        elif isinstance(event, Transcript) and event.turn is not None:
            self.last_activity = time.monotonic()
            if event.source == "voice":
                self._send(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=self._item_id("user", event.turn),
                    content_index=0,
                    transcript=event.text,
                    usage={"type": "duration", "seconds": 0},
                )
        elif isinstance(event, State) and event.turn is not None:
            if event.state == StateName.THINKING:
                self._open(event.turn)
            elif event.state == StateName.SPEAKING:
                self.speaking = self._open(event.turn)
        elif isinstance(event, ReplyDelta) and event.turn is not None:
            self._send("response.output_audio_transcript.delta", **self._open(event.turn).part, delta=event.text)
        elif isinstance(event, Reply) and event.turn is not None:
            self._close_response(event)
        elif isinstance(event, Error):
            self._error(event.message, event.stage, kind="invalid_request_error" if event.stage in ("input", "rate") else "server_error")
        elif isinstance(event, Goodbye):
            self._error(event.reason, "session_closed", kind="server_error")

    def _stopped(self, turn: int | None) -> None:
        """The user's speech is over: at its end, or when turn-taking answered it at a pause before that
        (the protocol has no reply before speech_stopped)."""
        if self._speech is None or turn != self._speech:
            return
        self._speech = None
        item_id = self._item_id("user", turn)
        self._send("input_audio_buffer.speech_stopped", audio_end_ms=self.media_ms(), item_id=item_id)
        self._send("input_audio_buffer.committed", item_id=item_id, previous_item_id=None)

    def _open(self, number: int) -> _Response:
        response = self._responses.get(number)
        if response is None:
            self._stopped(number)
            response = self._responses[number] = _Response(number, f"resp_{self.id}_{number}", f"item_{number}")
            self._send("response.created", response=self._response_body(response, "in_progress"))
            item = self._item(response, "in_progress", "")
            self._send("response.output_item.added", response_id=response.id, output_index=0, item=item)
            self._send("conversation.item.added", previous_item_id=None, item=item)
            self._send("response.content_part.added", **response.part, part={"type": "audio", "transcript": ""})
        return response

    def _close_response(self, reply: Reply) -> None:
        assert reply.turn is not None
        response = self._open(reply.turn)
        del self._responses[reply.turn]
        if self.speaking is response:
            self.speaking = None
        status = "cancelled" if reply.interrupted else "completed"
        transcript = reply.heard if reply.interrupted else reply.text
        self._send("response.output_audio.done", **response.part)
        self._send("response.output_audio_transcript.done", **response.part, transcript=transcript)
        self._send("response.content_part.done", **response.part, part={"type": "audio", "transcript": transcript})
        item = self._item(response, "completed" if status == "completed" else "incomplete", transcript)
        self._send("response.output_item.done", response_id=response.id, output_index=0, item=item)
        self._send("conversation.item.done", previous_item_id=None, item=item)
        self._send("response.done", response=self._response_body(response, status, [item]))

    # -- shapes --------------------------------------------------------------------

    def _session(self) -> dict[str, Any]:
        turn_detection = {"type": "server_vad", "create_response": True, "interrupt_response": True} if self.vad else None
        return {
            "type": "realtime",
            "id": f"sess_{self.id}",
            "object": "realtime.session",
            "model": MODEL,
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": _format(self.input_format), "turn_detection": turn_detection},
                "output": {"format": _format(self.output_format), "voice": self.voice},
            },
        }

    def _response_body(self, response: _Response, status: str, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "output": output or [],
            "conversation_id": f"conv_{self.id}",
            "output_modalities": ["audio"],
            "audio": {"output": {"format": _format(self.output_format), "voice": self.voice}},
        }
        if status == "cancelled":
            body["status_details"] = {"type": "cancelled", "reason": "turn_detected"}
        return body

    @staticmethod
    def _item(response: _Response, status: str, transcript: str) -> dict[str, Any]:
        return {
            "id": response.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_audio", "transcript": transcript}],
        }

    def _item_id(self, role: str, turn: int | None = None) -> str:
        if turn is None:
            self._ids += 1
            return f"item_{role}_c{self._ids}"
        return f"item_{role}_{turn}"

    def _error(
        self, message: str, code: str, param: str | None = None, kind: str = "invalid_request_error", event_id: str | None = None
    ) -> None:
        self._send("error", error={"type": kind, "code": code, "message": message, "param": param, "event_id": event_id})

    def _send(self, kind: str, **fields: Any) -> None:
        self._ids += 1
        self._send_text(json.dumps({"type": kind, "event_id": f"event_{self._ids}", **fields}, ensure_ascii=False))


class RealtimeSocket:
    """One WebSocket client: the Realtime protocol, its pipeline, the reply's pacing and the media clock.
    `run` owns every task and frees them all when either side closes."""

    def __init__(self, ws: web.WebSocketResponse, make_pipeline: PipelineFactory, limits: SessionLimits) -> None:
        self.ws = ws
        self.limits = limits
        self.created = time.monotonic()
        self.close_reason_kind = ""
        self._framer = ChunkFramer()
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.events = RealtimeEvents(self._queue, feed=lambda pcm: self._feed(self._framer.push(pcm, time.monotonic())))
        self.events.media_ms = self._media_ms
        self.id = self.events.id
        self.outbound = OutboundAudioTrack(rate=OUTPUT_RATE)
        self.pipeline: Pipeline = make_pipeline(self.outbound, self.events.outgoing)
        self.events.attach(self.pipeline)

    # -- lifetime ------------------------------------------------------------------

    async def run(self, on_closed: Callable[[RealtimeSocket], None]) -> None:
        tasks = [
            asyncio.create_task(self._write(), name=f"realtime-write:{self.id}"),
            asyncio.create_task(self._pace(), name=f"realtime-pace:{self.id}"),
            asyncio.create_task(self._tick(), name=f"realtime-tick:{self.id}"),
        ]
        try:
            async for message in self.ws:
                if message.type == WSMsgType.TEXT:
                    self.events.incoming(message.data)
                elif message.type == WSMsgType.BINARY:
                    self.events.incoming("binary frame")  # answered as what it is: not a JSON event
                elif message.type == WSMsgType.ERROR:
                    break
                if self.close_reason_kind:
                    break
        finally:
            # Shielded: aiohttp may cancel this handler when the client goes, and the turns must still end.
            await asyncio.shield(asyncio.ensure_future(self._close(tasks, on_closed)))

    async def _close(self, tasks: list[asyncio.Task[None]], on_closed: Callable[[RealtimeSocket], None]) -> None:
        self.close_reason_kind = self.close_reason_kind or "closed"
        try:
            await wind_down(tasks, self.pipeline, self.outbound)
        finally:
            on_closed(self)
        await self.ws.close()

    def close_soon(self, reason: str, kind: str) -> None:
        """End the session from one of its tasks: the client is told why, then the socket closes."""
        if not self.close_reason_kind:
            self.close_reason_kind = kind
            self.events.outgoing(Goodbye(reason))
            self._outbox.put_nowait(None)

    async def _write(self) -> None:
        while (message := await self._outbox.get()) is not None:
            await self.ws.send_str(message)
        await self.ws.close()

    async def _pace(self) -> None:
        """The reply's audio, a frame at a time when it is due: only frames with reply audio in them leave."""
        while True:
            samples = await self.outbound.next_frame()
            if self.outbound.audible:
                self.events.audio_delta(samples)

    async def _tick(self) -> None:
        """Media time goes on while the client sends nothing; and the session's time limits."""
        limits = self.limits
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self._feed(self._framer.tick(now))
            if limits.max_duration_s and now - self.created > limits.max_duration_s:
                self.close_soon("the maximum session length was reached, goodbye", "max_duration")
            elif limits.idle_timeout_s and now - self.events.last_activity > limits.idle_timeout_s:
                self.close_soon("no one has spoken for a while, goodbye", "idle")

    def _feed(self, frames: list[Any]) -> None:
        for frame in frames:
            try:
                self.pipeline.on_audio(frame.pcm, frame.t)
            except Exception:
                log.exception("pipeline failed on audio")
                self.events.outgoing(Error("session", "internal error handling audio"))

    def _queue(self, message: str) -> None:
        if self._outbox.qsize() >= MAX_QUEUED:  # the client does not read: it is dropped, not buffered for
            if not self.close_reason_kind:
                self.close_reason_kind = "slow_client"
                self._outbox.put_nowait(None)
            return
        self._outbox.put_nowait(message)

    def _media_ms(self) -> int:
        t = self._framer.t_next
        return 0 if t is None else max(0, round((t - self.created) * 1000))


def _format(fmt: AudioFormat) -> dict[str, Any]:
    return {"type": fmt, "rate": RATES[fmt]} if fmt == "audio/pcm" else {"type": fmt}


def _turn_of(item_id: str, prefix: str) -> int | None:
    rest = item_id[len(prefix) :] if item_id.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


async def serve(
    request: web.Request,
    make_pipeline: PipelineFactory,
    limits: SessionLimits,
    on_open: Callable[[RealtimeSocket], None],
    on_closed: Callable[[RealtimeSocket], None],
) -> web.WebSocketResponse:
    """Accept the WebSocket and hold the conversation until either side closes it."""
    # Up to 4x the event limit is read and answered with an error event; beyond, aiohttp closes with 1009.
    ws = web.WebSocketResponse(max_msg_size=4 * MAX_EVENT_BYTES, heartbeat=30)
    await ws.prepare(request)
    session = RealtimeSocket(ws, make_pipeline, limits)
    on_open(session)
    await session.run(on_closed)
    return ws
