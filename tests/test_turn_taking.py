"""Turn-taking's rules as a table: inputs in, the floor and the commands out. No audio, no engines, no tasks.

Each row is a script of inputs from a fresh machine; it checks the commands the last input returned
(by kind and turn) and the floor after it. `SPEAKING` and `PAUSED` are scripts that bring the machine
to a released reply (turn 1) playing, and paused for the user's speech, to build rows on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pipeline import turn_protocol as tp
from pipeline.events import EndOfTurn, SpeechStartedEvent, SpeechStoppedEvent, State
from pipeline.segmenter import SpeechEnded, SpeechPaused
from pipeline.turn_protocol import (
    Drop,
    Emit,
    Interrupt,
    Listening,
    Outcome,
    Paused,
    Prepare,
    Release,
    ResumeOutput,
    Speaking,
)
from pipeline.turn_taking import TurnTaking

Q = "What is the capital of France?"
T = "Your timer for 2 minutes is up."


def paused(t_end: float, pcm: bytes = b"a") -> SpeechPaused:
    return SpeechPaused(pcm=pcm, t_start=0.0, t_end=t_end, t_detected=t_end + 0.2, pcm_start=0.0)


def ended(t_end: float, pcm: bytes = b"a") -> SpeechEnded:
    return SpeechEnded(pcm=pcm, t_start=0.0, t_end=t_end, t_detected=t_end + 1.2, pcm_start=0.0)


Step = tuple[Any, ...]


def play(m: TurnTaking, steps: list[Step]) -> list[tp.Command]:
    out: list[tp.Command] = []
    for name, *args in steps:
        if name == "started":
            out = m.started(*args)
        elif name == "hint":
            out = m.hint(*args)
        elif name == "paused":
            out = m.paused(paused(*args))
        elif name == "resumed":
            out = m.resumed(*args)
        elif name == "ended":
            out = m.ended(ended(*args))
        elif name == "tick":
            out = m.tick(*args)
        elif name == "text":
            out = m.text(*args)
        elif name == "heard":  # a turn's transcript
            out = m.transcribed(*args)
        elif name == "so far":
            out = m.words_so_far(*args)
        elif name == "judged":
            out = m.judged(*args)
        elif name == "done":
            out = m.turn_done(*args)
        elif name == "unasked":
            out = m.unasked(*args)
        elif name == "committed":
            out = m.committed(*args)
        elif name == "cancel":
            out = m.cancel()
        else:
            raise ValueError(name)
    return out


def kinds(commands: list[tp.Command]) -> list[str]:
    """Each command as its kind and turn, events as their type: `Release 1 model`, `Emit speech_stopped`."""
    out = []
    for c in commands:
        if isinstance(c, Emit):
            out.append(f"Emit {c.event.type}")
        elif isinstance(c, Release):
            out.append(f"Release {c.turn} {c.by}")
        elif isinstance(c, tp.Respond):
            out.append(f"Respond {c.turn} {c.user_text}")
        else:
            out.append(" ".join([type(c).__name__] + ([str(c.turn)] if hasattr(c, "turn") else [])))
    return out


# Turn 1 answers "Q", released by the model at the pause; the user is silent, its reply plays.
SPEAKING: list[Step] = [("started", 0.0), ("paused", 1.0), ("tick", 1.2, 1.0), ("heard", 1, Q, 1.2), ("judged", 1, 0.9, 1.25)]
# Then the user speaks over it from t=5, and pauses at 5.5: turn 2 is their words.
PAUSED: list[Step] = [*SPEAKING, ("started", 5.0), ("paused", 5.5)]


@dataclass(frozen=True)
class Row:
    name: str
    steps: list[Step]
    commands: list[str]
    floor: Any
    config: tp.TurnTakingConfig = tp.TurnTakingConfig()


ROWS = [
    # -- a held reply at the pause, released by the model, the silence, or neither -----------------
    Row("a pause prepares a held reply", [("started", 0.0), ("paused", 1.0)], ["CancelPreview", "Prepare 1"], "held"),
    Row("the model is not asked before 200 ms of pause", [("started", 0.0), ("paused", 1.0), ("tick", 1.19, 1.0)], [], "held"),
    Row("the model is asked at 200 ms of pause", [("started", 0.0), ("paused", 1.0), ("tick", 1.2, 1.0)], ["Judge 1"], "held"),
    Row("its words known, a held reply prepares its answer", [("started", 0.0), ("paused", 1.0), ("heard", 1, Q, 1.1)], [f"Respond 1 {Q}"], "held"),
    Row("the model saying finished releases it", SPEAKING, ["Release 1 model"], Speaking(1)),
    Row("finished, but not before its words are known", [("started", 0.0), ("paused", 1.0), ("judged", 1, 0.9, 1.25)], [], "held"),
    Row("the model saying unfinished keeps it held", [("started", 0.0), ("paused", 1.0), ("heard", 1, Q, 1.1), ("judged", 1, 0.1, 1.25)], [], "held"),
    Row("then the long silence releases it",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, Q, 1.1), ("judged", 1, 0.1, 1.25), ("ended", 1.0)],
        ["CancelPreview", "Emit speech_stopped", "Release 1 silence"], Speaking(1)),
    Row("speech again drops it unheard", [("started", 0.0), ("paused", 1.0), ("resumed", 1.5)], ["Drop 1"], Listening()),
    Row("and the next pause prepares a new one", [("started", 0.0), ("paused", 1.0), ("resumed", 1.5), ("paused", 2.0)],
        ["CancelPreview", "Prepare 2"], "held"),
    Row("noise in a held reply's words: no turn, dropped",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "[BLANK_AUDIO]", 1.1)], ["Drop 1"], Listening()),
    Row("and its silence makes none either",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "", 1.1), ("ended", 1.0)], ["CancelPreview", "Emit speech_stopped"], Listening()),
    # -- words that stop mid-phrase --------------------------------------------------------------
    Row("words that stop mid-phrase veto the model",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "What is the capital of", 1.1), ("judged", 1, 0.9, 1.25)], [], "held"),
    Row("and the long silence does not release them",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "How many legs does?", 1.1), ("ended", 1.0)],
        ["CancelPreview", "Emit speech_stopped"], "held"),
    Row("the longer wait does",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "How many legs does?", 1.1), ("ended", 1.0), ("tick", 3.99, None), ("tick", 4.0, None)],
        ["Release 1 silence"], Speaking(1)),
    Row("speech before it continues the same question",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "What is the capital of", 1.1), ("ended", 1.0), ("started", 3.0)],
        ["Drop 1", "Emit speech_started"], Listening()),
    # -- words that end a question beyond doubt (Mandarin) ----------------------------------------------
    Row("a Mandarin question ending in its particle is released at the pause, the model not asked",
        [("started", 0.0), ("paused", 1.0), ("heard", 1, "你去过北京吗", 1.1, "zh")], ["Respond 1 你去过北京吗", "Release 1 words"], Speaking(1)),
    Row("or in a question mark", [("started", 0.0), ("paused", 1.0), ("heard", 1, "中国的首都是哪里？", 1.1, "zh")],
        ["Respond 1 中国的首都是哪里？", "Release 1 words"], Speaking(1)),
    Row("a Mandarin statement waits for the model", [("started", 0.0), ("paused", 1.0), ("heard", 1, "我想去北京。", 1.1, "zh")],
        ["Respond 1 我想去北京。"], "held"),
    Row("an English question mark does not end the turn", [("started", 0.0), ("paused", 1.0), ("heard", 1, Q, 1.1, "en")], [f"Respond 1 {Q}"], "held"),
    # -- without pauses (TURN_PAUSE_MS=0), or without an end-of-turn model ------------------------
    Row("no pause: the silence makes the turn", [("started", 0.0), ("ended", 1.0)], ["CancelPreview", "Emit speech_stopped", "Prepare 1"], "held"),
    Row("released once its words are known", [("started", 0.0), ("ended", 1.0), ("heard", 1, Q, 2.3)], [f"Respond 1 {Q}", "Release 1 silence"],
        Speaking(1)),
    Row("no model: nothing is judged", [("started", 0.0), ("paused", 1.0), ("tick", 1.5, 1.0)], [], "held", tp.TurnTakingConfig(judge=False)),
    # -- speech over a reply ------------------------------------------------------------------------
    Row("a hint of voice pauses the reply", [*SPEAKING, ("hint", 5.04)], ["PauseOutput 1"], Paused(1, onset=None, hinted_at=5.04)),
    Row("no speech after the hint: it resumes", [*SPEAKING, ("hint", 5.04), ("tick", 5.25, None)], ["ResumeOutput 1"], Speaking(1)),
    Row("speech pauses the reply", [*SPEAKING, ("started", 5.0)], ["Emit speech_started", "PauseOutput 1"], Paused(1, onset=5.0)),
    Row("speech after a hint keeps it paused", [*SPEAKING, ("hint", 5.04), ("started", 5.0)], ["Emit speech_started"], Paused(1, onset=5.0)),
    Row("the interruption's pause prepares its turn", PAUSED, ["CancelPreview", "Prepare 2"], "paused+held"),
    Row("words other than a backchannel interrupt", [*PAUSED, ("heard", 2, "Stop. What about Spain?", 5.6)],
        ["Interrupt 1", "Emit state", "Respond 2 Stop. What about Spain?"], "held"),
    Row("a backchannel resumes the reply", [*PAUSED, ("heard", 2, "Mm-hmm.", 5.6)], ["ResumeOutput 1", "Drop 2"], Speaking(1)),
    Row("so does a cough (no words)", [*PAUSED, ("heard", 2, "", 5.6)], ["ResumeOutput 1", "Drop 2"], Speaking(1)),
    Row("and the backchannel's silence makes no turn", [*PAUSED, ("heard", 2, "Yeah.", 5.6), ("ended", 5.5)],
        ["CancelPreview", "Emit speech_stopped"], Speaking(1)),
    Row("speech long enough to interrupt: its words so far are asked for", [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82)],
        ["CheckWords 1"], Paused(1, onset=5.0, checking=True)),
    Row("words so far other than a backchannel interrupt", [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", "I think that")],
        ["Interrupt 1", "Emit state"], Listening()),
    Row("so does speech that could not be transcribed", [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", None)],
        ["Interrupt 1", "Emit state"], Listening()),
    Row("a long backchannel keeps the reply paused for its pause to decide",
        [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", "Mm hmm"), ("tick", 6.5, 6.5)], [], Paused(1, onset=5.0, checking=True)),
    Row("and resumes it there", [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", "Mm hmm"), ("paused", 6.1), ("heard", 2, "Mm hmm.", 6.2)],
        ["ResumeOutput 1", "Drop 2"], Speaking(1)),
    Row("not before", [*SPEAKING, ("started", 5.0), ("tick", 5.78, 5.78)], [], Paused(1, onset=5.0)),
    Row("after a backchannel resumed it, the length counts from the new onset",
        [*PAUSED, ("heard", 2, "Mm-hmm.", 5.6), ("resumed", 6.0), ("tick", 6.5, 6.5)], [], Paused(1, onset=6.0)),
    Row("an interruption that cannot be understood resumes the reply", [*PAUSED, ("done", 2, Outcome.FAILED)], ["ResumeOutput 1"], Speaking(1)),
    Row("INTERRUPT_MIN_MS=0: speech interrupts at once", [*SPEAKING, ("started", 5.0)], ["Emit speech_started", "Interrupt 1", "Emit state"],
        Listening(), tp.TurnTakingConfig(interrupt_min_s=0)),
    Row("BARGE_IN=false: speech over the reply is ignored", [*SPEAKING, ("started", 5.0), ("paused", 5.5), ("ended", 5.5)],
        ["CancelPreview", "Emit speech_stopped"], Speaking(1), tp.TurnTakingConfig(barge_in=False)),
    Row("own echo gated: a turn that played to its end", [*SPEAKING, ("done", 1, Outcome.COMPLETED)], ["Emit state"], Listening()),
    # -- typed text ---------------------------------------------------------------------------------
    Row("typed text is a turn at once", [("text", "Tell me a joke.", 0.0)], ["Prepare 1", "Release 1 text"], Speaking(1)),
    Row("typed text interrupts the reply", [*SPEAKING, ("text", "Never mind.", 5.0)], ["Interrupt 1", "Emit state", "Prepare 2", "Release 2 text"],
        Speaking(2)),
    Row("typed text drops a held reply", [("started", 0.0), ("paused", 1.0), ("text", "Hi.", 1.1)], ["Drop 1", "Prepare 2", "Release 2 text"],
        Speaking(2)),
    # -- a Realtime client's own turn detection and controls ---------------------------------------------
    Row("committed audio is a turn at once", [("committed", b"pcm", 2.0)], ["Prepare 1", "Release 1 commit"], Speaking(1)),
    Row("committed audio interrupts the reply", [*SPEAKING, ("committed", b"pcm", 5.0)],
        ["Interrupt 1", "Emit state", "Prepare 2", "Release 2 commit"], Speaking(2)),
    Row("a cancel interrupts the reply", [*SPEAKING, ("cancel",)], ["Interrupt 1", "Emit state"], Listening()),
    Row("and drops a held one", [("started", 0.0), ("paused", 1.0), ("cancel",)], ["Drop 1"], Listening()),
    Row("with nothing playing it does nothing", [("cancel",)], [], Listening()),
    # -- a reply nobody asked for just then (a timer is due) --------------------------------------------
    Row("it is said at the next tick when the floor is free", [("unasked", T), ("tick", 0.0, None)], ["Prepare 1", "Release 1 timer"],
        Speaking(1)),
    Row("it waits while the user speaks", [("started", 0.0), ("unasked", T), ("tick", 0.5, 0.5)], [], Listening()),
    Row("and while their turn is held", [("started", 0.0), ("paused", 1.0), ("unasked", T), ("tick", 1.1, 1.0)], [], "held"),
    Row("and while a reply plays", [*SPEAKING, ("unasked", T), ("ended", 1.0), ("tick", 2.0, None)], [], Speaking(1)),
    Row("then it is said", [*SPEAKING, ("unasked", T), ("ended", 1.0), ("done", 1, Outcome.COMPLETED), ("tick", 3.0, None)],
        ["Prepare 2", "Release 2 timer"], Speaking(2)),
    Row("speech pauses it like any reply", [("unasked", T), ("tick", 0.0, None), ("started", 1.0)], ["Emit speech_started", "PauseOutput 1"],
        Paused(1, onset=1.0)),
    Row("cut off before a word of it was heard, it is said again",
        [("unasked", T), ("tick", 0.0, None), ("text", "Stop.", 0.5), ("done", 1, Outcome.CANCELLED, False), ("done", 2, Outcome.COMPLETED),
         ("tick", 3.0, None)], ["Prepare 3", "Release 3 timer"], Speaking(3)),
    Row("cut off after some of it was heard, it is not",
        [("unasked", T), ("tick", 0.0, None), ("text", "Stop.", 0.5), ("done", 1, Outcome.CANCELLED, True), ("done", 2, Outcome.COMPLETED),
         ("tick", 3.0, None)], [], Listening()),
    # -- failures and cut-offs ------------------------------------------------------------------------
    Row("a held reply that failed stays held", [("started", 0.0), ("paused", 1.0), ("done", 1, Outcome.FAILED)], [], "held"),
    Row("and is told when the silence would release it", [("started", 0.0), ("paused", 1.0), ("done", 1, Outcome.FAILED), ("ended", 1.0)],
        ["CancelPreview", "Emit speech_stopped", "Release 1 silence", "Emit state"], Listening()),
    Row("a reply cut off before it was heard: its words join the next question",
        [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", "and"), ("done", 1, Outcome.CANCELLED, False), ("paused", 6.0), ("heard", 2, "and Spain?", 6.1)],
        [f"Respond 2 {Q} and Spain?"], "held", tp.TurnTakingConfig()),
    Row("one cut off after some of it was heard: they do not",
        [*SPEAKING, ("started", 5.0), ("tick", 5.82, 5.82), ("so far", "and"), ("done", 1, Outcome.CANCELLED, True), ("paused", 6.0), ("heard", 2, "and Spain?", 6.1)],
        ["Respond 2 and Spain?"], "held"),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_rule(row: Row) -> None:
    m = TurnTaking(row.config)
    assert kinds(play(m, row.steps)) == row.commands
    if row.floor == "held":
        assert isinstance(m.floor, Listening) and m.floor.held is not None
    elif row.floor == "paused+held":
        assert isinstance(m.floor, Paused) and m.floor.held is not None
    else:
        assert m.floor == row.floor


def test_released_turns_are_numbered_in_order_and_ids_are_unique() -> None:
    m = TurnTaking()
    out = play(m, [("started", 0.0), ("paused", 1.0), ("resumed", 1.5), ("paused", 2.0), ("heard", 2, Q, 2.1), ("judged", 2, 0.9, 2.2)])
    (release,) = [c for c in out if isinstance(c, Release)]
    assert (release.turn, release.number, release.by) == (2, 1, EndOfTurn.MODEL), "the dropped turn 1 took no number"
    out = play(m, [("done", 2, Outcome.COMPLETED), ("started", 4.0)])
    assert [c.event for c in out if isinstance(c, Emit)] == [SpeechStartedEvent(turn=2)]
    out = play(m, [("text", "Hi.", 5.0)])
    assert [(c.turn, c.number) for c in out if isinstance(c, Release)] == [(3, 2)]


def test_an_utterance_answered_at_its_pause_stops_as_that_turn() -> None:
    m = TurnTaking()
    out = play(m, [*SPEAKING, ("resumed", 1.4), ("paused", 1.9), ("ended", 2.0)])
    assert [c.event for c in out if isinstance(c, Emit)] == [SpeechStoppedEvent(turn=2, duration_ms=2000)], "its words went on: a new turn"
    m = TurnTaking()
    out = play(m, [*SPEAKING, ("ended", 1.0)])
    assert [c.event for c in out if isinstance(c, Emit)] == [SpeechStoppedEvent(turn=1, duration_ms=1000)]


def test_the_interrupted_turn_is_named_in_its_listening_state() -> None:
    m = TurnTaking()
    out = play(m, [*PAUSED, ("heard", 2, "Stop.", 5.6)])
    assert [c.event for c in out if isinstance(c, Emit)] == [State("listening", turn=1)]  # type: ignore[arg-type]
    assert [c for c in out if isinstance(c, Interrupt)] == [Interrupt(1, "the user said something")]


def test_words_so_far_are_previewed_only_while_no_reply_is_held_or_out() -> None:
    m = TurnTaking()
    play(m, [("started", 0.0)])
    assert m.previewing
    play(m, [("paused", 1.0)])
    assert not m.previewing
    play(m, [("heard", 1, Q, 1.1), ("judged", 1, 0.9, 1.2)])
    assert not m.previewing
    play(m, [("done", 1, Outcome.COMPLETED)])
    assert m.previewing


def test_every_command_kind_is_used() -> None:
    used = {type(c) for row in ROWS for c in play(TurnTaking(row.config), row.steps)}
    used |= {type(c) for c in play(TurnTaking(), [*SPEAKING[:3]])}
    assert {tp.CheckWords, Drop, Emit, Interrupt, tp.Judge, tp.PauseOutput, Prepare, Release, tp.Respond, ResumeOutput} <= used
