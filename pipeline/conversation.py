"""The executor of a session's conversation: runs what turn-taking decides.

Turn-taking (pipeline/turn_taking.py) is pure: it is fed the segmenter's events, the time,
typed text and what the turns report, and answers with commands. This module owns everything
with a lifetime: the running turns (pipeline/turn.py) and their tasks, the history, the rate
limit, the tools and timers, the passes over words in progress (pipeline/preview.py) and the echo gate:
while a reply plays, the segmenter's level gate rises to the reply's recent level minus
`echo_gate_db`, so its own voice coming back into the microphone is not the user's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

from pipeline import turn_protocol as tp
from pipeline.engines.base import EngineError, Engines, Heard
from pipeline.engines.workers import needed_by
from pipeline.events import Error, Event, Reply, Stage, State, StateName, TimerEvent
from pipeline.hearing import misheard
from pipeline.history import DEFAULT_SYSTEM_PROMPT, History
from pipeline.language import next_language, rules_for
from pipeline.ports import AudioOutput, EventSink, Playback
from pipeline.preview import Preview
from pipeline.rate_limit import RateLimit
from pipeline.segmenter import RATE, Segmenter, SegmenterConfig, SpeechEnded, SpeechHint, SpeechPaused, SpeechResumed, SpeechStarted
from pipeline.timers import Timers
from pipeline.tools import ToolsConfig
from pipeline.turn import Turn, failures_of
from pipeline.turn_protocol import Outcome, TurnTakingConfig
from pipeline.turn_taking import TurnTaking
from settings import Settings

log = logging.getLogger("pipeline.conversation")

ECHO_WINDOW_S = 0.5  # how far back the echo gate looks at what was played (echo path + jitter buffers)
TURN_MODEL_AUDIO_S = 8.0  # what the end-of-turn model hears of an utterance
KEEP_RELEASED = 8  # turns a client may still truncate


@dataclass(frozen=True)
class ConversationConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    history_turns: int = 16
    history_chars: int = 6000
    max_turns_per_minute: int = 20
    max_reply_chars: int = 1500
    log_content: bool = False  # transcripts and replies in the logs
    echo_gate_db: float = 20.0  # 0: off
    partial_every_ms: int = 1000  # a pass over the words so far after each this much speech (0: off)
    languages: tuple[str, ...] = ("en",)  # accepted; the first until the user speaks another
    repeat_below_logprob: float = float("-inf")  # a transcript less sure than this is asked again, not answered
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    turn_taking: TurnTakingConfig = field(default_factory=TurnTakingConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationConfig:
        return cls(
            system_prompt=settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
            history_turns=settings.history_turns,
            history_chars=settings.history_chars,
            max_turns_per_minute=settings.max_turns_per_minute,
            max_reply_chars=settings.max_reply_chars,
            log_content=settings.log_content,
            echo_gate_db=settings.echo_gate_db,
            partial_every_ms=settings.partial_every_ms,
            languages=settings.language_list,
            repeat_below_logprob=settings.repeat_below_logprob,
            tools=ToolsConfig.from_settings(settings),
            turn_taking=TurnTakingConfig.from_settings(settings),
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
        self.turn_taking = TurnTaking(replace(config.turn_taking, judge=engines.turn is not None))
        self.history = History(config.system_prompt, config.history_turns, config.history_chars)
        self.state: StateName | None = None
        self.turns: dict[int, Turn] = {}  # every turn not finished yet, by id
        self._released: dict[int, Turn] = {}  # the latest released turns, by number: what a client may truncate
        self._previous: Turn | None = None  # the turn that answered before: its history comes first
        self._now: float | None = None  # media time of the end of the latest frame; None before the first
        self.language = config.languages[0]  # what the user speaks now
        self.voice: str | None = None  # a voice the client asked for; None: the engines' own
        self._closed = False
        self._rate = RateLimit(config.max_turns_per_minute)
        self.timers = Timers(lambda timer, status: self._emit(TimerEvent(timer.id, status, timer.seconds, timer.label)))
        self.tools = config.tools.toolbox(self.timers, lambda: self._now)
        self._preview = Preview(engines, self._emit, config.partial_every_ms / 1000)
        audio.add_listener(self._on_playback)
        self._emit(State(StateName.LISTENING))

    # -- inputs ----------------------------------------------------------------

    def on_audio(self, pcm: bytes, t: float) -> None:
        now = self._now = t + len(pcm) / 2 / RATE
        floor = None
        if self.config.echo_gate_db > 0 and self._audio.busy:
            floor = self._audio.level_dbfs(ECHO_WINDOW_S) - self.config.echo_gate_db
        machine = self.turn_taking
        for event in self._segmenter.process(pcm, t, floor):
            if isinstance(event, SpeechHint):
                self._run(machine.hint(event.t_detected))
            elif isinstance(event, SpeechStarted):
                self._run(machine.started(event.t_start))
            elif isinstance(event, SpeechPaused):
                self._run(machine.paused(event))
            elif isinstance(event, SpeechResumed):
                self._run(machine.resumed(event.t_resumed))
            elif isinstance(event, SpeechEnded):
                self._run(machine.ended(event))
        for timer in self.timers.due(now):
            self._run(machine.unasked(rules_for(self.language).timer_done(timer)))
        self._run(machine.tick(now, self._segmenter.voiced_until))
        for turn in list(self.turns.values()):
            turn.tick(now)
        if self._segmenter.speaking and machine.previewing:
            self._preview.feed(
                machine.utterance, self._segmenter.speech_span(), self._segmenter.utterance_pcm, self.history.user_context, self.language
            )

    def on_text(self, text: str) -> None:
        self._run(self.turn_taking.text(text, self._now or 0.0))

    def on_commit(self, pcm: bytes) -> None:
        self._run(self.turn_taking.committed(pcm, self._now or 0.0))

    def on_cancel(self) -> None:
        self._run(self.turn_taking.cancel())

    def on_truncate(self, turn: int, played_s: float) -> bool:
        """The client played only `played_s` of turn `turn`'s reply: the history keeps that much."""
        released = self._released.get(turn)
        if released is None:
            return False
        released.played_s = played_s
        self.history.cut(turn, released.heard())
        return True

    def on_instructions(self, text: str) -> None:
        self.history.system_prompt = text

    def on_voice(self, name: str) -> None:
        self.voice = name or None

    def on_timezone(self, name: str) -> None:
        if self.tools is not None and not self.tools.set_timezone(name):
            self._emit(Error("input", f"unknown time zone {name[:64]!r}: expected an IANA name such as Europe/Lisbon"))

    async def close(self) -> None:
        self._closed = True
        await self._preview.close()
        for turn in self.turns.values():
            turn.cancel()
        await asyncio.gather(*(turn.wait() for turn in list(self.turns.values())))
        self._audio.clear()

    # -- commands ----------------------------------------------------------------

    def _run(self, commands: list[tp.Command]) -> None:
        for command in commands:
            if isinstance(command, tp.Emit):
                self._emit(command.event)
            elif isinstance(command, tp.Prepare):
                self._prepare(command)
            elif isinstance(command, tp.Release):
                self._release(command)
            elif isinstance(command, tp.Judge) and not (turn := self.turns[command.turn]).done:
                audio = self._segmenter.utterance_pcm()[-int(TURN_MODEL_AUDIO_S * RATE) * 2 :]
                turn.spawn(self._judge(turn, audio), f"turn-{turn.id}-judge")
            elif isinstance(command, tp.CheckWords):
                turn = self.turns[command.turn]
                turn.spawn(self._check_words(self._segmenter.utterance_pcm()), f"turn-{turn.id}-check")
            elif isinstance(command, tp.Respond):
                self.turns[command.turn].user_text = command.user_text
            elif isinstance(command, tp.Drop):
                log.debug("turn %d dropped unheard", command.turn)
                self.turns[command.turn].cancel()
                if self.turns[command.turn].done:  # a failed turn kept for its release
                    del self.turns[command.turn]
            elif isinstance(command, tp.Interrupt):
                log.info("turn %d interrupted: %s", command.turn, command.why)
                self.turns[command.turn].interrupt()
            elif isinstance(command, tp.PauseOutput):
                self._audio.pause()
                if command.turn in self.turns:
                    self.turns[command.turn].paused()
            elif isinstance(command, tp.ResumeOutput):
                log.info("reply resumed: %s", command.why)
                self._audio.resume()
                if command.turn in self.turns:
                    self.turns[command.turn].resumed()
            elif isinstance(command, tp.CancelPreview):
                self._preview.cancel()

    def _prepare(self, command: tp.Prepare) -> None:
        if self._closed:
            return
        turn = Turn(
            command.turn,
            self._engines,
            self._audio,
            self._emit,
            pcm=command.pcm,
            text=command.text,
            t_speech_end=command.t_speech_end,
            max_reply_chars=self.config.max_reply_chars,
            stt_prompt=self.history.user_context() if command.pcm is not None else "",
            language=self.language,
            tools=self.tools,
            clock=lambda: self._now,
            unasked=command.unasked,
            voice=self.voice,
        )
        self.turns[turn.id] = turn
        turn.start(self._drive(turn))  # scheduled, not run: the commands after this one come first

    def _release(self, command: tp.Release) -> None:
        turn = self.turns.get(command.turn)
        if turn is None:
            return
        if turn.unasked is None and not self._rate.allow(time.monotonic()):  # a user's turn counts when it is released
            self._emit(Error("rate", f"too many turns: at most {self._rate.per_minute} a minute; please wait a moment"))
            turn.cancel()
            return
        turn.metrics.released_by = command.by
        if turn.transcript is None:
            self._emit(State(StateName.TRANSCRIBING, turn=command.number))
        turn.release(command.number, command.t)
        self._released[command.number] = turn
        while len(self._released) > KEEP_RELEASED:
            del self._released[next(iter(self._released))]
        if turn.done:  # it failed while held: its error is out now
            del self.turns[turn.id]

    # -- one turn ------------------------------------------------------------------

    async def _judge(self, turn: Turn, pcm: bytes) -> None:
        p = await turn.judge(pcm)
        if p is not None:
            self._run(self.turn_taking.judged(turn.id, p, self._now or 0.0))

    async def _check_words(self, pcm: bytes) -> None:
        heard: Heard | None = None
        try:
            with needed_by(time.monotonic()):  # what the paused reply waits for
                async with failures_of("stt"):
                    heard = await self._engines.stt.transcribe(pcm, RATE, prompt=self.history.user_context(), language=self.language)
        except EngineError as exc:
            log.warning("the words over the reply could not be transcribed (%s): taken as an interruption", exc.message)
        language = heard.language if heard is not None and heard.language else self.language
        self._run(self.turn_taking.words_so_far(None if heard is None else heard.text, language))

    async def _drive(self, turn: Turn) -> None:
        outcome: Outcome = Outcome.CANCELLED
        stage: Stage = "stt"
        try:
            if turn.unasked is None and not await self._question(turn):
                outcome = Outcome.COMPLETED
                return
            stage = "llm"
            rules = rules_for(turn.language)
            instruction = rules.answer_in if len(self.config.languages) > 1 else ""
            # Words it most likely misheard are not answered: the user is asked to say them again.
            said = turn.unasked or (rules.repeat if turn.misheard else None)
            await turn.respond(self.history.messages(turn.user_text, instruction), turn.user_text, said)
            reply = turn.reply.strip()
            if not turn.misheard:
                self.history.add_turn(_asked(turn), reply, acts=tuple(turn.acts), turn=turn.number)
            turn.emit(Reply(reply, interrupted=False, heard=reply))
            turn.finish()
            outcome = Outcome.COMPLETED
        except asyncio.CancelledError:
            self._cut_short(turn)
            raise
        except EngineError as exc:
            log.warning("turn %d: %s failed: %s", turn.id, exc.stage, exc.message)
            turn.report_error(exc)
            self._cut_short(turn)
            outcome = Outcome.FAILED
        except Exception:
            log.exception("turn %d failed in %s", turn.id, stage)
            turn.report_error(EngineError(stage, "internal error"))
            self._cut_short(turn)
            outcome = Outcome.FAILED
        finally:
            if outcome is not Outcome.FAILED or not turn.held:  # turn-taking keeps a failed held turn until its release
                self.turns.pop(turn.id, None)
            if not self._closed:
                self._run(self.turn_taking.turn_done(turn.id, outcome, kept=turn.heard_any or bool(turn.acts)))

    async def _question(self, turn: Turn) -> bool:
        """Transcribe the turn and tell turn-taking; True if it is a question to answer."""
        heard = await turn.transcribe()
        turn.misheard = turn.pcm is not None and misheard(heard, self.config.repeat_below_logprob)
        turn.language = next_language(self.language, heard.text, heard.language, self.config.languages)
        self._run(self.turn_taking.transcribed(turn.id, heard.text, self._now or 0.0, turn.language))
        if not turn.user_text:
            return False
        self.language = turn.language
        previous, self._previous = self._previous, turn
        if previous is not None:
            await previous.wait()  # an interrupted reply commits its history first
        if self.config.log_content:
            log.info("turn %d: user said %r", turn.id, turn.user_text)
        return True

    def _cut_short(self, turn: Turn) -> None:
        """A released turn ended before its reply (interrupted, or a stage failed): keep what the user heard."""
        if self._closed or turn.held or not (turn.user_text or turn.unasked):
            return  # a held turn leaves no trace; one cut off before it answered may carry on (turn-taking)
        heard = turn.heard()
        if (turn.heard_any or turn.acts) and not turn.misheard:  # a tool that ran is remembered, heard or not
            self.history.add_turn(_asked(turn), heard, interrupted=True, acts=tuple(turn.acts), turn=turn.number)
        # Every turn whose transcript was sent ends with a reply event, an empty one if it was
        # cut off before any reply, so a client can close the turn it opened.
        turn.emit(Reply(turn.reply.strip(), interrupted=True, heard=heard))
        turn.finish()

    # -- output --------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if isinstance(event, State):
            if event.state == self.state:
                return
            self.state = event.state
        self._send(event)

    def _on_playback(self, event: Playback) -> None:
        for turn in self.turns.values():
            if turn.owns(event.mark):
                turn.on_playback(event)
                return


def _asked(turn: Turn) -> str | None:
    """What the user asked, for the history; None when nobody did."""
    return turn.user_text if turn.unasked is None else None
