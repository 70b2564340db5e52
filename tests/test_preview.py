"""Passes over the words so far while the user speaks (pipeline/preview.py): what starts one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from pipeline.engines.base import Engines, Heard
from pipeline.events import Event, TranscriptPartial
from pipeline.preview import Preview
from tests.fakes import FakeLLM, FakeTTS

pytestmark = pytest.mark.fast

SECOND = b"\0\0" * 16000


@dataclass
class SharedSTT:
    """One STT engine that other sessions use too: `idle_s` is how long it has had nothing to do."""

    idle_s: float = 10.0
    partials: bool = True
    name: str = "shared"
    calls: int = 0

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        self.calls += 1
        return Heard("the words so far")


@dataclass
class Session:
    stt: SharedSTT
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.preview = Preview(Engines(stt=self.stt, llm=FakeLLM(), tts=FakeTTS()), self.events.append, every_s=1.0)

    def speak(self, span: float) -> None:
        self.preview.feed(1, span, lambda: SECOND, lambda: "")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_pass_after_each_second_of_speech() -> None:
    s = Session(SharedSTT())
    for span in (0.5, 0.98, 1.0, 1.2, 1.9):
        s.speak(span)
        await settle()
    assert s.stt.calls == 1 and s.events == [TranscriptPartial("the words so far")]
    s.speak(2.0)
    await settle()
    assert s.stt.calls == 2
    await s.preview.close()


async def test_no_pass_while_the_shared_stt_has_been_busy_within_the_period() -> None:
    # Another session's turn (or pass) used the engine 0.3 s ago: all sessions together get at
    # most one pass a period, so several people speaking at once do not queue passes up.
    stt = SharedSTT(idle_s=0.3)
    a, b = Session(stt), Session(stt)
    for s in (a, b):
        s.speak(1.5)
    await settle()
    assert stt.calls == 0 and a.events == b.events == []
    stt.idle_s = 1.2
    a.speak(1.52)
    await settle()
    assert stt.calls == 1 and len(a.events) == 1
    await a.preview.close()
    await b.preview.close()


async def test_a_pause_cancels_the_pass_unshown() -> None:
    gate = asyncio.Event()

    class SlowSTT(SharedSTT):
        async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
            self.calls += 1
            await gate.wait()
            return Heard("too late")

    s = Session(SlowSTT())
    s.speak(1.0)
    await settle()
    s.preview.cancel()  # the user paused: the turn's own pass goes first
    gate.set()
    await settle()
    assert s.stt.calls == 1 and s.events == []
    await s.preview.close()
