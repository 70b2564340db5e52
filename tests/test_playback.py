"""PlaybackLedger, the books both audio outputs keep: what a clear reports, START/END and their times, pause, levels.

At 10 samples a second, so a table's numbers are samples and tenths of a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.playback import PlaybackLedger, dbfs
from pipeline.ports import Playback, PlaybackKind, Played

pytestmark = pytest.mark.fast

RATE = 10
START, END = PlaybackKind.START, PlaybackKind.END


def tone(n: int, value: int = 1000) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def run(script: list[tuple]) -> tuple[PlaybackLedger, list[Playback]]:
    """Ops: ("write", mark, n), ("take", n, t), ("pause",), ("resume",)."""
    ledger = PlaybackLedger(RATE)
    events: list[Playback] = []
    ledger.add_listener(events.append)
    for op, *args in script:
        if op == "write":
            ledger.write(args[0], tone(args[1]))
        elif op == "take":
            ledger.take(args[0], args[1])
        elif op == "pause":
            ledger.paused = True
        elif op == "resume":
            ledger.paused = False
    return ledger, events


CLEARS = {
    "nothing played yet": ([("write", "a", 5)], [Played("a", 0, 5)]),
    "cut in the middle": ([("write", "a", 5), ("take", 2, 0.0)], [Played("a", 2, 5)]),
    "written in two chunks": ([("write", "a", 2), ("write", "a", 2), ("take", 3, 0.0)], [Played("a", 3, 4)]),
    "the last mark ran dry, nothing queued": ([("write", "a", 3), ("take", 4, 0.0)], [Played("a", 3, 3)]),
    "the last mark ran dry, the next one queued": (
        [("write", "a", 3), ("take", 4, 0.0), ("write", "b", 3)],
        [Played("a", 3, 3), Played("b", 0, 3)],
    ),
    "the last mark ran dry and more of it came": (
        [("write", "a", 2), ("take", 3, 0.0), ("write", "a", 2)],
        [Played("a", 2, 4)],
    ),
    "a finished mark is forgotten once the next starts": (
        [("write", "a", 3), ("write", "b", 3), ("take", 4, 0.0)],
        [Played("b", 1, 3)],
    ),
    "queued marks each once, in order": (
        [("write", "a", 2), ("write", "b", 2), ("write", "a", 2), ("take", 1, 0.0)],
        [Played("a", 1, 4), Played("b", 0, 2)],
    ),
    "paused mid mark": ([("write", "a", 5), ("take", 2, 0.0), ("pause",), ("take", 2, 0.2)], [Played("a", 2, 5)]),
    "nothing ever written": ([("take", 2, 0.0)], []),
}


@pytest.mark.parametrize("script, dropped", CLEARS.values(), ids=CLEARS.keys())
def test_clear_reports_what_played_of_each_dropped_mark(script: list[tuple], dropped: list[Played]) -> None:
    ledger, _ = run(script)
    assert ledger.clear(1.0) == dropped
    assert not ledger.busy and ledger.queued_samples == 0 and not ledger.paused
    # everything is forgotten: the same mark written again counts from zero
    ledger.write("a", tone(2))
    assert ledger.clear(2.0) == [Played("a", 0, 2)]


EVENTS = {
    "a mark starts and ends within one frame": ([("write", "a", 3), ("take", 4, 0.0)], [(START, "a", 0.0), (END, "a", 0.3)]),
    "the next mark starts at its first sample": (
        [("write", "a", 3), ("write", "b", 2), ("take", 4, 1.0), ("take", 4, 2.0)],
        [(START, "a", 1.0), (END, "a", 1.3), (START, "b", 1.3), (END, "b", 2.1)],
    ),
    "a mark ends when the queue runs dry, and starts again": (
        [("write", "a", 2), ("take", 2, 0.0), ("take", 2, 0.2), ("write", "a", 2), ("take", 2, 0.4)],
        [(START, "a", 0.0), (END, "a", 0.2), (START, "a", 0.4), (END, "a", 0.6)],
    ),
    "a pause neither ends nor starts anything": (
        [("write", "a", 4), ("take", 2, 0.0), ("pause",), ("take", 2, 0.2), ("resume",), ("take", 2, 0.4)],
        [(START, "a", 0.0), (END, "a", 0.6)],
    ),
    "writes while paused wait": ([("pause",), ("write", "a", 2), ("take", 2, 0.0)], []),
}


@pytest.mark.parametrize("script, expected", EVENTS.values(), ids=EVENTS.keys())
def test_start_and_end_are_told_at_the_sample_they_happen(script: list[tuple], expected: list[tuple]) -> None:
    _, events = run(script)
    assert [(e.kind, e.mark, pytest.approx(e.t)) for e in events] == expected


def test_a_clear_ends_the_playing_mark_at_its_time_and_nothing_else() -> None:
    ledger, events = run([("write", "a", 4), ("take", 2, 0.0)])
    ledger.clear(0.5)
    assert events[-1] == Playback(END, "a", 0.5)
    ledger, events = run([("write", "a", 2), ("take", 2, 0.0)])  # already ended
    ledger.clear(0.5)
    assert [e.kind for e in events] == [START, END]


def test_take_returns_the_queued_samples_in_order_then_silence() -> None:
    ledger = PlaybackLedger(RATE)
    ledger.write("a", np.arange(1, 4, dtype=np.int16))
    ledger.write("b", np.arange(4, 6, dtype=np.int16))
    ledger.write("c", np.zeros(0, dtype=np.int16))  # nothing: not even a mark
    assert ledger.queued_samples == 5 and [m for m, _ in ledger.queued()] == ["a", "b"]
    assert ledger.take(4, 0.0).tolist() == [1, 2, 3, 4]
    assert [(m, s.tolist()) for m, s in ledger.queued()] == [("b", [5])]
    ledger.paused = True
    assert ledger.take(2, 0.4).tolist() == [0, 0] and ledger.busy
    ledger.paused = False
    assert ledger.take(2, 0.6).tolist() == [5, 0] and not ledger.busy


def test_level_is_the_loudest_frame_with_audio_in_the_window() -> None:
    ledger = PlaybackLedger(RATE)
    assert ledger.level_dbfs(0.0, 1.0) == -math.inf
    ledger.write("a", tone(2, 3277))  # -20 dBFS
    ledger.write("b", tone(2, 328))  # -40 dBFS
    ledger.take(2, 0.0)
    ledger.take(2, 0.2)
    ledger.take(2, 0.4)  # silence: not a level
    assert ledger.level_dbfs(0.4, 1.0) == pytest.approx(-20.0, abs=0.01)
    assert ledger.level_dbfs(0.4, 0.2) == pytest.approx(-40.0, abs=0.01)
    assert ledger.level_dbfs(0.4, 0.1) == -math.inf
    assert dbfs(np.zeros(4, dtype=np.int16)) == -math.inf and dbfs(np.zeros(0, dtype=np.int16)) == -math.inf
