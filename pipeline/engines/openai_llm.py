"""Streaming chat completions on any OpenAI-compatible `/chat/completions` endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from pipeline.engines.base import EngineError, Message
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

    async def stream(self, messages: list[Message]) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        stream: Any = None
        started = False
        try:
            # One deadline covers the request and the first token; it restarts after each token
            # we hand out, so time the consumer spends with a token never counts against the server.
            deadline = loop.time() + self.timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    stream = await self.client.chat.completions.create(
                        model=self.endpoint.model,
                        messages=list(messages),  # type: ignore[arg-type]
                        stream=True,
                        max_tokens=self.max_tokens,
                    )
            except Exception as exc:
                raise self._error(exc, started) from None
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    raise self._error(exc, started) from None
                text = _delta_text(chunk)
                if text is None:
                    raise EngineError("llm", f"LLM reply interrupted: malformed response from {self._host}")
                if text:
                    started = True
                    yield text
                    deadline = loop.time() + self.timeout_s
        finally:
            # Closing the response drops the connection, which is how the server learns to stop generating.
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()


def _delta_text(chunk: Any) -> str | None:
    """The content delta of a chunk ("" for chunks without text); None when the chunk is not a chat chunk."""
    try:
        choices = chunk.choices
        if not choices:
            return ""  # e.g. a trailing usage chunk
        content = choices[0].delta.content
    except (AttributeError, IndexError, TypeError):
        return None
    if content is None:
        return ""
    return content if isinstance(content, str) else None
