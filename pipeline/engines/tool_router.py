"""The embedded LLM's way to the built-in tools: a router on the user's words, not the model's own calls.

`RoutedLLM` wraps an LLM engine with it (TOOL_ROUTER: by default the embedded one, in one process
or behind the supervisor's llama.cpp server).

Offered tools through its chat template, the embedded Qwen2.5-Coder wrote about the functions
instead of calling them, and the tool block cost seconds of prompt on two cores (decision 0014).
So for the built-ins the engine decides from the words: a plain arithmetic question, a question
about the date or time now, or a timer or reminder asked for or cancelled becomes the call the
model would have made, and its result is said in a sentence made for what was asked (the model,
given the result, took two seconds of prompt and still answered "what day is it tomorrow?" with
today). English words only; anything else, and anything the sentences here do not cover, goes to
the model.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator, Collection
from contextlib import aclosing
from typing import Any

from pipeline.engines.base import LLM, Message, ToolCall, ToolSpec

ROUTED = ("calculate", "current_time", "set_timer", "cancel_timer")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_OPERATORS = [
    (r"multiplied by|times|x|×|\*", "*"),
    (r"divided by|over|÷|/", "/"),
    (r"plus|added to|\+", "+"),
    (r"minus|less|take away|-", "-"),
]
_NUMBER = r"\d+(?:\.\d+)?"
_OPERATOR = "|".join(f"(?:{pattern})" for pattern, _ in _OPERATORS)
_EXPRESSION = re.compile(
    rf"{_NUMBER}(?:\s*(?:{_OPERATOR})\s*{_NUMBER})+(?:\s*squared)?|{_NUMBER}\s*squared|{_NUMBER}\s*percent of\s*{_NUMBER}"
)
_CLOCK_WORDS = re.compile(r"\b(time|date|day|month|year)\b")
_NOW_WORDS = re.compile(r"\b(is it|it is|today|tonight|now|tomorrow|yesterday|current|the time|the date|this year|this month)\b")


def _digits(text: str) -> str:
    """Number words as digits, the rest as it was, tokens spaced: "forty seven times 2" -> "47 times 2"."""
    out: list[str] = []
    total, current = 0, None  # the number being read: thousands so far, and the part below them

    def flush() -> None:
        nonlocal total, current
        if current is not None:
            out.append(str(total + current))
        total, current = 0, None

    for token in re.findall(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]", text):
        if token in _UNITS or token in _TENS:
            n = _UNITS.get(token, _TENS.get(token, 0))
            if current is not None and not (current % 100 == 0 or (current % 10 == 0 and current % 100 >= 20 and n < 10)):
                flush()  # "one two": two numbers
            current = (current or 0) + n
        elif token in _SCALES and current is not None:
            if _SCALES[token] == 100:
                current *= 100
            else:
                total, current = total + current * _SCALES[token], 0
        elif token == "and" and current is not None and current % 100 == 0 and current:
            continue  # "two hundred and five"
        else:
            flush()
            out.append(token)
    flush()
    return " ".join(out)


def arithmetic_in(text: str) -> str | None:
    """The arithmetic expression a question plainly asks for ("What is 47 times 23?" -> "47 * 23"), if any."""
    spoken = _digits(
        re.sub(r"(?<=\d),(?=\d{3})", "", text.lower()).replace("a hundred", "one hundred").replace("-", " ").replace("%", " percent")
    )
    match = _EXPRESSION.search(spoken)
    if match is None:
        return None
    expression = match.group(0)
    expression = re.sub(rf"({_NUMBER})\s*percent of\s*({_NUMBER})", r"\1 / 100 * \2", expression)
    for pattern, symbol in _OPERATORS:
        expression = re.sub(rf"\s*(?<![\w.])(?:{pattern})(?![\w.])\s*", f" {symbol} ", expression)
    expression = re.sub(r"\s*squared", " ** 2", expression)
    return re.sub(r"\s+", " ", expression).strip()


def asks_the_clock(text: str) -> bool:
    lowered = text.lower()
    return bool(_CLOCK_WORDS.search(lowered) and _NOW_WORDS.search(lowered))


_DURATION = re.compile(r"(\d+(?:\.\d+)?|an?|half an?)\s+(hour|hr|minute|min|second|sec)s?\b(\s+and a half)?")
_SIZES = {"hour": 3600, "hr": 3600, "minute": 60, "min": 60, "second": 1, "sec": 1}
_CANCEL = re.compile(r"\b(cancel|stop|delete|remove|clear|turn off)\b.*\b(timer|reminder|alarm)s?\b")
_IN_DURATION = re.compile(r"\b(?:in|after|for)\s+(?:[\w.-]+\s+){1,3}?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?)\b(?:\s+and a half)?")
_REMINDER = re.compile(r"\bremind me (?:to |about |that )?(?P<what>.+)")


def timer_in(text: str) -> tuple[float, str] | None:
    """The timer or reminder `text` asks for, as seconds and what to remind of ("" for a plain timer)."""
    spoken = _digits(text.lower().replace("-", " "))
    found = list(_DURATION.finditer(spoken))
    if not found or not re.search(r"\b(timer|alarm|remind me|wake me)\b", spoken):
        return None
    seconds = 0.0
    for number, unit, half in (m.groups() for m in found):
        count = 0.5 if number.startswith("half") else 1.0 if number in ("a", "an") else float(number)
        seconds += (count + (0.5 if half else 0)) * _SIZES[unit]
    label = ""
    if reminder := _REMINDER.search(text.lower()):  # what to remind of, in the user's words, without the duration
        what = _IN_DURATION.sub(" ", reminder.group("what"))
        label = re.sub(r"^(to|about|that)\s+|\s+", lambda m: " " if m.group(0).isspace() else "", what.strip(" .,!?")).strip()
    return seconds, label


def route(text: str, offered: Collection[str]) -> ToolCall | None:
    """The built-in tool call `text` plainly asks for, among those `offered`; None: the model answers."""
    if "cancel_timer" in offered and _CANCEL.search(text.lower()):
        return ToolCall(f"call_{uuid.uuid4().hex[:12]}", "cancel_timer", "{}")
    if "set_timer" in offered and (timer := timer_in(text)) is not None:
        arguments = {"seconds": timer[0], **({"label": timer[1]} if timer[1] else {})}
        return ToolCall(f"call_{uuid.uuid4().hex[:12]}", "set_timer", json.dumps(arguments))
    if "calculate" in offered and (expression := arithmetic_in(text)) is not None:
        return ToolCall(f"call_{uuid.uuid4().hex[:12]}", "calculate", json.dumps({"expression": expression}))
    if "current_time" in offered and asks_the_clock(text):
        return ToolCall(f"call_{uuid.uuid4().hex[:12]}", "current_time", "{}")
    return None


_CLOCK_RESULT = re.compile(
    r"(?P<weekday>\w+), (?P<day>\d+) (?P<month>\w+) (?P<year>\d+), (?P<hour>\d+):(?P<minute>\d+) .*?"
    r"tomorrow is (?P<tomorrow>[^,]+, \d+ \w+), yesterday was (?P<yesterday>[^,]+, \d+ \w+)"
)


def _ordinal(day: int) -> str:
    return f"{day}{'th' if 10 <= day % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def answer(question: str, call: ToolCall, result: str) -> str | None:
    """What to say for a routed call's result, or None: the model answers instead."""
    if call.name in ("set_timer", "cancel_timer"):
        return _timer_answer(call, result)
    if call.name == "calculate" and " = " in result and not result.startswith("error"):
        expression, value = result.rsplit(" = ", 1)
        spoken = expression.replace(" * ", " times ").replace(" / ", " divided by ").replace(" + ", " plus ")
        spoken = spoken.replace(" - ", " minus ").replace(" ** 2", " squared")
        return f"{spoken} is {value.split(' (')[0]}."
    clock = _CLOCK_RESULT.match(result) if call.name == "current_time" else None
    if clock is None:
        return None
    c, q = clock.groupdict(), question.lower()
    hour, minute = int(c["hour"]), int(c["minute"])
    time_said = f"{hour % 12 or 12}:{minute:02d} {'AM' if hour < 12 else 'PM'}"
    if "tomorrow" in q:
        return f"Tomorrow is {c['tomorrow']}."
    if "yesterday" in q:
        return f"Yesterday was {c['yesterday']}."
    if "time" in q:
        return f"It's {time_said}."
    if "year" in q:
        return f"It's {c['year']}."
    if "day of the month" in q:
        return f"It's the {_ordinal(int(c['day']))}."
    if "date" in q:
        return f"It's {c['weekday']}, {c['day']} {c['month']} {c['year']}."
    if "month" in q:
        return f"It's {c['month']}."
    if "day" in q:
        return f"It's {c['weekday']}."
    return f"It's {c['weekday']}, {c['day']} {c['month']}, {time_said}."


def _timer_answer(call: ToolCall, result: str) -> str:
    if result.startswith("error: "):
        return f"Sorry, {result.removeprefix('error: ')}."
    if call.name == "cancel_timer":
        return f"{result[0].upper()}{result[1:]}."
    duration = re.search(r"set for (.+?), due", result)
    label = json.loads(call.arguments or "{}").get("label")
    when = duration.group(1) if duration else "then"
    return f"Reminder set for {when}: {label}." if label else f"Timer set for {when}."


def unrouted(tools: list[ToolSpec] | None) -> list[ToolSpec] | None:
    """The tools the model itself is offered: not those the router calls."""
    return [tool for tool in tools or () if tool["function"]["name"] not in ROUTED] or None


def routed_answer(messages: list[Message]) -> str | None:
    """The sentence for a routed tool's result, when the messages end with one."""
    if len(messages) < 3 or messages[-1]["role"] != "tool" or messages[-3]["role"] != "user":
        return None
    calls = messages[-2].get("tool_calls") or []
    if len(calls) != 1 or calls[0]["function"]["name"] not in ROUTED:
        return None
    function = calls[0]["function"]
    return answer(messages[-3]["content"], ToolCall(calls[0]["id"], function["name"], function["arguments"]), messages[-1]["content"])


class RoutedLLM:
    """`llm` with the built-in tools called from the user's words and their results said here;
    other tools, and everything else, are its model's."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        self.name = llm.name

    def __getattr__(self, name: str) -> Any:  # start, close, warm, readiness: the engine's own
        return getattr(self.llm, name)

    async def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> AsyncGenerator[str | ToolCall, None]:
        if tools and messages and messages[-1]["role"] == "user":
            call = route(messages[-1]["content"], {tool["function"]["name"] for tool in tools})
            if call is not None:
                yield call
                return
        if (said := routed_answer(messages)) is not None:
            yield said
            return
        offered = unrouted(tools)
        async with aclosing(self.llm.stream(messages, offered) if offered else self.llm.stream(messages)) as deltas:
            async for delta in deltas:
                yield delta
