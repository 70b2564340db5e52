"""What the assistant can do besides talk: tools the LLM may call, and the built-in ones.

A tool is a name, what it is for, a JSON schema of its arguments and an async function from
those arguments to text. The turn that calls one (pipeline/turn.py) runs it only once released,
at most once per call, within its timeout; this module knows nothing of turns.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import operator
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.engines.base import Message, ToolCall, ToolSpec
from pipeline.timers import TimerRefused, Timers
from settings import Settings


class ToolFailed(Exception):
    """A tool could not do what it was asked: the message is for the model (and the user)."""


@dataclass(frozen=True)
class Context:
    """What a tool may know of the session."""

    timezone: tzinfo = UTC
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    timers: Timers | None = None  # the conversation's, which says them when due
    media_now: Callable[[], float | None] = lambda: None  # the conversation's media time, the timers' clock


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    run: Callable[[dict[str, Any], Context], Awaitable[str]]

    @property
    def spec(self) -> ToolSpec:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class Toolbox:
    """The tools one conversation offers, by name, and how long each call may take."""

    def __init__(self, tools: Iterable[Tool] = (), context: Context | None = None, timeout_s: float = 5.0) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.context = context or Context()
        self.timeout_s = timeout_s

    def set_timezone(self, name: str) -> bool:
        """The user's time zone, as their page reports it; False if `name` is no IANA time zone."""
        zone = timezone_named(name)
        if getattr(zone, "key", None) != name:
            return False
        self.context = dataclasses.replace(self.context, timezone=zone)
        return True

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self.tools.values()]

    async def run(self, name: str, arguments: str) -> str:
        """The tool's answer to `arguments` (JSON, as the model wrote it); ToolFailed if there is none."""
        tool = self.tools.get(name)
        if tool is None:
            raise ToolFailed(f"there is no tool called {name!r}")
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            raise ToolFailed(f"the arguments are not JSON: {arguments[:80]!r}") from None
        if not isinstance(args, dict):
            raise ToolFailed("the arguments must be a JSON object")
        return await tool.run(args, self.context)


@dataclass
class Act:
    """One call of a tool and its outcome: what the history keeps, so a call never lacks one."""

    call: ToolCall
    result: str = "cancelled: the user interrupted before it finished"
    ok: bool = False
    ms: float | None = None

    @staticmethod
    def messages(acts: Sequence[Act]) -> list[Message]:
        """The calls and their results as the model is shown them (OpenAI's shape)."""
        if not acts:
            return []
        calls: Message = {"role": "assistant", "content": "", "tool_calls": [act.call.message() for act in acts]}
        results: list[Message] = [{"role": "tool", "tool_call_id": act.call.id, "content": act.result} for act in acts]
        return [calls, *results]


def timezone_named(name: str) -> tzinfo:
    """The time zone a page reports (an IANA name such as "Europe/Lisbon"); UTC if unknown."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


# -- the clock ------------------------------------------------------------------------------


async def _clock(args: dict[str, Any], context: Context) -> str:
    zone = timezone_named(str(args["timezone"])) if args.get("timezone") else context.timezone
    now = context.now().astimezone(zone)
    # Tomorrow and yesterday spelled out: a small model asked "what day is it tomorrow?" repeats today.
    tomorrow, yesterday = (now + timedelta(days=1), now - timedelta(days=1))
    where = getattr(zone, "key", None) or now.tzname()

    def day(d: datetime) -> str:
        return f"{d:%A}, {d.day} {d:%B}"

    return f"{day(now)} {now.year}, {now:%H:%M} ({where}); tomorrow is {day(tomorrow)}, yesterday was {day(yesterday)}"


CLOCK = Tool(
    "current_time",
    "The current date, day of the week and time where the user is (or in another IANA time zone).",
    {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA time zone, only if the user names a place"}}},
    _clock,
)


# -- exact arithmetic -----------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
MAX_EXPONENT = 64  # beyond it a number is not something to say aloud
MAX_DIGITS = 30


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**").replace(",", "")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolFailed(f"not an arithmetic expression: {expression!r}") from None

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > MAX_EXPONENT):
                raise ToolFailed("only whole powers up to 64")
            if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
                raise ToolFailed("division by zero")
            result = Fraction(_BINARY[type(node.op)](left, right))
            if len(str(abs(result.numerator))) > MAX_DIGITS:
                raise ToolFailed("the number is too large to say")
            return result
        raise ToolFailed(f"not an arithmetic expression: {expression!r}")

    return value(tree)


def say_number(value: Fraction) -> str:
    """A whole number exactly; otherwise a decimal to at most six places (and the fraction, when short)."""
    if value.denominator == 1:
        return str(value.numerator)
    decimal = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return f"{decimal} ({value.numerator}/{value.denominator})" if value.denominator <= 12 else decimal


async def _arithmetic(args: dict[str, Any], context: Context) -> str:
    expression = str(args.get("expression", ""))
    return f"{expression} = {say_number(evaluate(expression))}"


ARITHMETIC = Tool(
    "calculate",
    "Exact arithmetic. Use it for every sum, product, division or percentage instead of working it out yourself.",
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 47 * 23, (12 + 7) / 4, 15 / 100 * 80"}},
        "required": ["expression"],
    },
    _arithmetic,
)


# -- timers and reminders -------------------------------------------------------------------


def _timers(context: Context) -> Timers:
    if context.timers is None:
        raise ToolFailed("timers are not available here")
    return context.timers


async def _set_timer(args: dict[str, Any], context: Context) -> str:
    try:
        seconds = sum(float(args.get(unit) or 0) * size for unit, size in (("hours", 3600), ("minutes", 60), ("seconds", 1)))
        timer = _timers(context).set(seconds, str(args.get("label") or ""), context.media_now())
    except (TypeError, ValueError) as exc:  # TimerRefused among them
        raise ToolFailed(str(exc) if isinstance(exc, TimerRefused) else "the duration must be numbers") from None
    at = (context.now() + timedelta(seconds=timer.seconds)).astimezone(context.timezone)
    what = f"reminder {timer.label!r}" if timer.label else "timer"
    return f"{what} set for {timer.duration}, due at {at:%H:%M:%S}; it will be said aloud then"


async def _cancel_timer(args: dict[str, Any], context: Context) -> str:
    try:
        timer = _timers(context).cancel(str(args.get("label") or ""))
    except TimerRefused as exc:
        raise ToolFailed(str(exc)) from None
    return f"cancelled the reminder {timer.label!r}" if timer.label else f"cancelled the timer for {timer.duration}"


_NUMBER_OF = {"type": "number", "minimum": 0}
SET_TIMER = Tool(
    "set_timer",
    "Set a timer or a reminder; when it is due it is said aloud. Give the duration in any of hours, minutes and seconds.",
    {
        "type": "object",
        "properties": {
            "hours": _NUMBER_OF,
            "minutes": _NUMBER_OF,
            "seconds": _NUMBER_OF,
            "label": {"type": "string", "description": "what to remind the user of, in their words; none for a plain timer"},
        },
    },
    _set_timer,
)
CANCEL_TIMER = Tool(
    "cancel_timer",
    "Cancel a timer or reminder: the one whose label is given, else the one set last.",
    {"type": "object", "properties": {"label": {"type": "string"}}},
    _cancel_timer,
)

_BUILT_INS = {"clock": (CLOCK,), "arithmetic": (ARITHMETIC,), "timers": (SET_TIMER, CANCEL_TIMER)}
BUILT_IN = tuple(_BUILT_INS)  # what TOOLS may name


@dataclass(frozen=True)
class ToolsConfig:
    names: tuple[str, ...] = ()  # the built-in tools offered to the LLM
    timeout_s: float = 5.0
    timezone: str = ""  # the clock's until the page says the user's (IANA name; "": UTC)
    extra: Sequence[Tool] = ()  # from MCP servers: filled once they are connected, at start

    @classmethod
    def from_settings(cls, settings: Settings) -> ToolsConfig:
        return cls(settings.tool_list, settings.tool_timeout_s, settings.timezone)

    def toolbox(self, timers: Timers | None = None, media_now: Callable[[], float | None] = lambda: None) -> Toolbox | None:
        tools = [*built_in(self.names), *self.extra]
        context = Context(timezone_named(self.timezone), timers=timers, media_now=media_now)
        return Toolbox(tools, context, self.timeout_s) if tools else None


def built_in(names: Sequence[str]) -> list[Tool]:
    """The built-in tools a setting names ("clock", "arithmetic", "timers")."""
    unknown = [name for name in names if name not in _BUILT_INS]
    if unknown:
        raise ValueError(f"unknown tools {unknown}: the built-in ones are {', '.join(_BUILT_INS)}")
    return [tool for name in names for tool in _BUILT_INS[name]]
