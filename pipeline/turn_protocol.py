"""What turn-taking (pipeline/turn_taking.py) and its executor (pipeline/conversation.py) say to
each other: the floor, the commands the machine returns, how a turn ended, and its configuration."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pipeline.events import EndOfTurn, Event
from settings import Settings


class Outcome(StrEnum):
    COMPLETED = "completed"  # the reply played to its end, or there was nothing to answer
    FAILED = "failed"  # an engine failed
    CANCELLED = "cancelled"  # interrupted, dropped or closed


# -- the floor -----------------------------------------------------------------------------
# - `Listening`: no reply is out. At a short pause a reply is prepared `held` (transcribed,
#   written, its first sentence voiced, nothing shown or played); it is released when the
#   end-of-turn model says the user finished or the long silence passes, unless the words stop
#   mid-phrase, which wait longer; speech before that drops it and the next pause makes a new one.
# - `Speaking`: a released reply, from its release until it has played.
# - `Paused`: the reply's audio is paused for the user, on a hint of voice or on speech. Words
#   other than a backchannel, or speech longer than `interrupt_min_s`, interrupt it; a backchannel
#   or noise resumes it where it paused.
# A reply nobody asked for just then (a timer that is due) waits for a free floor: `Listening`
# with nothing held, nobody speaking and no turn still ending. Then it is released like any and
# can be interrupted like any; cut off before a word of it played, it waits to be said again.


@dataclass(frozen=True)
class Held:
    """A reply prepared for the utterance in progress, not yet released."""

    turn: int
    t_end: float  # media time the user's words ended
    judge_at: float | None  # when to ask the end-of-turn model (None: asked, or no model)
    transcript: str | None = None  # known once transcribed
    finished: bool = False  # the end-of-turn model said the user had finished
    silence: bool = False  # the long silence passed
    wait_until: float | None = None  # the words stop mid-phrase: the silence releases it only then


@dataclass(frozen=True)
class Listening:
    held: Held | None = None


@dataclass(frozen=True)
class Speaking:
    turn: int


@dataclass(frozen=True)
class Paused:
    turn: int
    onset: float | None  # the user's speech over the reply; None while it is only a hint
    hinted_at: float | None = None
    held: Held | None = None  # the interruption's own turn, once it paused
    checking: bool = False  # its words so far were asked for: it was long enough to interrupt


Floor = Listening | Speaking | Paused


# -- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepare:
    """Start a turn, held: its events and audio wait for `Release`."""

    turn: int
    pcm: bytes | None
    text: str | None
    t_speech_end: float | None
    unasked: str | None = None  # no user turn: this is said as it is (a timer is due)


@dataclass(frozen=True)
class Judge:
    turn: int


@dataclass(frozen=True)
class Respond:
    """The turn's transcript is a question: answer `user_text`."""

    turn: int
    user_text: str


@dataclass(frozen=True)
class Release:
    turn: int
    number: int  # the turn's number in events, in the order turns were released
    by: EndOfTurn
    t: float


@dataclass(frozen=True)
class Drop:
    """Cancel a turn that was never released: it leaves no trace."""

    turn: int


@dataclass(frozen=True)
class Interrupt:
    turn: int
    why: str


@dataclass(frozen=True)
class PauseOutput:
    turn: int  # the reply paused


@dataclass(frozen=True)
class ResumeOutput:
    turn: int
    why: str


@dataclass(frozen=True)
class CancelPreview:
    pass


@dataclass(frozen=True)
class CheckWords:
    """Transcribe the utterance so far: speech over the reply was long enough to interrupt it, unless it is a backchannel."""

    turn: int  # the paused reply


@dataclass(frozen=True)
class Emit:
    event: Event


Command = Prepare | Judge | Respond | Release | Drop | Interrupt | PauseOutput | ResumeOutput | CancelPreview | CheckWords | Emit


@dataclass(frozen=True)
class TurnTakingConfig:
    barge_in: bool = True
    interrupt_min_s: float = 0.8  # speech over a reply this long interrupts it (0: any speech, at once)
    judge: bool = True  # an end-of-turn model is there to ask
    # Asked once the pause is this long: its P(finished) grows with the silence it hears, and its
    # authors use it after 200 ms.
    judge_after_s: float = 0.2
    threshold: float = 0.5  # P(finished) that releases a held reply
    hint_wait_s: float = 0.2  # a reply paused on a hint of voice resumes if no speech follows
    unfinished_wait_s: float = 3.0  # silence after words that stop mid-phrase before it releases the reply

    @classmethod
    def from_settings(cls, settings: Settings) -> TurnTakingConfig:
        return cls(
            barge_in=settings.barge_in,
            interrupt_min_s=settings.interrupt_min_ms / 1000,
            threshold=settings.turn_complete_threshold,
            unfinished_wait_s=settings.unfinished_silence_ms / 1000,
        )
