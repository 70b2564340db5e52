"""In-memory ports and scripted engines: a conversation runs in virtual time, without a network.

`Harness` feeds 20 ms microphone frames in media time and, after each, lets the
event loop settle and the in-memory output play 20 ms. Everything a test asserts
is then a function of the audio it fed: no sleeps, no wall clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kit.speech import speak
from pipeline.conversation import Conversation, ConversationConfig
from pipeline.engines.base import EngineError, Engines, Message
from pipeline.events import Event
from pipeline.ports import Playback, PlaybackKind, PlaybackListener, Played
from pipeline.segmenter import SegmenterConfig

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


class MemoryAudio:
    """The AudioOutput port in memory, at 16 kHz, played by `advance()` in virtual time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.queue: list[tuple[Hashable, np.ndarray]] = []
        self.paused = False
        self.pauses = 0  # times playback was paused
        self.played_frames: list[tuple[float, np.ndarray]] = []  # (t, samples) of each frame that left
        self._listeners: list[PlaybackListener] = []
        self._totals: dict[Hashable, int] = {}
        self._done: dict[Hashable, int] = {}
        self._current: Hashable | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    def add_listener(self, listener: PlaybackListener) -> None:
        self._listeners.append(listener)

    def write(self, pcm: bytes, sample_rate: int, mark: Hashable) -> None:
        assert sample_rate == RATE
        samples = np.frombuffer(pcm, dtype=np.int16)
        self.queue.append((mark, samples))
        self._totals[mark] = self._totals.get(mark, 0) + len(samples)
        self._done.setdefault(mark, 0)
        self._drained.clear()

    def pause(self) -> None:
        self.pauses += int(not self.paused)
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def clear(self) -> list[Played]:
        marks = list(dict.fromkeys([m for m, _ in self.queue] + ([self._current] if self._current is not None else [])))
        out = [Played(m, self._done.get(m, 0), self._totals.get(m, 0)) for m in marks]
        self.queue.clear()
        self.paused = False
        if self._current is not None:
            self._tell(PlaybackKind.END, self._current)
            self._current = None
        self._drained.set()
        return out

    async def wait_for_playout(self) -> None:
        while self.queue:
            await self._drained.wait()

    def level_dbfs(self, window_s: float) -> float:
        levels = [_dbfs(s) for t, s in self.played_frames if t >= self.now - window_s and np.any(s)]
        return max(levels, default=-math.inf)

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    @property
    def queued_seconds(self) -> float:
        return sum(len(samples) for _, samples in self.queue) / RATE

    def advance(self) -> np.ndarray:
        """Play one 20 ms frame (silence if paused or idle); returns it."""
        out = np.zeros(FRAME, dtype=np.int16)
        filled = 0
        while filled < FRAME and self.queue and not self.paused:
            mark, samples = self.queue[0]
            if mark != self._current:
                if self._current is not None:
                    self._tell(PlaybackKind.END, self._current)
                self._current = mark
                self._tell(PlaybackKind.START, mark)
            take = min(FRAME - filled, len(samples))
            out[filled : filled + take] = samples[:take]
            filled += take
            self._done[mark] += take
            if take == len(samples):
                self.queue.pop(0)
            else:
                self.queue[0] = (mark, samples[take:])
        if not self.queue:
            if self._current is not None:
                self._tell(PlaybackKind.END, self._current)
                self._current = None
            self._drained.set()
        self.played_frames.append((self.now, out))
        self.now += FRAME / RATE
        return out

    def audible(self, start: float = 0.0, end: float = math.inf) -> list[float]:
        return [t for t, s in self.played_frames if start <= t < end and np.abs(s).max(initial=0) > 300]

    def _tell(self, kind: PlaybackKind, mark: Hashable) -> None:
        for listener in self._listeners:
            listener(Playback(kind, mark, self.now))


def _dbfs(samples: np.ndarray) -> float:
    power = float(np.mean(samples.astype(np.float64) ** 2))
    return 10 * math.log10(power / 32768**2) if power > 0 else -math.inf


@dataclass
class FakeSTT:
    """Transcribes by `script(seconds of audio) -> text`; `fail` raises an EngineError instead."""

    script: Callable[[float], str]
    name: str = "fake-stt"
    partials: bool = True
    calls: list[float] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    fail: bool = False

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "") -> str:
        await asyncio.sleep(0)
        self.calls.append(len(pcm) / 2 / sample_rate)
        self.prompts.append(prompt)
        if self.fail:
            raise EngineError("stt", "the stand-in STT failed")
        return self.script(len(pcm) / 2 / sample_rate)


@dataclass
class FakeLLM:
    reply: str = "Paris is the capital of France. It is on the Seine."
    name: str = "fake-llm"
    requests: list[list[Message]] = field(default_factory=list)
    fail_after: int | None = None  # words, then an EngineError
    gate: asyncio.Event | None = None  # if set, the first word waits for it (a slow model)

    async def stream(self, messages: list[Message]) -> AsyncIterator[str]:
        self.requests.append(messages)
        if self.gate is not None:
            await self.gate.wait()
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

    async def stream(self, text: str) -> AsyncIterator[bytes]:
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
        stt: Callable[[float], str] = lambda s: "What is the capital of France?",
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
        self.engines = Engines(stt=self.stt, llm=self.llm, tts=FakeTTS(), turn=self.detector)
        seg = SegmenterConfig(**({"silence_ms": 1200, "pause_ms": 200, "hint_ms": 40} | (segmenter or {})))
        # Passes while the user speaks only where a test asks for them: the others count STT calls.
        config = {"partial_every_ms": 0} | config
        self.conversation = Conversation(self.audio, self._on_event, self.engines, seg, ConversationConfig(**config))
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
