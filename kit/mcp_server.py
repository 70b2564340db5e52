"""A real MCP server, written with the official SDK, that the tests start as a process:
`python -m kit.mcp_server` (stdio) or `python -m kit.mcp_server --http PORT` (Streamable HTTP, /mcp)."""

from __future__ import annotations

import argparse
import asyncio

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("voice-test-tools")


@server.tool()
def count_words(text: str) -> str:
    """How many words a text has."""
    return f"{len(text.split())} words"


@server.tool()
def add(a: float, b: float) -> str:
    """The sum of two numbers."""
    return f"{a + b:g}"


@server.tool()
def refuse(reason: str = "no") -> str:
    """Always fails."""
    raise ToolError(f"refused: {reason}")


@server.tool()
async def wait(seconds: float) -> str:
    """Waits, then says so."""
    await asyncio.sleep(seconds)
    return f"waited {seconds:g} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=0, help="serve Streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio")
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()


if __name__ == "__main__":
    main()
