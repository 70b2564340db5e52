"""A session's turn rate limit: at most so many turns in any minute, with the time passed in."""

from __future__ import annotations

from collections import deque


class RateLimit:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._starts: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Count one more at `now` (seconds), unless the minute before it already holds `per_minute`."""
        while self._starts and self._starts[0] < now - 60:
            self._starts.popleft()
        if len(self._starts) >= self.per_minute:
            return False
        self._starts.append(now)
        return True
