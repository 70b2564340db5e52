"""Turn-taking: who has the floor, as one synchronous state machine.

Inputs are what the conversation hears (segmenter events, the time, typed text) and what its
turns report (a transcript, an end-of-turn judgement, how a turn ended); each returns the
commands the executor (pipeline/conversation.py) runs. No tasks, no engines, no audio: time is
passed in, so the rules are tested as a table (tests/test_turn_taking.py). The floor's states
and what moves between them are described in pipeline/turn_protocol.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from pipeline import turn_protocol as tp
from pipeline.events import EndOfTurn, SpeechStartedEvent, SpeechStoppedEvent, State, StateName
from pipeline.language import aside, meaningful, rules_for, sounds_finished, sounds_unfinished
from pipeline.segmenter import SpeechEnded, SpeechPaused


@dataclass
class _Turn:
    utterance: int | None  # which utterance it answers (None: typed)
    pcm: bytes | None
    number: int | None = None  # once released
    user_text: str | None = None  # once it answers
    failed: bool = False
    language: str = "en"  # of its words, once they are known
    unasked: str | None = None  # a reply nobody asked for just then, said as it is


class TurnTaking:
    def __init__(self, config: tp.TurnTakingConfig | None = None) -> None:
        self.config = config or tp.TurnTakingConfig()
        self.floor: tp.Floor = tp.Listening()
        self.utterance = 0  # the segmenter's current (or last) utterance
        self.number = 0  # of the latest released turn
        self._answered = 0  # the latest utterance a released turn answers
        self._no_turn = False  # the utterance in progress was judged no turn (a backchannel, noise)
        self._carry_pcm = b""  # an utterance whose turn was cut off before it was transcribed ...
        self._carry_text = ""  # ... or before any of its reply was heard: joined to the next
        self._turns: dict[int, _Turn] = {}
        self._speech = False  # an utterance is in progress
        self._unasked: list[str] = []  # replies waiting for a free floor
        self._ids = itertools.count(1)
        self._out: list[tp.Command] = []

    @property
    def held(self) -> tp.Held | None:
        floor = self.floor
        return floor.held if isinstance(floor, tp.Listening | tp.Paused) else None

    @property
    def previewing(self) -> bool:
        """Words said now are no reply's yet: worth showing as they come."""
        return self.floor == tp.Listening() and not self._no_turn

    # -- inputs: what the conversation hears ---------------------------------------------------

    def hint(self, t: float) -> list[tp.Command]:
        if isinstance(self.floor, tp.Speaking) and self.config.barge_in and self.config.interrupt_min_s > 0:
            self.floor = tp.Paused(self.floor.turn, onset=None, hinted_at=t)
            self._do(tp.PauseOutput(self.floor.turn))
        return self._flush()

    def started(self, t_start: float) -> list[tp.Command]:
        held = self.held
        if held is not None and held.silence:  # the utterance it answers was over: these words go on with it
            self._carry_pcm = self._turns[held.turn].pcm or b""
        self._drop_held()
        self.utterance += 1
        self._speech = True
        self._do(tp.Emit(SpeechStartedEvent(turn=self.number + 1)))
        return self.resumed(t_start)

    def paused(self, event: SpeechPaused) -> list[tp.Command]:
        self._do(tp.CancelPreview())  # the turn's own pass over the same words goes first
        if self._no_turn or self._ignoring:
            return self._flush()
        if isinstance(self.floor, tp.Speaking):  # released meanwhile (typed text): this is speech over it
            self._speech_over_reply(event.t_start)
        self._drop_held()
        self._hold(event.pcm, event.t_end, event.t_end + self.config.judge_after_s if self.config.judge else None)
        return self._flush()

    def resumed(self, t: float) -> list[tp.Command]:
        self._drop_held()
        self._no_turn = False
        self._speech_over_reply(t)
        return self._flush()

    def ended(self, event: SpeechEnded) -> list[tp.Command]:
        self._do(tp.CancelPreview())
        self._speech = False
        held = self.held
        # The turn this utterance belongs to: held, already released at a pause, or the next one.
        number = self.number if held is None and self._answered == self.utterance else self.number + 1
        self._do(tp.Emit(SpeechStoppedEvent(turn=number, duration_ms=round((event.t_end - event.t_start) * 1000))))
        if self._no_turn:
            self._no_turn = False
        elif held is not None:
            self._set_held(replace(held, silence=True))
            self._maybe_release(event.t_detected)
        elif self._answered != self.utterance and not self._ignoring:
            # No pause made a turn (pauses are off): one is made now, released once its words are known.
            self._hold(event.pcm, event.t_end, judge_at=None, silence=True)
        return self._flush()

    def tick(self, now: float, voiced_until: float | None) -> list[tp.Command]:
        """The time is `now`; the utterance in progress was voiced until `voiced_until` (None: no utterance)."""
        floor = self.floor
        # Counted from the onset over the reply, not the utterance's: a backchannel that resumed it does not count towards
        # the next interruption. A long one ("Mm hmm" drawn out) is told apart by its words so far, the reply still paused.
        over = (voiced_until or 0.0) - floor.onset if isinstance(floor, tp.Paused) and floor.onset is not None else 0.0
        if isinstance(floor, tp.Paused) and not floor.checking and over >= self.config.interrupt_min_s:
            self.floor = replace(floor, checking=True)
            self._do(tp.CheckWords(floor.turn))
        elif isinstance(floor, tp.Paused) and floor.hinted_at is not None and now - floor.hinted_at > self.config.hint_wait_s:
            self.floor = tp.Speaking(floor.turn)  # a click, not speech
            self._do(tp.ResumeOutput(floor.turn, "no speech followed the hint"))
        held = self.held
        if held is not None and held.judge_at is not None and now >= held.judge_at:
            self._set_held(replace(held, judge_at=None))
            self._do(tp.Judge(held.turn))
        elif held is not None and held.wait_until is not None and now >= held.wait_until:
            self._maybe_release(now)
        if self._unasked and self.floor == tp.Listening() and not self._speech and not self._turns:
            turn = next(self._ids)
            self._turns[turn] = _Turn(None, None, unasked=self._unasked.pop(0))
            self._do(tp.Prepare(turn, None, None, None, unasked=self._turns[turn].unasked))
            self._release(turn, EndOfTurn.TIMER, now)
        return self._flush()

    def unasked(self, text: str) -> list[tp.Command]:
        """Say `text` unasked (a timer is due), once the floor is free (see turn_protocol)."""
        self._unasked.append(text)
        return self._flush()

    def text(self, text: str, now: float) -> list[tp.Command]:
        return self._given(None, text, EndOfTurn.TEXT, now)

    def committed(self, pcm: bytes, now: float) -> list[tp.Command]:
        """The client says `pcm` is the user's whole turn (its own turn detection: push to talk)."""
        return self._given(pcm, None, EndOfTurn.COMMIT, now)

    def cancel(self) -> list[tp.Command]:
        """The client wants the reply stopped: one playing is interrupted, one held is dropped."""
        self._drop_held()
        if isinstance(self.floor, tp.Speaking | tp.Paused):
            self._interrupt("the client cancelled the reply")
        return self._flush()

    def _given(self, pcm: bytes | None, text: str | None, by: EndOfTurn, now: float) -> list[tp.Command]:
        """A turn the client ended itself: it interrupts any reply and is answered at once."""
        self._drop_held()
        if isinstance(self.floor, tp.Speaking | tp.Paused):
            self._interrupt("user sent text" if text is not None else "the client committed audio")
        turn = next(self._ids)
        self._turns[turn] = _Turn(None, pcm)
        self._do(tp.Prepare(turn, pcm, text, None if pcm is None else now))
        self._release(turn, by, now)
        return self._flush()

    # -- inputs: what the turns report ---------------------------------------------------------

    def transcribed(self, turn: int, text: str, now: float, language: str = "en") -> list[tp.Command]:
        info = self._turns.get(turn)
        if info is None:
            return self._flush()
        info.language = language
        floor = self.floor
        if isinstance(floor, tp.Paused) and floor.onset is not None and floor.turn != turn:
            # Spoken over the paused reply: a backchannel or noise resumes it and is no turn.
            if aside(text, rules_for(language)):
                self._resume("a backchannel or noise")
                self._forget(turn)
                return self._flush()
            self._interrupt("the user said something")
        if not meaningful(text) and not self._carry_text:
            if info.number is None:  # nothing to answer; a released turn ends with its task
                self._forget(turn)
                self._no_turn = info.utterance == self.utterance
            return self._flush()
        info.user_text = " ".join(t for t in (self._carry_text, text) if meaningful(t))
        if info.number is not None:
            self._carry_text = ""
        self._do(tp.Respond(turn, info.user_text))
        held = self.held
        if held is not None and held.turn == turn:
            self._set_held(replace(held, transcript=text))
            self._maybe_release(now)
        return self._flush()

    def words_so_far(self, text: str | None, language: str = "en") -> list[tp.Command]:
        """What the utterance over the paused reply says so far (None: it could not be transcribed)."""
        if isinstance(self.floor, tp.Paused) and self.floor.checking and (text is None or not aside(text, rules_for(language))):
            self._interrupt("the user kept speaking")
        return self._flush()

    def judged(self, turn: int, p_finished: float, now: float) -> list[tp.Command]:
        held = self.held
        if held is not None and held.turn == turn and p_finished >= self.config.threshold:
            self._set_held(replace(held, finished=True))
            self._maybe_release(now)
        return self._flush()

    def turn_done(self, turn: int, outcome: tp.Outcome, kept: bool = False) -> list[tp.Command]:
        """A turn's task ended; `kept`: some of it is in the history (heard, or a tool ran)."""
        self._done(turn, outcome, kept)
        return self._flush()

    # -- rules ---------------------------------------------------------------------------------

    def _done(self, turn: int, outcome: tp.Outcome, kept: bool) -> None:
        info = self._turns.get(turn)
        if info is None:
            return
        held = self.held
        if held is not None and held.turn == turn:
            if outcome is tp.Outcome.FAILED and isinstance(self.floor, tp.Listening):
                # Failed while held: the user is told when the turn would have been released.
                info.failed = True
                self._set_held(replace(held, transcript=held.transcript or ""))
                return
            self._set_held(None)
        floor = self.floor
        if outcome is tp.Outcome.FAILED and isinstance(floor, tp.Paused) and floor.onset is not None and floor.turn != turn:
            self._resume("the interruption could not be understood")
        elif isinstance(floor, tp.Speaking | tp.Paused) and floor.turn == turn:
            self.floor = tp.Listening(floor.held if isinstance(floor, tp.Paused) else None)
            self._do(tp.Emit(State(StateName.LISTENING, turn=info.number)))
        if info.unasked is not None and outcome is tp.Outcome.CANCELLED and not kept:
            self._unasked.insert(0, info.unasked)  # cut off before it was heard: said again later
        elif outcome is tp.Outcome.CANCELLED and info.number is not None and info.utterance != self.utterance:
            # Cut off: the next utterance continues the same question, unless some of the turn is in the history.
            if info.user_text is None:
                self._carry_pcm = (info.pcm or b"") + self._carry_pcm
            elif not kept:
                self._carry_text = info.user_text
        del self._turns[turn]

    @property
    def _ignoring(self) -> bool:
        return isinstance(self.floor, tp.Speaking | tp.Paused) and not self.config.barge_in

    def _speech_over_reply(self, onset: float) -> None:
        floor = self.floor
        if not isinstance(floor, tp.Speaking | tp.Paused) or not self.config.barge_in:
            return
        if self.config.interrupt_min_s <= 0:
            self._interrupt("user started speaking")
        elif isinstance(floor, tp.Speaking):
            self._do(tp.PauseOutput(floor.turn))
            self.floor = tp.Paused(floor.turn, onset=onset)
        elif floor.onset is None:
            self.floor = replace(floor, onset=onset, hinted_at=None)

    def _maybe_release(self, now: float) -> None:
        floor = self.floor
        held = floor.held if isinstance(floor, tp.Listening) else None
        if held is None or held.transcript is None:
            return  # decided once its words are known, and never over a paused reply
        info = self._turns[held.turn]
        rules = rules_for(info.language)
        complete = info.failed or not sounds_unfinished(held.transcript, rules)
        if held.finished and complete:
            self._release(held.turn, EndOfTurn.MODEL, now)
        elif sounds_finished(held.transcript, rules):
            self._release(held.turn, EndOfTurn.WORDS, now)
        elif held.silence and (complete or (held.wait_until is not None and now >= held.wait_until)):
            self._release(held.turn, EndOfTurn.SILENCE, now)
        elif held.silence and held.wait_until is None:
            self._set_held(replace(held, wait_until=held.t_end + self.config.unfinished_wait_s))

    def _release(self, turn: int, by: EndOfTurn, now: float) -> None:
        info = self._turns[turn]
        self.number += 1
        info.number = self.number
        if info.utterance is not None:
            self._answered = info.utterance
        if info.pcm is not None:
            self._carry_pcm = b""  # part of this turn's audio
        if info.user_text:
            self._carry_text = ""  # part of this turn's question
        self.floor = tp.Speaking(turn)
        self._do(tp.Release(turn, info.number, by, now))
        if info.failed:
            self._done(turn, tp.Outcome.FAILED, kept=False)

    def _interrupt(self, why: str) -> None:
        floor = self.floor
        assert isinstance(floor, tp.Speaking | tp.Paused)
        self.floor = tp.Listening(floor.held if isinstance(floor, tp.Paused) else None)
        self._do(tp.Interrupt(floor.turn, why))
        self._do(tp.Emit(State(StateName.LISTENING, turn=self._turns[floor.turn].number)))

    def _resume(self, why: str) -> None:
        floor = self.floor
        assert isinstance(floor, tp.Paused)
        self.floor = tp.Speaking(floor.turn)
        self._no_turn = True
        self._do(tp.ResumeOutput(floor.turn, why))

    def _hold(self, pcm: bytes, t_end: float, judge_at: float | None, silence: bool = False) -> None:
        """Prepare a reply, held, to the utterance in progress (and any carried over)."""
        turn, pcm = next(self._ids), self._carry_pcm + pcm
        self._turns[turn] = _Turn(self.utterance, pcm)
        self._set_held(tp.Held(turn, t_end, judge_at, silence=silence))
        self._do(tp.Prepare(turn, pcm, None, t_end))

    def _set_held(self, held: tp.Held | None) -> None:
        floor = self.floor
        if isinstance(floor, tp.Listening | tp.Paused):
            self.floor = replace(floor, held=held)

    def _drop_held(self) -> None:
        if self.held is not None:
            self._forget(self.held.turn)

    def _forget(self, turn: int) -> None:
        """A turn that was never released ends here, without trace."""
        held = self.held
        if held is not None and held.turn == turn:
            self._set_held(None)
        info = self._turns.pop(turn, None)
        if info is not None and info.number is None:
            self._do(tp.Drop(turn))

    def _do(self, command: tp.Command) -> None:
        self._out.append(command)

    def _flush(self) -> list[tp.Command]:
        out, self._out = self._out, []
        return out
