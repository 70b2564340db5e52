"""The timers and reminders a conversation has set, as a pure core: due times in media time.

The tools in pipeline/tools.py set and cancel them; the conversation (pipeline/conversation.py)
feeds the time and hands what is due to turn-taking, which says it as a reply of its own once
nobody is speaking. Nothing here runs a task: a closed session drops its timers with it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

MAX_PENDING = 10  # per conversation
MAX_SECONDS = 24 * 3600.0
MIN_SECONDS = 1.0


class TimerStatus(StrEnum):
    SET = "set"
    DUE = "due"  # it is said now
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Timer:
    id: int
    seconds: float  # as it was set
    due: float | None  # media time (None: set before the first frame; it counts from the first tick)
    label: str = ""  # what to remind the user of; "" for a plain timer

    @property
    def duration(self) -> str:
        return say_duration(self.seconds)


class TimerRefused(ValueError):
    """A timer that cannot be set (out of range, too many) or cancelled (none matches)."""


Units = tuple[tuple[str, str], ...]  # each unit's singular and plural: hours, minutes, seconds
ENGLISH_UNITS: Units = (("hour", "hours"), ("minute", "minutes"), ("second", "seconds"))


def say_duration(seconds: float, units: Units = ENGLISH_UNITS) -> str:
    """90 -> "1 minute 30 seconds": whole units, largest first."""
    left, parts = round(seconds), []
    for size, (one, many) in zip((3600, 60, 1), units, strict=True):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {one if count == 1 else many}")
    return " ".join(parts) or f"0 {units[-1][1]}"


class Timers:
    def __init__(self, notify: Callable[[Timer, TimerStatus], None] = lambda timer, status: None) -> None:
        self._pending: dict[int, Timer] = {}
        self._ids = itertools.count(1)
        self._notify = notify

    @property
    def pending(self) -> list[Timer]:
        """Soonest first."""
        return sorted(self._pending.values(), key=lambda timer: (timer.due is None, timer.due or 0.0, timer.id))

    def set(self, seconds: float, label: str, now: float | None) -> Timer:
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise TimerRefused(f"a timer must be between {MIN_SECONDS:g} second and 24 hours; got {seconds:g} s")
        if len(self._pending) >= MAX_PENDING:
            raise TimerRefused(f"there are already {MAX_PENDING} timers; cancel one first")
        timer = Timer(next(self._ids), seconds, None if now is None else now + seconds, label.strip())
        self._pending[timer.id] = timer
        self._notify(timer, TimerStatus.SET)
        return timer

    def cancel(self, label: str = "") -> Timer:
        """The timer whose label or duration contains `label`, else the one set last."""
        wanted = label.strip().lower()
        matching = [t for t in self._pending.values() if not wanted or wanted in t.label.lower() or wanted in t.duration]
        if not matching:
            raise TimerRefused(f"there is no timer {label!r} to cancel" if wanted else "there is no timer to cancel")
        timer = max(matching, key=lambda t: t.id)
        del self._pending[timer.id]
        self._notify(timer, TimerStatus.CANCELLED)
        return timer

    def due(self, now: float) -> list[Timer]:
        """The timers due by `now`, soonest first: they are no longer pending."""
        for timer in [t for t in self._pending.values() if t.due is None]:
            self._pending[timer.id] = dataclasses.replace(timer, due=now + timer.seconds)
        out = [timer for timer in self.pending if timer.due is not None and timer.due <= now]
        for timer in out:
            del self._pending[timer.id]
            self._notify(timer, TimerStatus.DUE)
        return out
