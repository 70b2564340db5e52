"""What an audio output has queued and what of it has played, per mark: the rules behind the AudioOutput port.

Both outputs keep their books here: rtc/outbound.py (the real track, 48 kHz, paced by
aiortc's sender) and tests/fakes.py's MemoryAudio (16 kHz, played in virtual time).
They only differ in where samples come from and when a frame is taken; what a clear
reports, when a mark starts and ends, and how loud the last second was are decided
once, here. Synchronous, no I/O: the caller passes the time in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from pipeline.ports import Playback, PlaybackKind, PlaybackListener, Played

LEVEL_MEMORY_S = 1.0  # how far back level_dbfs() can look


def dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB below full scale (-inf for digital silence)."""
    power = float(np.mean(samples.astype(np.float64) ** 2)) if len(samples) else 0.0
    return 10 * math.log10(power / 32768**2) if power > 0 else -math.inf


@dataclass
class _Chunk:
    mark: Hashable
    samples: np.ndarray  # int16 at the ledger's rate
    offset: int = 0  # samples already played


class PlaybackLedger:
    """A queue of marked int16 chunks at one rate, taken a frame at a time.

    - `take(n, t)` returns the next `n` samples (silence where the queue is empty or paused)
      for a frame that starts leaving at `t`; a mark's START is told at its first sample, its
      END when the next mark starts or the queue runs dry (more of it later starts it again).
    - `clear(t)` drops the queue and returns, for each dropped mark, how much of it had played:
      the queued ones and also the mark that played last if it ran dry just before (its writer
      was behind), since only its played/total says how much the listener heard.
    - Counts of a mark are kept until another mark has started after it, or a clear.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.paused = False
        self._queue: deque[_Chunk] = deque()
        self._totals: dict[Hashable, int] = {}
        self._played: dict[Hashable, int] = {}
        self._current: Hashable | None = None  # mark whose audio is leaving now
        self._last: Hashable | None = None  # mark that played last, kept until another starts
        self._levels: deque[tuple[float, float]] = deque()  # (t, dBFS) of frames with queued audio in them
        self._listeners: list[PlaybackListener] = []
        self.last_audible = False  # the last frame taken held queued audio

    def add_listener(self, listener: PlaybackListener) -> None:
        self._listeners.append(listener)

    # -- writer side -----------------------------------------------------------

    def write(self, mark: Hashable, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        self._queue.append(_Chunk(mark, samples))
        self._totals[mark] = self._totals.get(mark, 0) + len(samples)
        self._played.setdefault(mark, 0)

    def clear(self, t: float) -> list[Played]:
        """Drop everything queued (and end a pause) at `t`; returns what had played of each dropped mark."""
        dropped: list[Played] = []
        seen: set[Hashable] = set()
        if self._last is not None and (not self._queue or self._queue[0].mark != self._last):
            seen.add(self._last)
            dropped.append(self._count(self._last))
        for chunk in self._queue:
            if chunk.mark not in seen:
                seen.add(chunk.mark)
                dropped.append(self._count(chunk.mark))
        self._queue.clear()
        self.paused = False
        for p in dropped:
            self._forget(p.mark)
        if self._current is not None:
            self._emit(PlaybackKind.END, self._current, t)
        if self._last is not None:
            self._forget(self._last)
        self._current = self._last = None
        return dropped

    # -- reader side -----------------------------------------------------------

    def take(self, n: int, t: float) -> np.ndarray:
        """The `n` samples of the frame that starts leaving at `t`."""
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._queue and not self.paused:
            chunk = self._queue[0]
            if chunk.mark != self._current:
                if self._current is not None:
                    self._emit(PlaybackKind.END, self._current, t + filled / self.rate)
                if self._last is not None and self._last != chunk.mark:
                    self._forget(self._last)
                self._current = self._last = chunk.mark
                self._emit(PlaybackKind.START, chunk.mark, t + filled / self.rate)
            take = min(n - filled, len(chunk.samples) - chunk.offset)
            out[filled : filled + take] = chunk.samples[chunk.offset : chunk.offset + take]
            chunk.offset += take
            filled += take
            self._played[chunk.mark] = self._played.get(chunk.mark, 0) + take
            if chunk.offset >= len(chunk.samples):
                self._queue.popleft()
        self.last_audible = filled > 0
        if filled:
            self._note_level(t, out)
        if not self._queue and self._current is not None:
            self._emit(PlaybackKind.END, self._current, t + filled / self.rate)
            self._current = None
        return out

    # -- what is known ---------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Audio is queued (playing or paused)."""
        return bool(self._queue)

    @property
    def queued_samples(self) -> int:
        return sum(len(c.samples) - c.offset for c in self._queue)

    def queued(self) -> list[tuple[Hashable, np.ndarray]]:
        """(mark, samples not yet played) of each queued chunk, in order."""
        return [(c.mark, c.samples[c.offset :]) for c in self._queue]

    def level_dbfs(self, now: float, window_s: float) -> float:
        """The loudest frame with queued audio in it that started leaving within `window_s` of `now`."""
        since = now - window_s
        return max((db for t, db in self._levels if t >= since), default=-math.inf)

    # -- inside ------------------------------------------------------------------

    def _count(self, mark: Hashable) -> Played:
        return Played(mark, self._played.get(mark, 0), self._totals.get(mark, 0))

    def _note_level(self, t: float, samples: np.ndarray) -> None:
        self._levels.append((t, dbfs(samples)))
        while self._levels and self._levels[0][0] < t - LEVEL_MEMORY_S:
            self._levels.popleft()

    def _forget(self, mark: Hashable) -> None:
        self._totals.pop(mark, None)
        self._played.pop(mark, None)

    def _emit(self, kind: PlaybackKind, mark: Hashable, t: float) -> None:
        event = Playback(kind, mark, t)
        for listener in self._listeners:
            listener(event)
