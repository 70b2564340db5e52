"""Streaming chat completions on any OpenAI-compatible `/chat/completions` endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from pipeline.engines.base import EngineError, Message, ToolCall, ToolSpec
from pipeline.engines.openai_common import Endpoint, OpenAIEngine, resolve_endpoint
from settings import Settings


class OpenAILLM(OpenAIEngine):
    def __init__(
        self, endpoint: Endpoint, max_tokens: int = Settings.llm_max_tokens, timeout_s: float = Settings.llm_timeout_s, max_retries: int = 1
    ) -> None:
        super().__init__(endpoint, timeout_s, max_retries)
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAILLM:
        return cls(resolve_endpoint(settings, "llm"), max_tokens=settings.llm_max_tokens, timeout_s=settings.llm_timeout_s)

    def _error(self, exc: BaseException, started: bool) -> EngineError:
        what = "LLM reply interrupted" if started else "LLM request failed"
        return EngineError("llm", f"{what}: {self._describe(exc)}")

    async def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> AsyncGenerator[str | ToolCall, None]:
        loop = asyncio.get_running_loop()
        stream: Any = None
        started = False
        calls: dict[int, list[str]] = {}  # by index: id, name, arguments so far
        try:
            # One deadline covers the request and the first token; it restarts after each token
            # we hand out, so time the consumer spends with a token never counts against the server.
            deadline = loop.time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    stream = await self.client.chat.completions.create(  # type: ignore[call-overload]
                        model=self.endpoint.model,
                        messages=list(messages),
                        stream=True,
                        max_tokens=self.max_tokens,
                        **({"tools": tools} if tools else {}),
                    )
            except Exception as exc:
                raise self._error(exc, started) from None
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise self._error(exc, started) from None
                delta = _delta(chunk)
                if delta is None:
                    raise EngineError("llm", f"LLM reply interrupted: malformed response from {self._host}")
                text, parts = delta
                for index, call_id, name, arguments in parts:
                    call = calls.setdefault(index, ["", "", ""])
                    call[0] = call[0] or call_id
                    call[1] += name
                    call[2] += arguments
                    started = True
                    deadline = loop.time() + self.timeout_s
                if text:
                    started = True
                    yield text
                    deadline = loop.time() + self.timeout_s
            for index, (call_id, name, arguments) in sorted(calls.items()):
                yield ToolCall(call_id or f"call_{index}", name, arguments)
        finally:
            # Closing the response drops the connection, which is how the server learns to stop generating.
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()


def _delta(chunk: Any) -> tuple[str, list[tuple[int, str, str, str]]] | None:
    """A chunk's text ("" for none) and its tool-call fragments (index, id, name, arguments); None when it is not a chat chunk."""
    try:
        choices = chunk.choices
        if not choices:
            return "", []  # e.g. a trailing usage chunk
        delta = choices[0].delta
        content = delta.content
        parts = []
        for part in getattr(delta, "tool_calls", None) or []:
            function = part.function
            name, arguments = (function.name or "", function.arguments or "") if function is not None else ("", "")
            parts.append((int(part.index), part.id or "", name, arguments))
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if content is None:
        return "", parts
    return (content, parts) if isinstance(content, str) else None
