"""The ports a pipeline talks to the outside through, each defined once.

The conversation never reaches into aiortc: it writes PCM to an AudioOutput and
events to an EventSink. rtc/ implements both; tests implement them in memory
(tests/fakes.py). Times are monotonic media time in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pipeline.events import Event


class PlaybackKind(StrEnum):
    START = "start"  # the first audible frame of a mark left
    END = "end"  # the last queued frame of a mark left (more may follow later: it starts again)


@dataclass(frozen=True)
class Playback:
    kind: PlaybackKind
    mark: Hashable
    t: float


PlaybackListener = Callable[[Playback], None]


@dataclass(frozen=True)
class Played:
    """How much of one mark left the output, in samples at the output's rate."""

    mark: Hashable
    played: int
    total: int

    @property
    def share(self) -> float:
        return self.played / self.total if self.total else 0.0


class AudioOutput(Protocol):
    """Where a reply's audio goes. Every method returns at once.

    - `write` queues PCM (any rate) tagged with a mark (a sentence); it plays after
      what is queued, unless the output is paused.
    - `pause` stops the audio at the next frame (silence is sent meanwhile) and keeps
      the queue; `resume` continues from the same sample. Writes while paused queue.
    - `clear` drops everything queued and returns how much of each dropped mark had
      played: what the listener heard. It also ends a pause.
    - `wait_for_playout` returns once nothing is queued (a paused output never is).
    - `queued_seconds` is how much audio is queued and not yet played: how long until a
      sentence written now would start.
    - `level_dbfs(window_s)` is the loudest frame that left within the last
      `window_s` seconds (-inf if only silence did), for telling the assistant's own
      voice coming back into the microphone from the user's.
    """

    def write(self, pcm: bytes, sample_rate: int, mark: Hashable) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def clear(self) -> list[Played]: ...

    async def wait_for_playout(self) -> None: ...

    def level_dbfs(self, window_s: float) -> float: ...

    def add_listener(self, listener: PlaybackListener) -> None: ...

    @property
    def busy(self) -> bool:
        """Audio is queued (playing or paused)."""
        ...

    @property
    def queued_seconds(self) -> float: ...


class EventSink(Protocol):
    def __call__(self, event: Event) -> None: ...


class Pipeline(Protocol):
    """What a session drives: audio frames and typed text in; close when the session ends."""

    def on_audio(self, pcm: bytes, t: float) -> None: ...

    def on_text(self, text: str) -> None: ...

    def on_timezone(self, name: str) -> None:
        """The user's time zone, as their page reports it (an IANA name)."""
        ...

    def on_commit(self, pcm: bytes) -> None:
        """16 kHz audio the client says is the user's whole turn (its own turn detection)."""
        ...

    def on_cancel(self) -> None:
        """Stop the reply now, as if the user had interrupted it."""
        ...

    def on_truncate(self, turn: int, played_s: float) -> bool:
        """The client played only the first `played_s` of turn `turn`'s reply; False: no such turn."""
        ...

    def on_instructions(self, text: str) -> None:
        """The system prompt from now on."""
        ...

    def on_voice(self, name: str) -> None:
        """The voice to speak with from the next sentence on (an engine without it keeps its own)."""
        ...

    async def close(self) -> None: ...
