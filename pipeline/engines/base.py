"""The three engine interfaces every STT/LLM/TTS implementation speaks.

PCM everywhere is mono signed 16-bit little-endian bytes. Cancellation is
plain asyncio cancellation: cancelling the awaiting task (or closing the
async iterator) must really stop the work, remote or local.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict, TypeVar, runtime_checkable

from pipeline.events import Stage

T = TypeVar("T")


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]  # an assistant message that calls tools (OpenAI's shape)
    tool_call_id: NotRequired[str]  # a tool message: the call it answers


ToolSpec = dict[str, Any]  # a tool offered to the model: {"type": "function", "function": {name, description, parameters}}


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool: `arguments` is JSON as the model wrote it (it may be malformed)."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class EngineError(Exception):
    """A stage failed in a way the conversation reports and survives.

    `stage` is "stt", "llm", "tts" or "turn"; the message must never contain a key.
    """

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message


class EngineBusy(EngineError):
    """The engine's bounded queue is full: the turn is rejected, not delayed."""


LOOPING_RATIO = 2.4  # Whisper's compression-ratio threshold (faster-whisper's default)


@dataclass(frozen=True)
class Heard:
    """What a recogniser made of one utterance: its words, their language, and how sure it was.

    The figures are Whisper's where the engine has them (None where it does not): the mean token
    log-probability, the probability that the window held no speech, the text's gzip compression
    ratio (a looping decode compresses well), and the language's probability among those accepted.
    """

    text: str
    language: str = ""  # ISO 639-1 code; "" where the engine does not say
    language_p: float | None = None
    avg_logprob: float | None = None
    no_speech_p: float | None = None
    compression_ratio: float | None = None

    @property
    def looping(self) -> bool:
        """A decode that repeats itself ("1, 1, 1, ..."): its text compresses better than Whisper's own limit."""
        return self.compression_ratio is not None and self.compression_ratio > LOOPING_RATIO


@runtime_checkable
class STT(Protocol):
    name: str
    # Whether a pass over an utterance in progress costs nothing but this box's idle CPU (an
    # embedded model), so the words can be shown while the user speaks (see pipeline/preview.py).
    partials: bool

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        """What was said in one utterance (16 kHz mono int16 by default), in one of the accepted languages.

        `prompt`, when not empty, is text the utterance follows (Whisper's initial
        prompt: a domain, names, the conversation so far); it steers spelling and
        vocabulary and is never part of the result. `language` is the one the conversation
        is in so far ("": not known), a hint: the result may be in another.
        """
        ...


@runtime_checkable
class LLM(Protocol):
    name: str

    def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> AsyncGenerator[str | ToolCall, None]:
        """Reply text, streamed as it is generated (deltas, not cumulative), and the calls of `tools`
        the model makes, each once complete; an async generator, so that callers can close it
        (which stops the work)."""
        ...


@runtime_checkable
class TTS(Protocol):
    name: str
    sample_rate: int  # the rate of every chunk `stream` yields

    def stream(self, text: str, language: str = "en", voice: str | None = None) -> AsyncGenerator[bytes, None]:
        """Speech for `text` in `language` (its voice for it) as PCM chunks at `sample_rate`, first
        chunk ASAP (an async generator, as LLM's)."""
        ...


@runtime_checkable
class TurnDetector(Protocol):
    name: str

    async def complete(self, pcm: bytes, sample_rate: int = 16000) -> float:
        """Probability (0..1) that the speaker has finished their turn, from the utterance so far.

        `pcm` is the utterance up to the pause being judged (mono int16); only its
        end matters to the model, so callers may pass just the last seconds.
        """
        ...


@dataclass
class Engines:
    """The process-wide engines, built once in server.py and shared by sessions."""

    stt: STT
    llm: LLM
    tts: TTS
    turn: TurnDetector | None = None  # None: turns end on silence alone

    def _all(self) -> list[tuple[str, STT | LLM | TTS | TurnDetector]]:
        out: list[tuple[str, STT | LLM | TTS | TurnDetector]] = [("stt", self.stt), ("llm", self.llm), ("tts", self.tts)]
        if self.turn is not None:
            out.append(("turn", self.turn))
        return out

    async def start(self) -> None:
        for _, engine in self._all():
            start = getattr(engine, "start", None)
            if start is not None:
                await start()

    async def close(self) -> None:
        for _, engine in self._all():
            close = getattr(engine, "close", None)
            if close is not None:
                await close()

    def readiness(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for stage, engine in self._all():
            info: dict[str, object] = {"engine": engine.name, "ready": bool(getattr(engine, "ready", True))}
            depth = getattr(engine, "queue_depth", None)
            if depth is not None:
                info["queue"] = depth
            out[stage] = info
        return out


async def each_within(stream: AsyncIterator[T], timeout_s: float, stage: Stage, what: str = "response") -> AsyncGenerator[T, None]:
    """The items of `stream`, each of which must arrive within `timeout_s` (the first included).

    The source is closed however the iteration ends, which is what cancels its work.
    """
    try:
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise EngineError(stage, f"no {what} for {timeout_s:g} s") from None
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
