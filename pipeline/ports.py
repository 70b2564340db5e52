"""The two small interfaces a pipeline talks to the outside through.

The conversation never reaches into aiortc: it writes PCM to an AudioSink and
events to an EventSink. rtc/ implements both; tests can implement them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from pipeline.events import Event

# listener(kind, mark, t): kind "start" when the first audible frame of `mark`
# left (monotonic media time t), "end" when its last frame left.
PlaybackListener = Callable[[str, Hashable, float], None]


class PlayedLike(Protocol):
    mark: Hashable
    played: int
    total: int


class AudioSink(Protocol):
    def write(self, pcm: bytes, sample_rate: int, mark: Hashable = None) -> None: ...

    def flush(self) -> list[PlayedLike]: ...

    def add_listener(self, listener: PlaybackListener) -> None: ...

    @property
    def busy(self) -> bool: ...


class EventSink(Protocol):
    def __call__(self, event: Event) -> None: ...


class Pipeline(Protocol):
    """What a session drives: audio frames and typed text in; close when the session ends."""

    def on_audio(self, pcm: bytes, t: float) -> None: ...

    def on_text(self, text: str) -> None: ...

    async def close(self) -> None: ...
