"""The assistant's side of the conversation: who speaks when.

Audio frames go through the segmenter; its events drive a small state machine
over at most two turns (pipeline/turn.py):

- the *pending* turn answers the utterance still in progress. At a short pause
  (`TURN_PAUSE_MS`) it starts at once, held: transcribed, written and voiced,
  but nothing is shown or played. The end-of-turn model, asked once the pause
  is `JUDGE_AFTER_S` long, releases it when it says the user has finished (and
  the words so far do not stop mid-phrase), the long silence (`VAD_SILENCE_MS`)
  releases it anyway, and speech before either throws it away unheard: the
  utterance goes on and the next pause makes a new one over all of it.
- the *speaking* turn is the released one, until its reply has played.

Speech over the speaking turn pauses its audio at once (on a hint of voice,
`INTERRUPT_PAUSE_MS`; undone within 200 ms if it does not grow into speech). Speech longer than
`INTERRUPT_MIN_MS`, or words other than a backchannel, cancel it; a cough, a
"mm-hmm" or noise resume it where it paused, and start no turn. What played
decides the history: only what the user heard, marked as cut off.

While the reply plays, the segmenter's level gate is raised to the reply's own
recent level minus `ECHO_GATE_DB`, so the assistant's voice coming back into the
microphone is not taken for the user's.

An utterance whose reply was cut off before any of it was heard is joined to the
next utterance, which continues the same question.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass

from pipeline.engines.base import EngineError, Engines
from pipeline.events import Error, Event, Reply, SpeechStartedEvent, SpeechStoppedEvent, State, StateName
from pipeline.history import History
from pipeline.ports import AudioOutput, EventSink, Playback
from pipeline.preview import Preview
from pipeline.segmenter import RATE, Segmenter, SegmenterConfig, SpeechEnded, SpeechHint, SpeechPaused, SpeechResumed, SpeechStarted
from pipeline.turn import Turn, failures_of, meaningful
from settings import Settings

log = logging.getLogger("pipeline.conversation")

# Chosen by `python -m bench.llm_choice` on the evaluation set's tune half: a plain, factual
# instruction that asks for the answer first beats a chattier one on a small model, and one or two
# short sentences keep the first sentence (what the voice waits for) short.
DEFAULT_SYSTEM_PROMPT = (
    "You are a knowledgeable and accurate voice assistant. Your words are spoken aloud. "
    "Reply in one or two short, correct sentences that start with the answer, in plain words with no lists or markdown. "
    "Remember what the user told you earlier in the conversation."
)

HINT_WAIT_S = 0.2  # a reply paused on a hint of speech resumes if no speech follows within this
ECHO_WINDOW_S = 0.5  # how far back the echo gate looks at what was played (echo path + jitter buffers)
TURN_MODEL_AUDIO_S = 8.0  # what the end-of-turn model sees of an utterance
# The end-of-turn model is asked once the pause is this long, even when the reply is prepared
# sooner (TURN_PAUSE_MS): its P(finished) grows with the silence it hears, and Smart Turn is used
# after 200 ms by its authors (Pipecat's stop_secs). Asked after 100 ms it called fewer finished
# questions finished and the held reply waited for the long silence (`python -m bench.smart_turn
# --pause 0.1`; `bench turns --engines standin --quick`: 2 of 4 plain questions released by the
# model, p50 796 ms; asked at 200 ms, 3 of 4 and 379 ms).
JUDGE_AFTER_S = 0.2

_BACKCHANNELS = {
    "yeah", "yes", "yep", "yup", "okay", "ok", "right", "sure", "alright", "cool", "nice", "great",
    "uh-huh", "uh huh", "mm-hmm", "mhm", "i see", "got it", "oh", "ah", "aha", "wow", "really", "true", "exactly",
}  # fmt: skip
_HUM = re.compile(r"^(?=[mhu-]*m)[mhu]+(?:-[mhu]+)*$|^uh-huh$")  # mm, hmm, mhm, mm-hmm, mm-mm, uh-huh (a hum, not "uh")


# Words a finished sentence rarely ends with: the speaker paused mid-phrase ("What is the capital of").
# Articles, possessives, conjunctions, prepositions, fillers. Not pronouns, auxiliaries or copulas:
# "Can you hear me?", "What do you do?", "Do you know what day it is?" are finished. A stranded
# preposition ("Where are you from?") only costs the wait for the long silence, never a talk-over.
_DANGLING = {
    "the", "a", "an", "my", "your", "his", "her", "their", "our", "its",
    "and", "or", "but", "because", "if", "so", "than", "as", "nor",
    "of", "to", "with", "about", "for", "in", "on", "at", "from", "by", "into", "onto", "between",
    "um", "uh", "er", "erm", "very",
}  # fmt: skip
# Lead-ins that announce the question rather than ask it: "Can you tell me …", "I'd like to know …".
_LEAD_INS = {("tell", "me"), ("show", "me"), ("give", "me"), ("remind", "me"), ("teach", "me"), ("tell", "us"), ("show", "us"),
             ("to", "know"), ("wondering",), ("wonder",)}  # fmt: skip


def sounds_unfinished(text: str) -> bool:
    """True when a transcript visibly stops mid-phrase: a trailing ellipsis, comma or dash, or a dangling word."""
    stripped = text.strip()
    if stripped.endswith(("...", "…", ",", "-", "—")):
        return True
    words = re.sub(r"[^\w\s']", " ", stripped.lower()).split()
    return bool(words) and (words[-1] in _DANGLING or tuple(words[-2:]) in _LEAD_INS or tuple(words[-1:]) in _LEAD_INS)


def is_backchannel(text: str) -> bool:
    """True for "mm-hmm", "Yeah.", "Okay, okay.", "Uh-huh." …: a listener's signal, not a turn."""
    words = re.sub(r"[^\w\s'-]", " ", text.lower()).split()
    if not words or len(words) > 4:
        return False
    phrase = " ".join(words)
    if phrase in _BACKCHANNELS:
        return True
    return all(w in _BACKCHANNELS or _HUM.match(w) for w in words)


@dataclass(frozen=True)
class ConversationConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    barge_in: bool = True
    history_turns: int = 16
    history_chars: int = 6000
    max_turns_per_minute: int = 20
    max_reply_chars: int = 1500
    log_content: bool = False  # transcripts and replies in the logs
    interrupt_min_ms: int = 800  # speech over a reply this long cancels it (0: any speech, at once)
    echo_gate_db: float = 20.0  # 0: off
    turn_complete_threshold: float = 0.5
    partial_every_ms: int = 1000  # a pass over the words so far after each this much speech (0: off)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationConfig:
        return cls(
            system_prompt=settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
            barge_in=settings.barge_in,
            history_turns=settings.history_turns,
            history_chars=settings.history_chars,
            max_turns_per_minute=settings.max_turns_per_minute,
            max_reply_chars=settings.max_reply_chars,
            log_content=settings.log_content,
            interrupt_min_ms=settings.interrupt_min_ms,
            echo_gate_db=settings.echo_gate_db,
            turn_complete_threshold=settings.turn_complete_threshold,
            partial_every_ms=settings.partial_every_ms,
        )


class Conversation:
    def __init__(
        self, audio: AudioOutput, emit: EventSink, engines: Engines, segmenter: SegmenterConfig, config: ConversationConfig
    ) -> None:
        self._audio = audio
        self._send = emit
        self._engines = engines
        self._segmenter = Segmenter(segmenter)
        self.config = config
        self.history = History(config.system_prompt, config.history_turns, config.history_chars)
        self.state: StateName | None = None
        self._turn_id = 0  # of the latest turn released to the user
        self._utterance = 0  # the segmenter's current (or last) utterance
        self._pending: Turn | None = None  # held: answers the utterance in progress
        self._judge_due: tuple[Turn, float] | None = None  # a pending turn, and the media time the end-of-turn model is asked about it
        self._speaking: Turn | None = None  # released and not interrupted, until its reply has played
        self._previous: Turn | None = None  # the turn released before: its history comes first
        self._turns: set[Turn] = set()  # every turn not finished yet
        self._barge_onset: float | None = None  # set while the speaking turn is paused for the user's speech
        self._hinted_at: float | None = None  # set while it is paused on a hint of speech, not yet confirmed
        self._backchannel = False  # the utterance in progress was judged not to be a turn
        self._answered = 0  # the latest utterance a released turn answers
        self._carry_pcm = b""  # an utterance cut off before it was transcribed ...
        self._carry_text = ""  # ... or before any of its reply was heard: joined to the next
        self._now = 0.0  # media time of the end of the latest frame
        self._closed = False
        self._turn_starts: deque[float] = deque()
        self._preview = Preview(engines, self._emit, config.partial_every_ms / 1000)
        audio.add_listener(self._on_playback)
        self._emit(State(StateName.LISTENING))

    # -- inputs ----------------------------------------------------------------

    def on_audio(self, pcm: bytes, t: float) -> None:
        self._now = t + len(pcm) / 2 / RATE
        floor = None
        if self.config.echo_gate_db > 0 and self._audio.busy:
            floor = self._audio.level_dbfs(ECHO_WINDOW_S) - self.config.echo_gate_db
        for event in self._segmenter.process(pcm, t, floor):
            if isinstance(event, SpeechHint):
                self._on_hint(event)
            elif isinstance(event, SpeechStarted):
                self._on_speech_started(event)
            elif isinstance(event, SpeechPaused):
                self._on_pause(event)
            elif isinstance(event, SpeechResumed):
                self._on_resumed(event)
            else:
                self._on_speech_ended(event)
        if self._barge_onset is not None and self._segmenter.speech_span() >= self.config.interrupt_min_ms / 1000:
            self._interrupt_speaking("the user kept speaking")
        if self._segmenter.speaking and self._pending is None and self._speaking is None and not self._backchannel:
            self._preview.feed(
                self._utterance,
                self._segmenter.speech_span(),
                self._segmenter.utterance_pcm,
                self.history.user_context,
            )
        if self._judge_due is not None and self._now >= self._judge_due[1]:
            turn, self._judge_due = self._judge_due[0], None
            if turn is self._pending:  # not released, dropped or finished meanwhile
                audio = self._segmenter.utterance_pcm()[-int(TURN_MODEL_AUDIO_S * RATE) * 2 :]
                turn.spawn(self._judge(turn, audio), f"turn-{turn.id}-judge")
        if self._hinted_at is not None and self._now - self._hinted_at > HINT_WAIT_S:
            self._hinted_at = None
            if self._barge_onset is None:
                self._audio.resume()  # it was a click, not speech

    def on_text(self, text: str) -> None:
        self._drop_pending()
        if self._speaking is not None:
            self._interrupt_speaking("user sent text")
        turn = self._new_turn(text=text)
        if turn is not None:
            turn.metrics.released_by = "text"
            self._begin(turn)

    async def close(self) -> None:
        self._closed = True
        await self._preview.close()
        turns = list(self._turns)
        for turn in turns:
            turn.cancel()
        for turn in turns:
            await turn.wait()
        self._audio.clear()

    # -- segmenter events --------------------------------------------------------

    def _on_speech_started(self, event: SpeechStarted) -> None:
        self._utterance += 1
        self._backchannel = False
        self._emit(SpeechStartedEvent(turn=self._turn_id + 1))
        self._speech_over_reply(event.t_start)

    def _on_hint(self, event: SpeechHint) -> None:
        """Maybe speech over the reply: pause it now (it costs nothing to resume) and see."""
        if self._speaking is not None and self.config.barge_in and self.config.interrupt_min_ms > 0 and self._barge_onset is None:
            self._audio.pause()
            self._hinted_at = event.t_detected

    def _speech_over_reply(self, onset: float) -> None:
        self._hinted_at = None
        if self._speaking is None or not self.config.barge_in:
            return
        if self.config.interrupt_min_ms <= 0:
            self._interrupt_speaking("user started speaking")
        elif self._barge_onset is None:
            log.info("turn %d paused: the user is speaking", self._speaking.id)
            self._audio.pause()
            self._barge_onset = onset

    def _on_pause(self, event: SpeechPaused) -> None:
        self._preview.cancel()  # the turn's own pass over the same words goes first
        if self._backchannel or self._ignoring_speech:
            return
        self._drop_pending()
        turn = self._new_turn(pcm=self._carry_pcm + event.pcm, t_speech_end=event.t_end, held=True)
        if turn is None:
            return
        self._pending = turn
        self._begin(turn)
        if self._engines.turn is not None:
            self._judge_due = (turn, event.t_end + JUDGE_AFTER_S)

    def _on_resumed(self, event: SpeechResumed) -> None:
        if self._pending is not None:
            log.debug("turn %d dropped unheard: the user went on", self._pending.id)
            self._drop_pending()
        self._backchannel = False
        self._speech_over_reply(event.t_resumed)

    def _on_speech_ended(self, event: SpeechEnded) -> None:
        self._preview.cancel()
        pending = self._pending
        # The turn this utterance belongs to: held, already released at a pause, or the next one.
        turn_id = pending.id if pending else self._turn_id if self._answered == self._utterance else self._turn_id + 1
        self._emit(SpeechStoppedEvent(turn=turn_id, duration_ms=round((event.t_end - event.t_start) * 1000)))
        if self._backchannel:
            self._backchannel = False
            return
        if pending is not None:
            self._release(pending, "silence")
            return
        if self._answered == self._utterance:
            return  # released at a pause already
        if self._ignoring_speech:
            log.info("utterance ignored: the assistant is speaking and barge-in is off")
            return
        turn = self._new_turn(pcm=self._carry_pcm + event.pcm, t_speech_end=event.t_end)
        if turn is not None:
            turn.metrics.endpoint_ms = round((event.t_detected - event.t_end) * 1000, 1)
            turn.metrics.released_by = "silence"
            self._begin(turn)

    @property
    def _ignoring_speech(self) -> bool:
        return self._speaking is not None and not self.config.barge_in

    # -- turn control ------------------------------------------------------------

    def _new_turn(
        self, *, pcm: bytes | None = None, text: str | None = None, t_speech_end: float | None = None, held: bool = False
    ) -> Turn | None:
        if self._closed or (not held and not self._count_turn()):
            return None
        return Turn(
            self._turn_id + 1,  # a speculative turn takes its number only when released
            self._engines,
            self._audio,
            self._emit,
            pcm=pcm,
            text=text,
            utterance=self._utterance if pcm is not None else None,
            t_speech_end=t_speech_end,
            held=held,
            max_reply_chars=self.config.max_reply_chars,
            stt_prompt=self.history.user_context() if pcm is not None else "",
        )

    def _count_turn(self) -> bool:
        """Rate limit: a turn counts when it is released to the user."""
        now = time.monotonic()
        while self._turn_starts and self._turn_starts[0] < now - 60:
            self._turn_starts.popleft()
        if len(self._turn_starts) >= self.config.max_turns_per_minute:
            self._emit(Error("rate", f"too many turns: at most {self.config.max_turns_per_minute} a minute; please wait a moment"))
            return False
        self._turn_starts.append(now)
        return True

    def _begin(self, turn: Turn) -> None:
        self._turns.add(turn)
        turn.start(self._drive(turn))  # scheduled, not run: the events below still come first
        if not turn.held:
            self._released(turn)

    def _release(self, turn: Turn, why: str) -> None:
        if self._pending is turn:
            self._pending = None
        if not turn.held:
            return
        if not self._count_turn():
            turn.cancel()
            return
        turn.metrics.released_by = "model" if why == "model" else "silence"
        turn.release(self._now)
        self._released(turn)

    def _released(self, turn: Turn) -> None:
        """`turn` is the user's now: numbered, and the reply they will hear next unless it is an interruption."""
        self._turn_id = turn.id
        if turn.utterance is not None:
            self._answered = turn.utterance
        if turn.pcm is not None:
            self._carry_pcm = b""  # it is part of this turn's audio
        if turn.user_text:
            self._carry_text = ""  # it is part of this turn's question
        if self._barge_onset is None:
            self._adopt(turn)

    def _adopt(self, turn: Turn) -> None:
        if turn.done:
            return
        self._speaking = turn
        if not turn.transcribed:
            turn.emit(State(StateName.TRANSCRIBING, turn=turn.id))

    def _drop_pending(self) -> None:
        turn, self._pending = self._pending, None
        if turn is not None:
            turn.cancel()

    async def _judge(self, turn: Turn, pcm: bytes) -> None:
        """Ask the end-of-turn model about the pause that made `turn`; release it if the user finished."""
        detector = self._engines.turn
        assert detector is not None
        started = time.monotonic()
        try:
            async with failures_of("turn"):
                p = await detector.complete(pcm, RATE)
        except EngineError as exc:
            log.warning("end-of-turn model failed (%s); waiting for the silence instead", exc.message)
            return
        turn.metrics.turn_detect_ms = round((time.monotonic() - started) * 1000, 1)
        turn.metrics.turn_complete = round(p, 3)
        if p < self.config.turn_complete_threshold:
            return
        # The model hears intonation only, and synthetic or flat voices fool it; words that
        # visibly stop mid-phrase veto it (the transcript is needed for the reply anyway).
        text = await turn.wait_transcript()
        if sounds_unfinished(text):
            log.debug("turn %d: the model says finished but %r does not", turn.id, text if self.config.log_content else "the text")
            return
        if self._pending is turn:
            self._release(turn, "model")

    def _interrupt_speaking(self, why: str) -> None:
        turn, self._speaking, self._barge_onset, self._hinted_at = self._speaking, None, None, None
        if turn is None:
            self._audio.resume()
            return
        log.info("turn %d interrupted: %s", turn.id, why)
        turn.interrupt()
        self._emit(State(StateName.LISTENING, turn=turn.id))

    def _resume_speaking(self, why: str) -> None:
        log.info("turn %d resumed: %s", self._speaking.id if self._speaking else 0, why)
        self._barge_onset = None
        self._backchannel = True
        self._audio.resume()

    # -- one turn ------------------------------------------------------------------

    async def _drive(self, turn: Turn) -> None:
        stage = "stt"
        try:
            text = await turn.transcribe()
            if self._barge_onset is not None and self._speaking is not None and self._speaking is not turn:
                # Spoken over a reply that is paused for it: a backchannel or noise resumes the
                # reply and is no turn; anything else ends the reply and is the next turn.
                if not meaningful(text) or is_backchannel(text):
                    if self.config.log_content:
                        log.info("turn %d: %r is no interruption", turn.id, text)
                    self._resume_speaking("a backchannel or noise")
                    return
                self._interrupt_speaking("the user said something")
                if not turn.held:
                    self._adopt(turn)
            if not meaningful(text) and not self._carry_text:
                log.info("turn %d: empty or noise-only transcript, no reply", turn.id)
                if not turn.held:
                    turn.emit(State(StateName.LISTENING, turn=turn.id))
                return
            previous, self._previous = self._previous, turn
            if previous is not None:
                await previous.wait()  # an interrupted reply commits its history first
            # The question cut off before it continues here, even if these words were lost in noise.
            user_text = " ".join(t for t in (self._carry_text, text) if meaningful(t))
            if not turn.held:  # a held turn's carry is cleared when it is released
                self._carry_text = ""
            if self.config.log_content:
                log.info("turn %d: user said %r", turn.id, user_text)
            stage = "llm"
            await turn.respond(self.history.messages(user_text), user_text)
            reply = turn.reply.strip()
            self.history.add_turn(user_text, reply)
            turn.emit(Reply(reply, interrupted=False, heard=reply, turn=turn.id))
            turn.emit(State(StateName.LISTENING, turn=turn.id))
        except asyncio.CancelledError:
            self._settle_interrupted(turn)
            raise
        except EngineError as exc:
            log.warning("turn %d: %s failed: %s", turn.id, exc.stage, exc.message)
            self._failed(turn, exc)
        except Exception:
            log.exception("turn %d failed in %s", turn.id, stage)
            self._failed(turn, EngineError(stage, "internal error"))
        finally:
            self._turns.discard(turn)
            if self._pending is turn:
                self._pending = None
            if self._speaking is turn:
                self._speaking = None

    def _failed(self, turn: Turn, exc: EngineError) -> None:
        turn.report_error(exc)
        if turn.heard_any:
            heard = turn.heard()
            self.history.add_turn(turn.user_text, heard, interrupted=True)
            turn.emit(Reply(turn.reply.strip(), interrupted=True, heard=heard, turn=turn.id))
        turn.emit(State(StateName.LISTENING, turn=turn.id))
        if self._barge_onset is not None and self._speaking is not turn:
            self._resume_speaking("the interruption could not be understood")

    def _settle_interrupted(self, turn: Turn) -> None:
        """A released turn was cut off: keep what the user heard, or carry its words to the next utterance."""
        if self._closed or turn.held:
            return  # a speculative turn leaves no trace
        same_utterance = turn.utterance is not None and turn.utterance == self._utterance
        if not turn.user_text:
            if turn.pcm is not None and not same_utterance:
                # Cut off while transcribing: the user was still talking; keep the audio for the next question.
                self._carry_pcm = turn.pcm + self._carry_pcm
            return
        heard = turn.heard()
        if turn.heard_any:
            self.history.add_turn(turn.user_text, heard, interrupted=True)
        elif not same_utterance:
            # Nothing of the reply was heard: the new words continue the same question.
            # (From the same utterance, the next pass already covers these words.)
            self._carry_text = turn.user_text
        # Every turn whose transcript was sent ends with a reply event, an empty one if it was
        # cut off before any reply, so a client can close the turn it opened.
        self._emit(Reply(turn.reply.strip(), interrupted=True, heard=heard, turn=turn.id))

    # -- output --------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if isinstance(event, State):
            if event.state == self.state:
                return
            self.state = event.state
        self._send(event)

    def _on_playback(self, event: Playback) -> None:
        for turn in self._turns:
            if turn.owns(event.mark):
                turn.on_playback(event)
                return
