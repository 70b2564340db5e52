"""Timers and reminders: the pure core, the tools, and, in virtual time, a timer that speaks when
due, waits for a user who is speaking, and can be interrupted like any reply."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from kit.speech import concat, silence, speak
from pipeline.engines.base import ToolCall
from pipeline.engines.tool_router import ROUTED, answer, route, timer_in
from pipeline.history import UNASKED_NOTE
from pipeline.language import rules_for
from pipeline.timers import MAX_PENDING, Timer, TimerRefused, Timers, TimerStatus, say_duration
from pipeline.tools import Context, Toolbox, ToolFailed, ToolsConfig, built_in
from tests.fakes import FakeLLM, Harness

pytestmark = pytest.mark.fast

SET_3S = ToolCall("call_t", "set_timer", '{"seconds": 3}')
DUE = "Your timer for 3 seconds is up."


def test_timers_fall_due_in_order_and_are_said_once():
    seen: list[tuple[int, TimerStatus]] = []
    timers = Timers(lambda timer, status: seen.append((timer.id, status)))
    tea = timers.set(180, "", now=10.0)
    oven = timers.set(60, "check the oven", now=10.0)
    assert [t.id for t in timers.pending] == [oven.id, tea.id]
    assert timers.due(69.9) == []
    assert timers.due(70.0) == [oven]
    assert timers.due(500.0) == [tea] and timers.due(900.0) == []
    assert seen == [(1, TimerStatus.SET), (2, TimerStatus.SET), (2, TimerStatus.DUE), (1, TimerStatus.DUE)]


def test_a_timer_is_cancelled_by_its_label_or_as_the_last_one_set():
    timers = Timers()
    timers.set(60, "check the oven", now=0.0)
    timers.set(120, "", now=0.0)
    assert timers.cancel("oven").label == "check the oven"
    assert timers.cancel().duration == "2 minutes"
    with pytest.raises(TimerRefused, match="no timer to cancel"):
        timers.cancel()


def test_timers_out_of_range_or_too_many_are_refused():
    timers = Timers()
    for seconds in (0, 0.5, 24 * 3600 + 1):
        with pytest.raises(TimerRefused):
            timers.set(seconds, "", now=0.0)
    for _ in range(MAX_PENDING):
        timers.set(60, "", now=0.0)
    with pytest.raises(TimerRefused, match="already 10"):
        timers.set(60, "", now=0.0)


def test_what_is_said_when_one_is_due():
    assert say_duration(3) == "3 seconds" and say_duration(90) == "1 minute 30 seconds" and say_duration(7200) == "2 hours"
    assert rules_for("en").timer_done(Timer(1, 120, 0.0)) == "Your timer for 2 minutes is up."
    assert rules_for("en").timer_done(Timer(1, 120, 0.0, "check the oven")) == "Reminder: check the oven."
    assert rules_for("pt").timer_done(Timer(1, 60, 0.0)) == "O seu temporizador de 1 minuto terminou."
    assert rules_for("zh").timer_done(Timer(1, 60, 0.0)) == "1 分钟的计时到了。"


async def test_the_tools_set_and_cancel_on_the_conversations_clock():
    timers, now = Timers(), [100.0]
    context = Context(now=lambda: datetime(2026, 12, 2, 19, 0, tzinfo=UTC), timers=timers, media_now=lambda: now[0])
    box = Toolbox(built_in(("timers",)), context)
    assert [s["function"]["name"] for s in box.specs] == ["set_timer", "cancel_timer"]
    said = await box.run("set_timer", '{"minutes": 1.5, "label": "stir the soup"}')
    assert said == "reminder 'stir the soup' set for 1 minute 30 seconds, due at 19:01:30; it will be said aloud then"
    assert timers.pending[0].due == 190.0
    assert await box.run("cancel_timer", "{}") == "cancelled the reminder 'stir the soup'"
    for arguments, error in (('{"seconds": 0}', "between 1 second"), ('{"minutes": "soon"}', "numbers"), ("{}", "between")):
        with pytest.raises(ToolFailed, match=error):
            await box.run("set_timer", arguments)
    with pytest.raises(ToolFailed, match="no timer"):
        await box.run("cancel_timer", "{}")


def harness(**kwargs) -> Harness:
    h = Harness(llm=FakeLLM("Timer set.", calls=[SET_3S]), tools=ToolsConfig(("timers",)), **kwargs)
    return h


def spoken_at(h: Harness, text: str) -> float:
    """When the reply whose words are `text` began to play (its turn's `speaking` state)."""
    (turn,) = [e["turn"] for e in h.of("reply") if e["text"] == text]
    t, _ = h.first("state", state="speaking", turn=turn)
    return t


async def test_a_timer_set_by_typed_text_speaks_when_due_while_the_user_is_silent():
    h = harness()
    await h.silence(0.2)
    h.conversation.on_text("Set a timer for three seconds.")
    await h.silence(0.4)
    (set_,) = [e for e in h.of("timer") if e["status"] == "set"]
    t_set, _ = h.first("timer", status="set")
    assert set_ == {"type": "timer", "id": 1, "status": "set", "seconds": 3.0, "label": ""}
    await h.silence(6.0)
    t_due, _ = h.first("timer", status="due")
    assert 3.0 <= t_due - t_set < 3.03
    assert 0 <= spoken_at(h, DUE) - t_due <= 0.5, "said within half a second of its due time"
    assert (("en", DUE)) in h.tts.spoken and len(h.llm.requests) == 2, "said as it is: no model asked"
    (reply,) = [e for e in h.of("reply") if e["text"] == DUE]
    assert reply["interrupted"] is False and not [e for e in h.of("transcript") if e.get("turn") == reply["turn"]]
    entries = [(e.role, e.text) for e in h.conversation.history.entries]
    assert entries[-2:] == [("system", UNASKED_NOTE), ("assistant", DUE)], "the model knows it said it"
    assert h.conversation.history.messages("next")[-3] == {"role": "system", "content": UNASKED_NOTE}
    await h.close()


async def test_a_timer_set_by_voice_waits_for_a_user_who_is_speaking():
    question = "Set a timer for three seconds."
    h = harness(stt=lambda s: question if s < 3 else "And what is the capital of France?")
    await h.feed(concat(silence(0.2), speak(question)))
    await h.silence(2.0)
    t_set, _ = h.first("timer", status="set")
    # The user speaks from before the timer is due until after it, then hears their answer.
    await h.silence(t_set + 2.5 - h.t)
    await h.feed(speak("And what is the capital of France and how many people live in it these days"))
    t_spoken_end = h.t
    await h.silence(6.0)
    t_due, _ = h.first("timer", status="due")
    assert t_due < t_spoken_end, "it fell due while the user spoke"
    replies = [e["text"] for e in h.of("reply")]
    assert replies == ["Timer set.", "Timer set.", DUE], "the user's question is answered first"
    t_answered, _ = h.first("reply", turn=2)
    assert spoken_at(h, DUE) >= t_answered > t_spoken_end
    await h.close()


async def test_a_due_timer_is_interrupted_like_any_reply():
    h = harness(stt=lambda s: "Okay, thanks, stop.")
    await h.silence(0.2)
    h.conversation.on_text("Set a timer for three seconds.")
    while not h.of("timer") or h.of("timer")[-1]["status"] != "due":
        await h.silence(0.02)
    await h.silence(0.4)
    await h.feed(speak("Okay, thanks, stop."))
    await h.silence(3.0)
    (cut,) = [e for e in h.of("reply") if e["text"] == DUE]
    assert cut["interrupted"] is True and DUE.startswith(cut["heard"]) and cut["heard"], "heard in part: not said again"
    assert [text for _, text in h.tts.spoken].count(DUE) == 1
    notes = [(e.role, e.interrupted) for e in h.conversation.history.entries]
    assert notes[2:4] == [("system", False), ("assistant", True)]
    await h.close()


async def test_a_closed_session_leaves_no_timer_running():
    h = harness()
    h.conversation.on_text("Set a timer for three seconds.")
    await h.silence(0.5)
    assert len(h.conversation.timers.pending) == 1
    await h.close()
    assert {t.get_name() for t in asyncio.all_tasks()} <= {asyncio.current_task().get_name()}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("said", "timer"),
    [
        ("Set a timer for two minutes.", (120, "")),
        ("Set a 5-minute timer.", (300, "")),
        ("Can you set a timer for a minute and a half?", (90, "")),
        ("Set a timer for 1 hour and 30 minutes.", (5400, "")),
        ("Wake me up in twenty minutes.", (1200, "")),
        ("Remind me to check the oven in ten minutes.", (600, "check the oven")),
        ("Remind me in 5 minutes to call mom.", (300, "call mom")),
        ("Remind me about the meeting in half an hour.", (1800, "the meeting")),
        ("How many minutes are in an hour?", None),
        ("What is a timer?", None),
    ],
)
def test_the_embedded_engines_router_hears_timers(said, timer):
    assert timer_in(said) == (None if timer is None else (float(timer[0]), timer[1]))


def test_the_router_cancels_and_says_what_was_done():
    cancel = route("Cancel the timer, please.", ROUTED)
    assert cancel is not None and cancel.name == "cancel_timer"
    timer = ToolCall("c", "set_timer", '{"seconds": 120}')
    assert answer("", timer, "timer set for 2 minutes, due at 19:02:00; it will be said aloud then") == "Timer set for 2 minutes."
    reminder = ToolCall("c", "set_timer", '{"seconds": 600, "label": "check the oven"}')
    said = answer("", reminder, "reminder 'check the oven' set for 10 minutes, due at 19:10:00; it will be said aloud then")
    assert said == "Reminder set for 10 minutes: check the oven."
    assert answer("", cancel, "cancelled the timer for 2 minutes") == "Cancelled the timer for 2 minutes."
    assert answer("", cancel, "error: there is no timer to cancel") == "Sorry, there is no timer to cancel."


async def test_a_timer_set_before_the_first_frame_counts_from_it():
    """Media time is the inbound clock (about the monotonic one): unknown until audio arrives."""
    h = harness()
    h.t = 5000.0
    h.conversation.on_text("Set a timer for three seconds.")
    await h.settle()
    assert h.conversation.timers.pending[0].due is None
    await h.silence(2.5)
    assert not [e for e in h.of("timer") if e["status"] == "due"]
    await h.silence(1.0)
    t_due, _ = h.first("timer", status="due")
    assert 5003.0 <= t_due <= 5003.04
    await h.close()
