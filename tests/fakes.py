"""In-memory ports and scripted engines: a conversation runs in virtual time, without a network.

`Harness` feeds 20 ms microphone frames in media time and, after each, lets the
event loop settle and the in-memory output play 20 ms. Everything a test asserts
is then a function of the audio it fed: no sleeps, no wall clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kit.speech import speak
from pipeline.conversation import Conversation, ConversationConfig
from pipeline.engines.base import EngineError, Engines, Heard, Message, ToolCall, ToolSpec
from pipeline.events import Event
from pipeline.playback import PlaybackLedger
from pipeline.ports import PlaybackListener, Played
from pipeline.segmenter import SegmenterConfig
from pipeline.turn_protocol import TurnTakingConfig

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


class MemoryAudio:
    """The AudioOutput port in memory, at 16 kHz, played by `advance()` in virtual time.

    Its books (marks, what a clear reports, START/END, levels) are the real track's:
    pipeline/playback.py's PlaybackLedger.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses = 0  # times playback was paused
        self.played_frames: list[tuple[float, np.ndarray]] = []  # (t, samples) of each frame that left
        self._ledger = PlaybackLedger(RATE)
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def queue(self) -> list[tuple[Hashable, np.ndarray]]:
        """(mark, samples not yet played) of each queued chunk."""
        return self._ledger.queued()

    @property
    def paused(self) -> bool:
        return self._ledger.paused

    def add_listener(self, listener: PlaybackListener) -> None:
        self._ledger.add_listener(listener)

    def write(self, pcm: bytes, sample_rate: int, mark: Hashable) -> None:
        assert sample_rate == RATE
        self._ledger.write(mark, np.frombuffer(pcm, dtype=np.int16))
        if self._ledger.busy:
            self._drained.clear()

    def pause(self) -> None:
        self.pauses += int(not self.paused)
        self._ledger.paused = True

    def resume(self) -> None:
        self._ledger.paused = False

    def clear(self) -> list[Played]:
        dropped = self._ledger.clear(self.now)
        self._drained.set()
        return dropped

    async def wait_for_playout(self) -> None:
        while self._ledger.busy:
            await self._drained.wait()

    def level_dbfs(self, window_s: float) -> float:
        return self._ledger.level_dbfs(self.now, window_s)

    @property
    def busy(self) -> bool:
        return self._ledger.busy

    @property
    def queued_seconds(self) -> float:
        return self._ledger.queued_samples / RATE

    def advance(self) -> np.ndarray:
        """Play one 20 ms frame (silence if paused or idle); returns it."""
        out = self._ledger.take(FRAME, self.now)
        if not self._ledger.busy:
            self._drained.set()
        self.played_frames.append((self.now, out))
        self.now += FRAME / RATE
        return out

    def audible(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        return [t for t, s in self.played_frames if start <= t < end and np.abs(s).max(initial=0) > 300]


@dataclass
class FakeSTT:
    """Transcribes by `script(seconds of audio) -> text` (or a `Heard`); `fail` raises an EngineError instead."""

    script: Callable[[float], str | Heard]
    name: str = "fake-stt"
    partials: bool = True
    calls: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # the `language` each call was given
    fail: bool = False

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        await asyncio.sleep(0)
        self.calls.append(len(pcm) / 2 / sample_rate)
        self.prompts.append(prompt)
        self.hints.append(language)
        if self.fail:
            raise EngineError("stt", "the stand-in STT failed")
        result = self.script(len(pcm) / 2 / sample_rate)
        return result if isinstance(result, Heard) else Heard(result)


@dataclass
class FakeLLM:
    reply: str = "Paris is the capital of France. It is on the Seine."
    name: str = "fake-llm"
    requests: list[list[Message]] = field(default_factory=list)
    fail_after: int | None = None  # words, then an EngineError
    gate: asyncio.Event | None = None  # if set, the first word waits for it (a slow model)
    calls: list[ToolCall] = field(default_factory=list)  # made (instead of words) by the first request offered tools
    offered: list[list[ToolSpec] | None] = field(default_factory=list)

    async def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> AsyncIterator[str | ToolCall]:
        self.requests.append(messages)
        self.offered.append(tools)
        if self.gate is not None:
            await self.gate.wait()
        if tools and self.calls:
            calls, self.calls = self.calls, []
            for call in calls:
                await asyncio.sleep(0)
                yield call
            return
        for i, word in enumerate(self.reply.split(" ")):
            if self.fail_after is not None and i >= self.fail_after:
                raise EngineError("llm", "the stand-in LLM failed")
            await asyncio.sleep(0)
            yield word if i == 0 else " " + word


@dataclass
class FakeTTS:
    """Speaks with espeak-ng (a real voice, so the VAD hears its echo as speech)."""

    name: str = "fake-tts"
    sample_rate: int = RATE
    spoken: list[tuple[str, str]] = field(default_factory=list)  # (language, text) of each request

    async def stream(self, text: str, language: str = "en") -> AsyncIterator[bytes]:
        self.spoken.append((language, text))
        await asyncio.sleep(0)
        samples = speak(text, voice="en-us+m3", wpm=200)
        for i in range(0, len(samples), 3200):
            yield samples[i : i + 3200].tobytes()


@dataclass
class FakeTurnDetector:
    """End-of-turn probability by `script(seconds of audio) -> p`."""

    script: Callable[[float], float]
    name: str = "fake-turn"
    calls: list[float] = field(default_factory=list)

    async def complete(self, pcm: bytes, sample_rate: int = 16000) -> float:
        await asyncio.sleep(0)
        self.calls.append(len(pcm) / 2 / sample_rate)
        return self.script(len(pcm) / 2 / sample_rate)


class Harness:
    """One conversation on fakes, driven frame by frame in media time."""

    def __init__(
        self,
        stt: Callable[[float], str | Heard] = lambda s: "What is the capital of France?",
        turn: Callable[[float], float] | None = lambda s: 0.9,
        llm: FakeLLM | None = None,
        echo_db: float | None = None,  # mix what is played back into the mic, this many dB down, 60 ms late
        segmenter: dict[str, Any] | None = None,
        stt_partials: bool = True,
        **config: Any,
    ) -> None:
        self.t = 0.0
        self.audio = MemoryAudio()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.stt = FakeSTT(stt, partials=stt_partials)
        self.llm = llm or FakeLLM()
        self.detector = FakeTurnDetector(turn) if turn is not None else None
        self.tts = FakeTTS()
        self.engines = Engines(stt=self.stt, llm=self.llm, tts=self.tts, turn=self.detector)
        seg = SegmenterConfig(**({"silence_ms": 1200, "pause_ms": 200, "hint_ms": 40} | (segmenter or {})))
        # Passes while the user speaks only where a test asks for them: the others count STT calls.
        config = {"partial_every_ms": 0} | config
        rules = {k: config.pop(k) for k in list(config) if k in {f.name for f in dataclasses.fields(TurnTakingConfig)}}
        conversation = ConversationConfig(**config, turn_taking=TurnTakingConfig(**rules))
        self.conversation = Conversation(self.audio, self._on_event, self.engines, seg, conversation)
        self.echo_db = echo_db

    def _on_event(self, event: Event) -> None:
        self.events.append((self.t, event.to_dict()))

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def feed(self, samples: np.ndarray) -> None:
        """Speak `samples` (16 kHz int16) into the mic, 20 ms at a time, while the output plays."""
        samples = np.concatenate([samples, np.zeros(-len(samples) % FRAME, dtype=np.int16)])
        for i in range(0, len(samples), FRAME):
            frame = samples[i : i + FRAME]
            if self.echo_db is not None and len(self.audio.played_frames) > 3:
                echo = self.audio.played_frames[-3][1].astype(np.float64) * 10 ** (-self.echo_db / 20)
                frame = np.clip(frame + echo, -32768, 32767).astype(np.int16)
            self.conversation.on_audio(frame.tobytes(), self.t)
            await self.settle()
            self.audio.advance()
            self.t += FRAME / RATE

    async def silence(self, seconds: float) -> None:
        await self.feed(np.zeros(int(seconds * RATE), dtype=np.int16))

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == type_]

    def first(self, type_: str, **match: Any) -> tuple[float, dict[str, Any]]:
        for t, e in self.events:
            if e["type"] == type_ and all(e.get(k) == v for k, v in match.items()):
                return t, e
        raise AssertionError(f"no {type_} {match} in {[e['type'] for _, e in self.events]}")

    async def close(self) -> None:
        await self.conversation.close()
