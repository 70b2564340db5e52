"""The built-in tools (pipeline/tools.py): exact arithmetic, the clock in the user's time zone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from pipeline.engines.base import ToolCall
from pipeline.engines.tool_router import ROUTED, answer, arithmetic_in, asks_the_clock, route
from pipeline.tools import ARITHMETIC, BUILT_IN, CLOCK, Context, Toolbox, ToolFailed, built_in, evaluate, say_number, timezone_named


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("47 * 23", Fraction(1081)),
        ("47 × 23", Fraction(1081)),
        ("3 + 2", Fraction(5)),
        ("(12 + 7) / 4", Fraction(19, 4)),
        ("0.1 + 0.2", Fraction(3, 10)),  # exact, not 0.30000000000000004
        ("15 / 100 * 80", Fraction(12)),
        ("2 ** 10", Fraction(1024)),
        ("2^10", Fraction(1024)),
        ("-7 // 2", Fraction(-4)),
        ("1,000 * 3", Fraction(3000)),
    ],
)
def test_arithmetic_is_exact(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression", ["__import__('os').system('true')", "x + 1", "1 / 0", "2 ** 1000", "9 ** 9 ** 9", "", "True + 1", "'a' * 3"]
)
def test_arithmetic_refuses_what_is_not_plain_arithmetic(expression):
    with pytest.raises(ToolFailed):
        evaluate(expression)


def test_numbers_are_said_whole_or_as_a_short_decimal():
    assert say_number(Fraction(1081)) == "1081"
    assert say_number(Fraction(19, 4)) == "4.75 (19/4)"
    assert say_number(Fraction(1, 3)) == "0.333333 (1/3)"
    assert say_number(Fraction(1, 7919)) == "0.000126"


async def test_the_clock_tells_the_time_where_the_user_is():
    noon_utc = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    box = Toolbox([CLOCK], Context(timezone=timezone_named("Asia/Shanghai"), now=lambda: noon_utc))
    assert await box.run("current_time", "{}") == (
        "Wednesday, 2 December 2026, 20:00 (Asia/Shanghai); tomorrow is Thursday, 3 December, yesterday was Tuesday, 1 December"
    )
    there = await box.run("current_time", '{"timezone": "America/Sao_Paulo"}')
    assert there.startswith("Wednesday, 2 December 2026, 09:00 (America/Sao_Paulo)")


def test_an_unknown_time_zone_is_utc():
    assert timezone_named("Mars/Olympus") is UTC and timezone_named("") is UTC


async def test_bad_calls_fail_with_a_message_for_the_model():
    box = Toolbox([ARITHMETIC])
    assert await box.run("calculate", '{"expression": "6 * 7"}') == "6 * 7 = 42"
    for name, arguments in [("launch", "{}"), ("calculate", "not json"), ("calculate", "[1]"), ("calculate", '{"expression": "x"}')]:
        with pytest.raises(ToolFailed):
            await box.run(name, arguments)


def test_specs_are_openai_function_tools():
    spec = Toolbox(built_in(BUILT_IN)).specs
    assert [s["function"]["name"] for s in spec] == ["current_time", "calculate", "set_timer", "cancel_timer"]
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object" for s in spec)
    with pytest.raises(ValueError, match="unknown tools"):
        built_in(["clock", "weather"])


@pytest.mark.parametrize(
    ("said", "expression"),
    [
        ("What is forty seven times twenty three?", "47 * 23"),
        ("What is 47 times 23?", "47 * 23"),
        ("How much is 18 times 64?", "18 * 64"),
        ("Forty-seven times twenty-three?", "47 * 23"),
        ("What is two hundred and five minus seven?", "205 - 7"),
        ("What is 144 divided by 12?", "144 / 12"),
        ("What's 15% of 80?", "15 / 100 * 80"),
        ("What is 9 squared?", "9 ** 2"),
        ("What's 3,000 times 2?", "3000 * 2"),
        ("What is 12 plus 30?", "12 + 30"),
        ("How many legs does a cat have?", None),
        ("I have three apples and buy two more. How many do I have?", None),  # the model's, as before
        ("Tell me a joke.", None),
    ],
)
def test_the_router_finds_plain_arithmetic(said, expression):
    assert arithmetic_in(said) == expression


@pytest.mark.parametrize(
    ("said", "clock"),
    [
        ("What time is it?", True),
        ("What day is it today?", True),
        ("What's the date today?", True),
        ("What day will it be tomorrow?", True),
        ("Can you tell me the time, please?", True),
        ("What day was the moon landing?", False),
        ("What is the capital of France?", False),
    ],
)
def test_the_router_finds_questions_about_now(said, clock):
    assert asks_the_clock(said) is clock
    call = route(said, ROUTED)
    assert (call is not None and call.name == "current_time") is clock


def test_the_router_calls_only_what_is_offered():
    assert route("What is 6 times 7?", ["current_time"]) is None
    call = route("What is 6 times 7?", ROUTED)
    assert call is not None and call.name == "calculate" and json.loads(call.arguments) == {"expression": "6 * 7"}


CLOCK_RESULT = "Wednesday, 2 December 2026, 19:00 (UTC); tomorrow is Thursday, 3 December, yesterday was Tuesday, 1 December"


@pytest.mark.parametrize(
    ("question", "said"),
    [
        ("What time is it?", "It's 7:00 PM."),
        ("What day of the week is it today?", "It's Wednesday."),
        ("What is today's date?", "It's Wednesday, 2 December 2026."),
        ("What day will it be tomorrow?", "Tomorrow is Thursday, 3 December."),
        ("What day was it yesterday?", "Yesterday was Tuesday, 1 December."),
        ("Which day of the month is it?", "It's the 2nd."),
        ("What year is it?", "It's 2026."),
    ],
)
def test_a_routed_clock_result_is_said_for_what_was_asked(question, said):
    assert answer(question, ToolCall("c", "current_time", "{}"), CLOCK_RESULT) == said


def test_a_routed_sum_is_said_and_a_failure_is_left_to_the_model():
    assert answer("", ToolCall("c", "calculate", "{}"), "47 * 23 = 1081") == "47 times 23 is 1081."
    assert answer("", ToolCall("c", "calculate", "{}"), "19 / 4 = 4.75 (19/4)") == "19 divided by 4 is 4.75."
    assert answer("", ToolCall("c", "calculate", "{}"), "error: division by zero") is None
