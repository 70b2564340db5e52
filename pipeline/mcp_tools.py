"""Tools from MCP servers (`MCP_SERVERS`), through the official `mcp` SDK.

Each server is one connection for the whole process, opened at start in a task of its own (the
SDK's client lives in one task), its tools offered to every conversation beside the built-in
ones. A server that cannot be reached is logged and left out: the assistant still talks.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence
from typing import Any

from pipeline.tools import Context, Tool, ToolFailed

log = logging.getLogger("pipeline.mcp")

CONNECT_TIMEOUT_S = 20.0


def _target(spec: str) -> Any:
    """A URL is a Streamable HTTP server; anything else a command line started as a stdio server."""
    from mcp import StdioServerParameters

    if spec.startswith(("http://", "https://")):
        return spec
    command, *args = shlex.split(spec)
    return StdioServerParameters(command=command, args=args)


class McpServers:
    def __init__(self, specs: Sequence[str], reserved: Sequence[str] = ()) -> None:
        self.specs = list(specs)
        self.tools: list[Tool] = []
        self._reserved = set(reserved)  # names taken (the built-in tools)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> list[Tool]:
        for spec in self.specs:
            ready: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._serve(spec, ready), name=f"mcp {spec[:40]}"))
            try:
                tools = await asyncio.wait_for(asyncio.shield(ready), CONNECT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - one server down is a warning, not a dead product
                log.warning("MCP server %r is left out: %s", spec, exc or type(exc).__name__)
                continue
            for tool in tools:
                if tool.name in self._reserved:
                    log.warning("MCP server %r: tool %r is left out: the name is taken", spec, tool.name)
                    continue
                self._reserved.add(tool.name)
                self.tools.append(tool)
            log.info("MCP server %r: tools %s", spec, ", ".join(t.name for t in tools))
        return self.tools

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, spec: str, ready: asyncio.Future[list[Tool]]) -> None:
        from mcp import Client

        try:
            async with Client(_target(spec)) as client:
                listing = await client.list_tools()
                ready.set_result([_tool(client, t) for t in listing.tools])
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP server %r closed: %s", spec, exc)


def _tool(client: Any, listed: Any) -> Tool:
    async def run(args: dict[str, Any], context: Context) -> str:
        try:
            result = await client.call_tool(listed.name, args)
        except Exception as exc:  # the server went away, or refused the call
            raise ToolFailed(f"the {listed.name} server failed: {exc}") from None
        text = "\n".join(getattr(block, "text", "") for block in result.content if getattr(block, "text", ""))
        if result.is_error:
            raise ToolFailed(text or f"{listed.name} failed")
        return text or "done"

    return Tool(listed.name, listed.description or listed.name, listed.input_schema, run)
