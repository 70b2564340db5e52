"""Tools in a spoken conversation, in virtual time: a held reply never acts, a call always has an
outcome in the history, nothing runs twice, a slow tool gets a filler (never over the user) and a
timeout an apology."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kit.speech import concat, silence, speak, voiced_bounds
from pipeline.engines.base import ToolCall
from pipeline.tools import Context, Tool, Toolbox, ToolsConfig
from tests.fakes import FakeLLM, Harness

pytestmark = pytest.mark.fast

QUESTION = "What is forty seven times twenty three?"
CALL = ToolCall("call_1", "calculate", '{"expression": "47 * 23"}')
LONG = " ".join(f"The answer is 1081, sentence {i} of a long reply." for i in range(1, 9))


class Counted:
    """A tool that counts its runs; with `gate`, each run waits for it (a slow tool)."""

    def __init__(self, result: str = "47 * 23 = 1081", gate: asyncio.Event | None = None) -> None:
        self.runs = 0
        self.cancelled = 0
        self.result = result
        self.gate = gate

    async def run(self, args: dict[str, Any], context: Context) -> str:
        self.runs += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.result


def harness(tool: Counted, reply: str = "It is 1081.", timeout_s: float = 5.0, **kwargs: Any) -> Harness:
    h = Harness(stt=kwargs.pop("stt", lambda s: QUESTION), llm=FakeLLM(reply, calls=[CALL]), tools=ToolsConfig(("arithmetic",)), **kwargs)
    calculate = Tool("calculate", "exact arithmetic", {"type": "object", "properties": {}}, tool.run)
    h.conversation.tools = Toolbox([calculate], timeout_s=timeout_s)
    return h


def tool_messages(h: Harness) -> tuple[list[str], list[str]]:
    """The call ids the history's context holds, and the ids of the results it holds."""
    messages = h.conversation.history.messages("next")
    calls = [c["id"] for m in messages for c in m.get("tool_calls", [])]
    results = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    return calls, results


async def ask(h: Harness, text: str = QUESTION) -> None:
    await h.feed(concat(silence(0.2), speak(text)))


async def test_a_held_reply_decides_to_call_a_tool_but_runs_it_only_once_released():
    tool = Counted()
    h = harness(tool, turn=lambda s: 0.1)  # the end-of-turn model says "unfinished": released by the long silence
    await ask(h)
    await h.silence(0.6)
    assert len(h.llm.requests) == 1 and h.llm.offered[0], "prepared at the pause, with the tools offered"
    assert tool.runs == 0 and h.of("tool_call") == [], "held: it has decided, it has not acted"
    await h.silence(2.0)
    assert tool.runs == 1
    assert h.of("tool_call") == [{"type": "tool_call", "name": "calculate", "arguments": CALL.arguments, "turn": 1}]
    (result,) = h.of("tool_result")
    assert result["ok"] is True and result["turn"] == 1
    assert h.llm.requests[1][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "47 * 23 = 1081"}
    assert h.of("reply")[-1]["text"] == "It is 1081." and h.audio.audible()
    assert tool_messages(h) == (["call_1"], ["call_1"])
    final = h.of("metrics")[-1]
    ((name, at, ms),) = final["tools"]
    assert final["final"] and name == "calculate" and ms == result["ms"], "on the turn's timeline, as its result said"
    assert final["released_at_ms"] <= at <= final["heard_at_ms"] + 20, "run once released, before the answer was heard"
    await h.close()


async def test_a_held_reply_thrown_away_runs_nothing():
    tool = Counted()
    h = harness(tool, turn=lambda s: 0.1)
    await ask(h, "What is forty seven times")
    await h.silence(0.3)
    assert len(h.llm.requests) == 1 and h.llm.offered[0] and tool.runs == 0
    await h.feed(speak("twenty three?"))  # the user goes on, before the long silence: the held reply is dropped
    assert tool.runs == 0
    await h.close()
    assert tool.runs == 0 and h.of("tool_call") == [] and h.conversation.history.entries == []


async def test_a_finished_tool_stays_in_the_history_when_its_reply_is_interrupted():
    words = {"text": QUESTION}
    tool = Counted()
    h = harness(tool, reply=LONG, stt=lambda s: words["text"])
    await ask(h)
    await h.silence(2.0)
    assert h.audio.audible() and tool.runs == 1
    words["text"] = "Stop. What about Spain?"
    await h.feed(concat(silence(0.2), speak("Stop. What about Spain?")))
    await h.silence(2.0)
    assert h.of("reply")[0]["interrupted"] is True
    assert tool_messages(h) == (["call_1"], ["call_1"])
    assert h.conversation.history.entries[1].acts[0].result == "47 * 23 = 1081"
    assert tool.runs == 1, "the interruption is a new request: nothing ran again"
    await h.close()


async def test_a_running_tool_whose_turn_is_interrupted_is_cancelled_and_recorded_as_cancelled():
    words = {"text": QUESTION}
    tool = Counted(gate=asyncio.Event())  # never finishes
    h = harness(tool, stt=lambda s: words["text"], timeout_s=30.0)
    await ask(h)
    await h.silence(0.6)
    assert tool.runs == 1 and h.of("tool_result") == []
    words["text"] = "Never mind, what about Spain?"
    await h.feed(concat(silence(0.2), speak("Never mind, what about Spain?")))
    await h.silence(2.0)
    assert tool.cancelled == 1
    assert [r["ok"] for r in h.of("tool_result")] == [False]
    calls, results = tool_messages(h)
    assert calls == results == ["call_1"], "the context never holds a call without an outcome"
    assert h.conversation.history.entries[1].acts[0].result.startswith("cancelled")
    # Its question is not carried into the next one (it would run the tool again): it is in the history.
    assert h.llm.requests[-1][-1] == {"role": "user", "content": "Never mind, what about Spain?"}
    assert tool.runs == 1
    await h.close()


async def until(h: Harness, done: Any, limit_s: float = 10.0) -> float:
    """Feed silence, a frame at a time, until `done()`; the media time it became true."""
    end = h.t + limit_s
    while not done():
        assert h.t < end, "it never happened"
        await h.silence(0.02)
    return h.t


async def test_a_slow_tool_gets_one_filler_and_its_timeout_an_apology_and_an_error():
    tool = Counted(gate=asyncio.Event())
    h = harness(tool, timeout_s=3.0)
    await ask(h)
    await until(h, lambda: h.of("tool_call"))
    called = h.first("tool_call")[0]
    said_filler = await until(h, lambda: ("en", "One moment.") in h.tts.spoken)
    assert 1.0 <= said_filler - called <= 1.1, "a second of silence, then one short filler"
    await until(h, lambda: h.of("error"))
    (error,) = h.of("error")
    assert error["stage"] == "tool" and "calculate" in error["message"]
    assert 3.0 <= h.first("error")[0] - called <= 3.1
    assert h.tts.spoken[-1] == ("en", "Sorry, I couldn't do that just now.")
    await h.silence(3.0)
    assert h.tts.spoken.count(("en", "One moment.")) == 1, "one filler, not one a second"
    assert h.conversation.history.entries[1].acts[0].result == "error: no answer within 3 s"
    assert tool_messages(h) == (["call_1"], ["call_1"])
    assert len(h.llm.requests) == 1, "the apology ends the turn"
    assert h.of("reply")[-1]["text"] == "Sorry, I couldn't do that just now."
    await h.close()


async def test_typed_text_acts_as_speech_does():
    tool = Counted()
    h = harness(tool)
    h.conversation.on_text("What is 47 times 23?")
    await h.silence(2.0)
    assert tool.runs == 1 and [e["name"] for e in h.of("tool_call")] == ["calculate"]
    assert h.of("reply")[-1]["text"] == "It is 1081."
    assert tool_messages(h) == (["call_1"], ["call_1"])
    await h.close()


async def test_without_tools_none_are_offered():
    h = Harness()
    h.conversation.on_text("What is 47 times 23?")
    await h.silence(1.0)
    assert h.llm.offered == [None]
    await h.close()


async def test_the_page_tells_the_clock_the_users_time_zone():
    h = Harness(tools=ToolsConfig(("clock",)))
    assert h.conversation.tools is not None
    h.conversation.on_timezone("Asia/Shanghai")
    assert getattr(h.conversation.tools.context.timezone, "key", None) == "Asia/Shanghai"
    h.conversation.on_timezone("Mars/Olympus")
    assert h.of("error")[0]["stage"] == "input" and "Mars/Olympus" in h.of("error")[0]["message"]
    assert getattr(h.conversation.tools.context.timezone, "key", None) == "Asia/Shanghai", "a bad name changes nothing"
    await h.close()


async def test_the_filler_never_plays_over_the_user():
    gate = asyncio.Event()
    tool = Counted(gate=gate)
    h = harness(tool, stt=lambda s: QUESTION if s > 1.2 else "Mm-hmm.")
    await ask(h)
    called = await until(h, lambda: h.of("tool_call"))
    await h.silence(0.8 - (h.t - called))
    backchannel = speak("Mm-hmm.")
    first, last = voiced_bounds(backchannel)
    voiced = (h.t + first, h.t + last)  # from 0.8 s into the tool's run, past the filler's second
    await h.feed(backchannel)
    end = h.t
    assert voiced[0] - called < 1.0 < voiced[1] - called and ("en", "One moment.") in h.tts.spoken, "due while the user spoke"
    assert h.audio.audible(voiced[0], voiced[1]) == [], "paused for the user: nothing played over them"
    assert h.audio.audible(voiced[1], end), "said once they stopped (a backchannel: the reply goes on)"
    gate.set()
    await until(h, lambda: h.of("reply"))
    assert h.of("reply")[-1]["text"] == "It is 1081." and tool.runs == 1 and h.tts.spoken.count(("en", "One moment.")) == 1
    await h.close()


async def test_a_tool_started_before_the_first_frame_is_timed_from_it():
    tool = Counted(gate=asyncio.Event())
    h = harness(tool, timeout_s=3.0)
    h.t = 5000.0  # media time is the inbound clock: unknown until audio arrives
    h.conversation.on_text("What is 47 times 23?")
    await h.settle()
    assert tool.runs == 1
    await h.silence(0.5)
    assert h.of("error") == [] and ("en", "One moment.") not in h.tts.spoken
    await until(h, lambda: h.of("error"))
    assert 5003.0 <= h.first("error")[0] <= 5003.1
    await h.close()
