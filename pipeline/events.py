"""The messages the server sends on the `events` data channel: a contract other clients rely on.

Every message is a JSON object with `type`; turn-scoped ones carry `turn`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass
class Event:
    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        out.update({f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None or f.name != "turn"})
        return out


@dataclass
class State(Event):
    type: ClassVar[str] = "state"
    state: str  # listening | transcribing | thinking | speaking
    turn: int | None = None


@dataclass
class SpeechStartedEvent(Event):
    type: ClassVar[str] = "speech_started"
    turn: int | None = None


@dataclass
class SpeechStoppedEvent(Event):
    type: ClassVar[str] = "speech_stopped"
    turn: int | None = None
    duration_ms: int | None = None


@dataclass
class Transcript(Event):
    type: ClassVar[str] = "transcript"
    text: str
    turn: int | None = None
    source: str = "voice"  # voice | text


@dataclass
class ReplyDelta(Event):
    type: ClassVar[str] = "reply_delta"
    text: str
    turn: int | None = None


@dataclass
class Reply(Event):
    type: ClassVar[str] = "reply"
    text: str  # the whole reply as generated (up to the interruption)
    interrupted: bool
    heard: str  # what left the outbound track, i.e. what the user heard
    turn: int | None = None


@dataclass
class Metrics(Event):
    type: ClassVar[str] = "metrics"
    turn: int
    endpoint_ms: float | None = None
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_sentence_ms: float | None = None
    tts_first_audio_ms: float | None = None
    voice_to_voice_ms: float | None = None


@dataclass
class Error(Event):
    type: ClassVar[str] = "error"
    stage: str  # stt | llm | tts | input | session
    message: str
    turn: int | None = None


@dataclass
class Goodbye(Event):
    type: ClassVar[str] = "goodbye"
    reason: str
