"""The assistant: utterances in, streamed spoken replies out, one turn at a time.

State machine per session: listening -> transcribing -> thinking -> speaking
-> listening. A turn is one task owned by the conversation. Inside it the LLM
stream is cut into sentences by one task while another synthesises them in
order and writes their audio to the outbound sink, so the first sentence is
heard while the rest of the reply is still being written.

Barge-in: when the user starts speaking over a turn, the sink is flushed at
once and the turn task is cancelled (cancellation reaches the engines). What
the sink reports as played decides what goes into the history: the sentences
heard in full, and the heard share of the one cut off.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from pipeline.engines.base import EngineError, Engines, each_within
from pipeline.events import Error, Metrics, Reply, ReplyDelta, SpeechStartedEvent, SpeechStoppedEvent, State, Transcript
from pipeline.history import History
from pipeline.ports import AudioSink, EventSink, PlayedLike
from pipeline.segmenter import RATE, Segmenter, SegmenterConfig, SpeechEnded, SpeechStarted
from pipeline.sentences import SentenceSplitter, speakable
from settings import Settings

log = logging.getLogger("pipeline.conversation")
T = TypeVar("T")

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Everything you write is spoken aloud, so answer in one to three short "
    "sentences of plain conversational English: no lists, no markdown, no emojis, no code. Start with the answer. "
    "If you did not understand the question, say so briefly."
)


@dataclass(frozen=True)
class ConversationConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    barge_in: bool = True
    history_turns: int = 16
    history_chars: int = 6000
    stt_timeout_s: float = 15.0
    llm_timeout_s: float = 20.0
    tts_timeout_s: float = 15.0
    max_turns_per_minute: int = 20
    max_reply_chars: int = 1500
    log_content: bool = False  # transcripts and replies in the logs

    @classmethod
    def from_settings(cls, settings: Settings) -> ConversationConfig:
        return cls(
            system_prompt=settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
            barge_in=settings.barge_in,
            history_turns=settings.history_turns,
            history_chars=settings.history_chars,
            stt_timeout_s=settings.stt_timeout_s,
            llm_timeout_s=settings.llm_timeout_s,
            tts_timeout_s=settings.tts_timeout_s,
            max_turns_per_minute=settings.max_turns_per_minute,
            max_reply_chars=settings.max_reply_chars,
            log_content=settings.log_content,
        )


@dataclass
class _Turn:
    id: int
    t_speech_end: float | None = None  # media time the user stopped speaking (None: typed)
    t_detected: float | None = None  # when the segmenter declared it
    user_text: str = ""
    reply: str = ""
    sentences: dict[Hashable, str] = field(default_factory=dict)  # mark -> displayed sentence, in order
    started: set[Hashable] = field(default_factory=set)  # marks whose audio began to leave
    ended: set[Hashable] = field(default_factory=set)
    flushed: dict[Hashable, PlayedLike] = field(default_factory=dict)
    last_mark: Hashable | None = None
    metrics: Metrics | None = None
    first_audio_at: float | None = None
    playback: asyncio.Event = field(default_factory=asyncio.Event)

    def heard(self) -> str:
        """The reply as far as it left the outbound track."""
        parts: list[str] = []
        for mark, sentence in self.sentences.items():
            if mark in self.flushed:
                played = self.flushed[mark]
                share = played.played / played.total if played.total else 0.0
            else:
                share = 1.0 if mark in self.started else 0.0
            if share >= 0.999:
                parts.append(sentence)
                continue
            words = sentence.split()
            if share > 0 and int(len(words) * share):
                parts.append(" ".join(words[: int(len(words) * share)]))
            break
        return " ".join(parts)


def _trim_leading_silence(pcm: bytes, rate: int, threshold: int = 300, keep_ms: int = 20) -> bytes:
    """`pcm` from shortly before its first sample louder than `threshold`; b"" if none is."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return b""
    start = max(0, int(loud[0]) - rate * keep_ms // 1000)
    return samples[start:].tobytes()


def _meaningful(text: str) -> bool:
    """False for empty or noise-only transcripts such as "", "...", "[BLANK_AUDIO]", "(wind)"."""
    return bool(re.sub(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[^\w]", "", text))


async def _within(stream: AsyncIterator[T], timeout: float, stage: str) -> AsyncIterator[T]:
    """`each_within`, with an engine's unexpected exception turned into that stage's EngineError."""
    async with _failures_of(stage):
        async for item in each_within(stream, timeout, stage):
            yield item


@asynccontextmanager
async def _failures_of(stage: str) -> AsyncIterator[None]:
    """An engine's unexpected exception (a bug, a native crash) becomes that stage's EngineError."""
    try:
        yield
    except (EngineError, StopAsyncIteration, TimeoutError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s engine failed", stage)
        raise EngineError(stage, f"the {stage.upper()} engine failed; see the server log") from None


class Conversation:
    def __init__(self, audio: AudioSink, emit: EventSink, engines: Engines, segmenter: SegmenterConfig, config: ConversationConfig) -> None:
        self._audio = audio
        self._emit = emit
        self._engines = engines
        self._segmenter = Segmenter(segmenter)
        self.config = config
        self.history = History(config.system_prompt, config.history_turns, config.history_chars)
        self.state = ""
        self._turn_id = 0
        self._turn: _Turn | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry_pcm = b""  # an utterance cut off before it was transcribed ...
        self._carry_text = ""  # ... or before any of its reply was heard: joined to the next
        self._closed = False
        self._turn_starts: deque[float] = deque()
        audio.add_listener(self._on_playback)
        self._set_state("listening")

    # -- inputs ----------------------------------------------------------------

    def on_audio(self, pcm: bytes, t: float) -> None:
        for event in self._segmenter.process(pcm, t):
            if isinstance(event, SpeechStarted):
                self._emit(SpeechStartedEvent(turn=self._turn_id + 1))
                if self.busy and self.config.barge_in:
                    self._interrupt("user started speaking")
            elif isinstance(event, SpeechEnded):
                self._emit(SpeechStoppedEvent(turn=self._turn_id + 1, duration_ms=round((event.t_end - event.t_start) * 1000)))
                if self.busy:
                    log.info("utterance ignored: the assistant is busy and barge-in is off")
                    continue
                pcm_in, self._carry_pcm = self._carry_pcm + event.pcm, b""
                self._start_turn(_Turn(self._turn_id + 1, event.t_end, event.t_detected), pcm_in, None)

    def on_text(self, text: str) -> None:
        if self.busy:
            self._interrupt("user sent text")
        self._start_turn(_Turn(self._turn_id + 1), None, text)

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._audio.flush()

    # -- turn control ----------------------------------------------------------

    def _start_turn(self, turn: _Turn, pcm: bytes | None, text: str | None) -> None:
        if self._closed:
            return
        now = time.monotonic()
        while self._turn_starts and self._turn_starts[0] < now - 60:
            self._turn_starts.popleft()
        if len(self._turn_starts) >= self.config.max_turns_per_minute:
            self._emit(Error("rate", f"too many turns: at most {self.config.max_turns_per_minute} a minute; please wait a moment"))
            return
        self._turn_starts.append(now)
        self._turn_id = turn.id
        previous = self._task
        self._turn = turn
        self._task = asyncio.get_running_loop().create_task(self._run(turn, pcm, text, previous), name=f"turn-{turn.id}")

    def _interrupt(self, why: str) -> None:
        turn, task = self._turn, self._task
        if turn is None or task is None or task.done():
            return
        log.info("turn %d interrupted: %s", turn.id, why)
        for played in self._audio.flush():
            turn.flushed[played.mark] = played
        task.cancel()
        self._set_state("listening", turn.id)

    def _set_state(self, state: str, turn: int | None = None) -> None:
        if state != self.state:
            self.state = state
            self._emit(State(state, turn=turn))

    def _on_playback(self, kind: str, mark: Hashable, t: float) -> None:
        turn = self._turn
        if turn is None or mark not in turn.sentences:
            return
        if kind == "start":
            turn.started.add(mark)
            if turn.first_audio_at is None:
                turn.first_audio_at = t
                self._set_state("speaking", turn.id)
                if turn.metrics is not None:
                    if turn.t_speech_end is not None:
                        turn.metrics.voice_to_voice_ms = round((t - turn.t_speech_end) * 1000, 1)
                    self._emit(turn.metrics)
        else:
            turn.ended.add(mark)
        turn.playback.set()

    # -- one turn --------------------------------------------------------------

    async def _run(self, turn: _Turn, pcm: bytes | None, text: str | None, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The interrupted turn commits its history before this one reads it.
            await asyncio.gather(previous, return_exceptions=True)
        metrics = Metrics(turn=turn.id)
        if turn.t_speech_end is not None and turn.t_detected is not None:
            metrics.endpoint_ms = round((turn.t_detected - turn.t_speech_end) * 1000, 1)
        stage = "stt"
        try:
            if pcm is not None:
                self._set_state("transcribing", turn.id)
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.config.stt_timeout_s), _failures_of("stt"):
                        text = await self._engines.stt.transcribe(pcm, RATE)
                except TimeoutError:
                    raise EngineError("stt", f"no transcript within {self.config.stt_timeout_s:g} s") from None
                metrics.stt_ms = round((time.monotonic() - started) * 1000, 1)
                if not _meaningful(text):
                    log.info("turn %d: empty or noise-only transcript, no reply", turn.id)
                    self._set_state("listening", turn.id)
                    return
            assert text is not None
            text = " ".join(t for t in (self._carry_text, text.strip()) if t)
            self._carry_text = ""
            turn.user_text = text
            if self.config.log_content:
                log.info("turn %d: user said %r", turn.id, text)
            self._emit(Transcript(text, turn=turn.id, source="voice" if pcm is not None else "text"))
            stage = "llm"
            self._set_state("thinking", turn.id)
            turn.metrics = metrics
            await self._reply(turn, metrics)
            while self._audio.busy or (turn.last_mark is not None and turn.last_mark not in turn.ended):
                turn.playback.clear()
                await turn.playback.wait()
            self.history.add_turn(turn.user_text, turn.reply.strip())
            self._emit(Reply(turn.reply.strip(), interrupted=False, heard=turn.reply.strip(), turn=turn.id))
            self._set_state("listening", turn.id)
        except asyncio.CancelledError:
            self._finish_interrupted(turn, pcm)
            raise
        except EngineError as exc:
            log.warning("turn %d: %s failed: %s", turn.id, exc.stage, exc.message)
            for played in self._audio.flush():  # nothing stale is spoken after an error
                turn.flushed[played.mark] = played
            self._emit(Error(exc.stage, exc.message, turn=turn.id))
            if turn.started:
                heard = turn.heard()
                self.history.add_turn(turn.user_text, heard, interrupted=True)
                self._emit(Reply(turn.reply.strip(), interrupted=True, heard=heard, turn=turn.id))
            self._set_state("listening", turn.id)
        except Exception:
            log.exception("turn %d failed in %s", turn.id, stage)
            self._audio.flush()
            self._emit(Error(stage, "internal error", turn=turn.id))
            self._set_state("listening", turn.id)

    def _finish_interrupted(self, turn: _Turn, pcm: bytes | None) -> None:
        if self._closed:
            return
        if not turn.user_text:
            # Cut off while transcribing: the user was still talking; keep the audio for the next utterance.
            self._carry_pcm = (pcm or b"") + self._carry_pcm
            return
        heard = turn.heard()
        if not turn.started:
            # Nothing of the reply was heard: the new words continue the same question.
            self._carry_text = turn.user_text
        else:
            self.history.add_turn(turn.user_text, heard, interrupted=True)
        if turn.reply:
            self._emit(Reply(turn.reply.strip(), interrupted=True, heard=heard, turn=turn.id))

    async def _reply(self, turn: _Turn, metrics: Metrics) -> None:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        asked = time.monotonic()

        async def write() -> None:
            splitter = SentenceSplitter()
            async with aclosing(self._engines.llm.stream(self.history.messages(turn.user_text))) as stream:
                async for delta in _within(stream, self.config.llm_timeout_s, "llm"):
                    if not delta:
                        continue
                    if metrics.llm_first_token_ms is None:
                        metrics.llm_first_token_ms = round((time.monotonic() - asked) * 1000, 1)
                    if len(turn.reply) + len(delta) > self.config.max_reply_chars:
                        log.info("turn %d: reply cut at %d characters", turn.id, self.config.max_reply_chars)
                        break  # leaving the block closes the stream, which stops generation
                    turn.reply += delta
                    self._emit(ReplyDelta(delta, turn=turn.id))
                    for sentence in splitter.feed(delta):
                        if metrics.first_sentence_ms is None:
                            metrics.first_sentence_ms = round((time.monotonic() - asked) * 1000, 1)
                        sentences.put_nowait(sentence)
            for sentence in splitter.flush():
                if metrics.first_sentence_ms is None:
                    metrics.first_sentence_ms = round((time.monotonic() - asked) * 1000, 1)
                sentences.put_nowait(sentence)
            sentences.put_nowait(None)

        async def speak() -> None:
            tts = self._engines.tts
            index = 0
            while (sentence := await sentences.get()) is not None:
                spoken = speakable(sentence)
                if not _meaningful(spoken):
                    continue
                mark = (turn.id, index)
                index += 1
                turn.sentences[mark] = sentence
                started = time.monotonic()
                async with aclosing(tts.stream(spoken)) as chunks:
                    async for chunk in _within(chunks, self.config.tts_timeout_s, "tts"):
                        if turn.last_mark is None:
                            # Voices start with a breath of silence; before the reply's first
                            # word it is only latency, so it is not sent.
                            chunk = _trim_leading_silence(chunk, tts.sample_rate)
                            if not chunk:
                                continue
                        if metrics.tts_first_audio_ms is None:
                            metrics.tts_first_audio_ms = round((time.monotonic() - started) * 1000, 1)
                        self._audio.write(chunk, tts.sample_rate, mark)
                        turn.last_mark = mark  # only a mark with audio will report its end

        writer = asyncio.ensure_future(write())
        speaker = asyncio.ensure_future(speak())
        try:
            await asyncio.gather(writer, speaker)
        finally:
            for task in (writer, speaker):
                task.cancel()
            await asyncio.gather(writer, speaker, return_exceptions=True)
