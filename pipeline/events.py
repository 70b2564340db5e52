"""The messages the server sends on the `events` data channel: a contract other clients rely on.

Every message is a JSON object with `type`; turn-scoped ones carry `turn`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pipeline.timers import TimerStatus

Stage = Literal["stt", "llm", "tts", "turn", "tool", "input", "session", "rate"]


class EndOfTurn(StrEnum):
    """What decided that the user's turn was over."""

    MODEL = "model"  # the end-of-turn model, at a pause
    SILENCE = "silence"  # the long silence
    WORDS = "words"  # at a pause, words that only end a finished question (Mandarin's 吗, 呢, ？)
    TEXT = "text"  # typed text
    COMMIT = "commit"  # the client ended the turn itself (a Realtime client's input_audio_buffer.commit)
    TIMER = "timer"  # no user turn: a timer the user set is due


class StateName(StrEnum):
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    THINKING = "thinking"
    SPEAKING = "speaking"


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
    state: StateName
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
    language: str = "en"  # ISO 639-1: what the reply is in too


@dataclass
class TranscriptPartial(Event):
    """The user's words so far, from a pass over the audio before their turn is over."""

    type: ClassVar[str] = "transcript_partial"
    text: str


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
class ToolCallEvent(Event):
    """The reply runs a tool (only once released: a held reply never acts)."""

    type: ClassVar[str] = "tool_call"
    name: str
    arguments: str  # JSON, as the model wrote it
    turn: int | None = None


@dataclass
class ToolResultEvent(Event):
    type: ClassVar[str] = "tool_result"
    name: str
    ok: bool  # False: it failed, timed out or was cancelled
    ms: float
    turn: int | None = None


@dataclass
class TimerEvent(Event):
    """A timer or reminder was set, is due (said now) or was cancelled."""

    type: ClassVar[str] = "timer"
    id: int
    status: TimerStatus
    seconds: float  # its duration, as set
    label: str  # what it reminds of; "" for a plain timer


@dataclass
class Metrics(Event):
    """A turn's timings: sent when its reply is first heard, and again, `final`, when the turn ends.

    `*_ms` are how long a stage took; `*_at_ms` are when something happened, in media time after
    the user's turn ended (their speech's end; for a typed or unasked turn, its arrival), so a
    client can draw the turn as a timeline.
    """

    type: ClassVar[str] = "metrics"
    turn: int | None = None
    endpoint_ms: float | None = None  # speech end to the turn's release
    stt_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_sentence_ms: float | None = None
    tts_first_audio_ms: float | None = None
    voice_to_voice_ms: float | None = None  # speech end to the reply's first audio leaving (heard_at_ms, for a spoken turn)
    turn_detect_ms: float | None = None  # end-of-turn model's inference at the last pause
    turn_complete: float | None = None  # its probability that the user had finished
    released_by: EndOfTurn | None = None
    prepared_at_ms: float | None = None  # the reply's work began (held until the release when this is earlier)
    released_at_ms: float | None = None
    stt_at_ms: float | None = None
    llm_at_ms: float | None = None
    tts_at_ms: float | None = None  # the first sentence's synthesis began
    heard_at_ms: float | None = None
    pauses: list[tuple[float, float | None]] | None = None  # the reply's audio paused for the user, and resumed (None: it did not)
    interrupted_at_ms: float | None = None
    tools: list[tuple[str, float | None, float]] | None = None  # [name, at_ms, ms] of each tool the reply ran
    ended_at_ms: float | None = None  # the reply played out, was cut off or failed (final only)
    final: bool = False


@dataclass
class Error(Event):
    type: ClassVar[str] = "error"
    stage: Stage
    message: str
    turn: int | None = None


@dataclass
class Goodbye(Event):
    type: ClassVar[str] = "goodbye"
    reason: str
