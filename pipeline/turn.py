"""One turn: the user's words in, a spoken reply out.

A Turn owns everything one reply needs: its tasks, the reply's sentences and
their marks, what of them played, its metrics and, until it is released
(`held`), the events and audio it has produced but nobody has seen or heard.
`release(number)` numbers it and lets them out in order; a held turn that is
cancelled leaves no trace at all.

Turn-taking (pipeline/turn_taking.py) decides *when*; the turn knows *how*:
`transcribe()` then `respond(messages)`, which streams the LLM's reply into
sentences while a second task voices them in order, so the first sentence is
heard while the rest is still being written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Hashable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import numpy as np

from pipeline.engines.base import EngineError, Engines, Heard, Message, ToolCall
from pipeline.engines.workers import needed_by
from pipeline.events import (
    Error,
    Event,
    Metrics,
    ReplyDelta,
    Stage,
    State,
    StateName,
    ToolCallEvent,
    ToolResultEvent,
    Transcript,
    TranscriptPartial,
)
from pipeline.language import in_script, meaningful, rules_for
from pipeline.loops import find_loop
from pipeline.ports import AudioOutput, EventSink, Playback, PlaybackKind, Played
from pipeline.segmenter import RATE
from pipeline.sentences import SentenceSplitter, speakable
from pipeline.tools import Act, Toolbox, ToolFailed

log = logging.getLogger("pipeline.turn")

MAX_TOOL_ROUNDS = 3  # then the model is asked again without tools, so that it answers
ONE_MOMENT_AFTER_S = 1.0  # a tool still running this long gets a short spoken filler


@asynccontextmanager
async def failures_of(stage: Stage) -> AsyncIterator[None]:
    """An engine's unexpected exception (a bug, a native crash) becomes that stage's EngineError."""
    try:
        yield
    except (EngineError, StopAsyncIteration, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s engine failed", stage)
        raise EngineError(stage, f"the {stage.upper()} engine failed; see the server log") from None


def trim_leading_silence(pcm: bytes, rate: int, threshold: int = 300, keep_ms: int = 20) -> bytes:
    """`pcm` from shortly before its first sample louder than `threshold`; b"" if none is."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return b""
    start = max(0, int(loud[0]) - rate * keep_ms // 1000)
    return samples[start:].tobytes()


@dataclasses.dataclass
class _Running:
    since: float | None  # media time it started (None: before the first frame; then it is the first tick)
    task: asyncio.Task[str]
    say: Callable[[str], None]
    expired: bool = False


class Turn:
    def __init__(
        self,
        id: int,
        engines: Engines,
        audio: AudioOutput,
        emit: EventSink,
        *,
        pcm: bytes | None = None,
        text: str | None = None,
        t_speech_end: float | None = None,
        max_reply_chars: int = 1500,
        stt_prompt: str = "",
        language: str = "en",
        tools: Toolbox | None = None,
        clock: Callable[[], float | None] = time.monotonic,  # the conversation's media time; None before its first frame
        unasked: str | None = None,  # no user turn: this is said (a timer is due)
        voice: str | None = None,  # the session's own voice (a Realtime client's); None: the engine's
    ) -> None:
        self.id = id  # unique in the session; `number` is what events carry, once released
        self.number: int | None = None
        self.stt_prompt = stt_prompt  # the user's earlier words in this session: context for STT
        self.pcm = pcm
        self.typed = text
        self.unasked = unasked
        self.voice = voice
        self.t_speech_end = t_speech_end  # media time the user stopped speaking
        self.metrics = Metrics()
        self.user_text = ""  # what the reply answers, once it answers
        self.reply = ""
        self.transcript: str | None = None  # the STT pass (or the typed text), once done
        self.language = language  # the conversation's so far; what the user spoke and the reply is in, once known
        self.misheard = False  # its words were too unsure to answer: the user is asked to repeat
        self.acts: list[Act] = []  # the tools it ran, each with its outcome
        self._tools = tools
        self._said_one_moment = False
        self._running: _Running | None = None  # the tool running now
        self._clock = clock
        self._engines = engines
        self._audio = audio
        self._emit = emit
        self._max_reply_chars = max_reply_chars
        self._sentences: dict[Hashable, str] = {}  # mark -> displayed sentence, in order
        self._started: set[Hashable] = set()  # marks whose audio began to leave
        self._cut: dict[Hashable, Played] = {}  # marks cut by clear(), with how much had played
        self._seconds: dict[Hashable, float] = {}  # mark -> its audio's duration
        self.played_s: float | None = None  # what the client says it played of the reply (a Realtime truncate)
        self._wrote_audio = False
        self._held_events: list[Event] = []
        self._held_audio: list[tuple[bytes, int, Hashable]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._released = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # The origin of the metrics' `*_at_ms`: the user's speech end, or (typed, unasked) now.
        self._origin = t_speech_end if t_speech_end is not None else clock()
        self.metrics.prepared_at_ms = self._at()

    # -- lifetime --------------------------------------------------------------

    def start(self, body: Coroutine[Any, Any, None]) -> None:
        """Run the turn's main coroutine as its task."""
        self.task = self.spawn(body, f"turn-{self.id}")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def held(self) -> bool:
        return self.number is None

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Until every task of the turn has finished (however it ended)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def interrupt(self) -> None:
        """Stop the reply now: drop its queued audio, remember what played, cancel its work."""
        self.metrics.interrupted_at_ms = self._at()
        for played in self._audio.clear():
            self._cut[played.mark] = played
        self.cancel()

    def release(self, number: int, t_now: float) -> None:
        """Number the turn and let its held events and audio out, in the order they were produced."""
        self.number = number
        self._released.set()
        self.metrics.released_at_ms = self._at(t_now)
        if self.t_speech_end is not None:  # the origin is the speech end: the same moment, by its older name
            self.metrics.endpoint_ms = self.metrics.released_at_ms
        events, self._held_events = self._held_events, []
        audio, self._held_audio = self._held_audio, []
        for event in events:
            self.emit(event)
        for pcm, rate, mark in audio:
            self._audio.write(pcm, rate, mark)

    # -- output, held while speculative -----------------------------------------

    def emit(self, event: Event) -> None:
        """Out now with the turn's number, or held until the turn is released."""
        if self.number is None:
            self._held_events.append(event)
        elif getattr(event, "turn", 0) is None:
            self._emit(dataclasses.replace(event, turn=self.number))  # type: ignore[call-arg]
        else:
            self._emit(event)

    def _write(self, pcm: bytes, rate: int, mark: Hashable) -> None:
        self._wrote_audio = True
        self._seconds[mark] = self._seconds.get(mark, 0.0) + len(pcm) / 2 / rate
        if self.held:
            self._held_audio.append((pcm, rate, mark))
        else:
            self._audio.write(pcm, rate, mark)

    # -- playback accounting ---------------------------------------------------

    def owns(self, mark: Hashable) -> bool:
        return mark in self._sentences

    def on_playback(self, event: Playback) -> None:
        if event.kind != PlaybackKind.START:
            return
        first = not self._started
        self._started.add(event.mark)
        if first:
            self.emit(State(StateName.SPEAKING))
            self.metrics.heard_at_ms = self._at(event.t)
            if self.t_speech_end is not None:
                self.metrics.voice_to_voice_ms = self.metrics.heard_at_ms
            self.emit(self._metrics())

    # -- the timeline ------------------------------------------------------------

    def _at(self, t: float | None = None) -> float | None:
        """Media time `t` (default: now) in ms after the turn's origin; None before the first frame."""
        t = self._clock() if t is None else t
        return None if t is None or self._origin is None else round((t - self._origin) * 1000, 1)

    def _metrics(self, final: bool = False) -> Metrics:
        m = self.metrics  # the lists copied: the event sent stays as it was when sent
        pauses, tools = (None if m.pauses is None else list(m.pauses)), (None if m.tools is None else list(m.tools))
        return dataclasses.replace(m, pauses=pauses, tools=tools, final=final)

    def paused(self) -> None:
        """Its audio paused for the user (a hint of voice, or speech over it)."""
        at = self._at()
        if at is not None:
            self.metrics.pauses = [*(self.metrics.pauses or []), (at, None)]

    def resumed(self) -> None:
        pauses = self.metrics.pauses
        if pauses and pauses[-1][1] is None:
            pauses[-1] = (pauses[-1][0], self._at())

    def finish(self) -> None:
        """The turn is over (its reply event is out): its metrics, complete."""
        self.metrics.ended_at_ms = self._at()
        self.emit(self._metrics(final=True))

    @property
    def heard_any(self) -> bool:
        return bool(self._started)

    def heard(self) -> str:
        """The reply as far as it left the output."""
        parts: list[str] = []
        before = 0.0  # seconds of the reply's audio before this mark
        for mark, sentence in self._sentences.items():
            if mark in self._cut:
                share = self._cut[mark].share
            else:
                share = 1.0 if mark in self._started else 0.0
            seconds = self._seconds.get(mark, 0.0)
            if self.played_s is not None and seconds:  # the client played less than left the output
                share = min(share, max(0.0, (self.played_s - before) / seconds))
            before += seconds
            if share >= 0.999:
                parts.append(sentence)
                continue
            words = sentence.split()
            if share > 0 and int(len(words) * share):
                parts.append(" ".join(words[: int(len(words) * share)]))
            break
        return " ".join(parts)

    # -- the work ----------------------------------------------------------------

    async def transcribe(self) -> Heard:
        """The user's words: typed, or from STT (shown at once as a partial transcript)."""
        if self.pcm is None:
            heard = Heard(self.typed or "", "")
        else:
            started = time.monotonic()
            self.metrics.stt_at_ms = self._at()
            with needed_by(started):  # gates this turn's first audio
                async with failures_of("stt"):
                    heard = await self._engines.stt.transcribe(self.pcm, RATE, prompt=self.stt_prompt, language=self.language)
            self.metrics.stt_ms = round((time.monotonic() - started) * 1000, 1)
        text = in_script(heard.text.strip(), heard.language)
        self.transcript = text
        if self.pcm is not None and meaningful(text):
            # The user's own words so far: shown live, whether or not this pass is answered.
            self._emit(TranscriptPartial(text))
        return dataclasses.replace(heard, text=text)

    async def respond(self, messages: list[Message], user_text: str, said: str | None = None) -> None:
        """Stream the reply for `messages` (or say `said` instead), voice it sentence by sentence, and wait until it played."""
        self.user_text = user_text
        if self.unasked is None:
            self.emit(Transcript(user_text, source="voice" if self.pcm is not None else "text", language=self.language))
        self.emit(State(StateName.THINKING))
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        writer = self.spawn(self._write_reply(messages, sentences, said), f"turn-{self.id}-llm")
        speaker = self.spawn(self._speak(sentences), f"turn-{self.id}-tts")
        try:
            await asyncio.gather(writer, speaker)
        finally:
            for task in (writer, speaker):
                task.cancel()
            await asyncio.gather(writer, speaker, return_exceptions=True)
        await self._released.wait()  # a speculative reply is over only once the user got it
        if self._wrote_audio:
            await self._audio.wait_for_playout()

    async def _write_reply(self, messages: list[Message], sentences: asyncio.Queue[str | None], said: str | None = None) -> None:
        metrics = self.metrics
        asked = time.monotonic()
        metrics.llm_at_ms = self._at()
        splitter = SentenceSplitter()

        def ready(sentence: str) -> None:
            if metrics.first_sentence_ms is None:
                metrics.first_sentence_ms = round((time.monotonic() - asked) * 1000, 1)
            sentences.put_nowait(sentence)

        with needed_by(asked):  # the first sentence gates the first audio
            for step in range(MAX_TOOL_ROUNDS + 1):
                offered = self._tools.specs if self._tools is not None and step < MAX_TOOL_ROUNDS else None
                llm = self._engines.llm
                source = _said(said) if said is not None else llm.stream(messages, offered) if offered else llm.stream(messages)
                calls: list[ToolCall] = []
                async with failures_of("llm"), aclosing(source) as stream:
                    async for delta in stream:
                        if isinstance(delta, ToolCall):
                            calls.append(delta)
                            continue
                        if not delta:
                            continue
                        if metrics.llm_first_token_ms is None:
                            metrics.llm_first_token_ms = round((time.monotonic() - asked) * 1000, 1)
                        if len(self.reply) + len(delta) > self._max_reply_chars:
                            log.info("turn %d: reply cut at %d characters", self.id, self._max_reply_chars)
                            break  # leaving the block closes the stream, which stops generation
                        cut = find_loop(self.reply + delta)
                        if cut is not None:  # the model is repeating itself: keep the first copy, stop it
                            delta = (self.reply + delta)[len(self.reply) : cut] if cut > len(self.reply) else ""
                        if delta:
                            self.reply += delta
                            self.emit(ReplyDelta(delta))
                            for sentence in splitter.feed(delta):
                                ready(sentence)
                        if cut is not None:
                            log.info("turn %d: reply cut where it started to loop", self.id)
                            break
                if not calls or not await self._act(calls, ready):
                    break
                messages = [*messages, *Act.messages(self.acts[-len(calls) :])]
        for sentence in splitter.flush():
            ready(sentence)
        sentences.put_nowait(None)

    async def judge(self, pcm: bytes) -> float | None:
        """The end-of-turn model's P(finished) at the pause that made this turn; None if it failed."""
        detector = self._engines.turn
        assert detector is not None
        started = time.monotonic()
        try:
            async with failures_of("turn"):
                p = await detector.complete(pcm, RATE)
        except EngineError as exc:
            log.warning("end-of-turn model failed (%s); waiting for the silence instead", exc.message)
            return None
        self.metrics.turn_detect_ms = round((time.monotonic() - started) * 1000, 1)
        self.metrics.turn_complete = round(p, 3)
        return p

    async def _act(self, calls: list[ToolCall], say: Callable[[str], None]) -> bool:
        """Run the model's tool calls in order; False when one timed out (and an apology is said)."""
        await self._released.wait()  # a held reply may decide to act, but acts only once it is the user's
        assert self._tools is not None
        for call in calls:
            act = Act(call)
            self.acts.append(act)
            self.emit(ToolCallEvent(call.name, call.arguments))
            started, at = time.monotonic(), self._at()
            task = self.spawn(self._tools.run(call.name, call.arguments), f"turn-{self.id}-tool")
            self._running = _Running(self._clock(), task, say)
            try:
                act.result, act.ok = await task, True
            except ToolFailed as exc:
                act.result = f"error: {exc}"
            except asyncio.CancelledError:
                if not self._running.expired:
                    raise  # the turn itself was cancelled: the act stays recorded as cancelled
                act.result = f"error: no answer within {self._tools.timeout_s:g} s"
                self.emit(Error("tool", f"the {call.name} tool took longer than {self._tools.timeout_s:g} s"))
                apology = rules_for(self.language).could_not
                self.emit(ReplyDelta(f" {apology}" if self.reply else apology))
                self.reply += f" {apology}" if self.reply else apology
                say(apology)
                return False
            except Exception:
                log.exception("turn %d: the %s tool failed", self.id, call.name)
                act.result = "error: the tool failed"
            finally:
                self._running = None
                act.ms = round((time.monotonic() - started) * 1000, 1)
                self.metrics.tools = [*(self.metrics.tools or []), (call.name, at, act.ms)]
                self.emit(ToolResultEvent(call.name, act.ok, act.ms))
        return True

    def tick(self, now: float) -> None:
        """The conversation's media time: a tool running long gets a filler, then its timeout."""
        running = self._running
        if running is None or self._tools is None:
            return
        if running.since is None:
            running.since = now
        if not self._said_one_moment and now - running.since >= ONE_MOMENT_AFTER_S:
            self._said_one_moment = True
            running.say(rules_for(self.language).one_moment)
        if now - running.since >= self._tools.timeout_s and not running.expired:
            running.expired = True
            running.task.cancel()

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        tts = self._engines.tts
        index = 0
        while (sentence := await sentences.get()) is not None:
            spoken = speakable(sentence)
            if not meaningful(spoken):
                continue
            if index:
                # Held, only the first sentence is voiced ahead: the rest would take CPU from the
                # work that decides and answers the turn, for a reply that may be thrown away.
                await self._released.wait()
            mark = (self.id, index)
            index += 1
            self._sentences[mark] = sentence
            started = time.monotonic()
            if index == 1:
                self.metrics.tts_at_ms = self._at()
            # The first sentence gates the reply's first audio; a later one is needed only when
            # the audio queued ahead of it has played.
            when = started if index == 1 else started + self._audio.queued_seconds
            with needed_by(when):
                speech = tts.stream(spoken, self.language, self.voice) if self.voice else tts.stream(spoken, self.language)
                async with failures_of("tts"), aclosing(speech) as chunks:
                    async for chunk in chunks:
                        if not self._wrote_audio:
                            # Voices start with a breath of silence; before the reply's first
                            # word it is only latency, so it is not sent.
                            chunk = trim_leading_silence(chunk, tts.sample_rate)
                            if not chunk:
                                continue
                        if self.metrics.tts_first_audio_ms is None:
                            self.metrics.tts_first_audio_ms = round((time.monotonic() - started) * 1000, 1)
                        self._write(chunk, tts.sample_rate, mark)

    def report_error(self, exc: EngineError) -> None:
        """A stage failed: nothing stale is spoken after it, and the user is told."""
        if self._wrote_audio and not self.held:
            for played in self._audio.clear():
                self._cut[played.mark] = played
        self._held_audio.clear()
        self.emit(Error(exc.stage, exc.message))


async def _said(text: str) -> AsyncGenerator[str, None]:
    """A fixed reply, streamed as a model's would be."""
    yield text
