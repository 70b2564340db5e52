"""Tools from real MCP servers (kit/mcp_server.py, written with the official SDK), over stdio and
Streamable HTTP, and through the whole product: offered to the LLM, run, their results in its context."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from kit.standin import StandinConfig, free_port, run_standin
from pipeline.mcp_tools import McpServers
from pipeline.tools import Toolbox, ToolFailed
from tests.conftest import make_settings

STDIO = f"{sys.executable} -m kit.mcp_server"


async def test_a_stdio_servers_tools_are_listed_and_called_and_a_server_that_is_down_is_left_out():
    servers = McpServers([STDIO, "/nonexistent/mcp-server"], reserved=["add"])  # "add" is taken: left out
    tools = await servers.start()
    try:
        assert [t.name for t in tools] == ["count_words", "refuse", "wait"]
        assert tools[0].spec["function"]["parameters"]["properties"]["text"]["type"] == "string"
        box = Toolbox(tools)
        assert await box.run("count_words", '{"text": "one two three"}') == "3 words"
        with pytest.raises(ToolFailed, match="refused: no"):
            await box.run("refuse", "{}")
        assert await box.run("wait", '{"seconds": 0.05}') == "waited 0.05 s"
    finally:
        await servers.close()


async def test_a_streamable_http_server():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kit.mcp_server", "--http", str(port), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.returncode is None, "the MCP server did not start"
                await asyncio.sleep(0.1)
        servers = McpServers([f"http://127.0.0.1:{port}/mcp"])
        tools = await servers.start()
        try:
            assert {t.name for t in tools} == {"count_words", "add", "refuse", "wait"}
            assert await Toolbox(tools).run("add", '{"a": 2, "b": 3.5}') == "5.5"
        finally:
            await servers.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_the_product_offers_an_mcp_servers_tools_runs_them_and_answers_with_their_results(aiohttp_server, clients):
    from server import build_app

    config = StandinConfig(llm_reply="It has four words.", llm_tool_calls=[{"name": "count_words", "arguments": '{"text": "a b c d"}'}])
    async with run_standin(config) as url:
        stages = {
            f"{stage}_{key}": value
            for stage in ("stt", "llm", "tts")
            for key, value in (("engine", "openai"), ("base_url", url), ("api_key", "sk-test"), ("model", f"standin-{stage}"))
        }
        settings = make_settings(**stages, tools="clock", mcp_servers=STDIO, ice_hosts="127.0.0.1", tool_timeout_s=60.0)
        server = await aiohttp_server(build_app(settings))  # its startup connects the MCP server
        client = await clients(str(server.make_url("")).rstrip("/"))
        await client.wait_event("state", state="listening")
        client.send({"type": "text", "text": "How many words are in a b c d?"})
        _, reply = await client.wait_event("reply", timeout=30)
        events = [e for _, e in client.events]
        assert reply["text"] == "It has four words."
        (call,) = [e for e in events if e["type"] == "tool_call"]
        (result,) = [e for e in events if e["type"] == "tool_result"]
        assert call["name"] == "count_words" and result["ok"] is True
        offered = [t["function"]["name"] for t in config.log.chat_requests[0]["tools"]]
        assert offered == ["current_time", "count_words", "add", "refuse", "wait"]
        assert config.log.last_messages[-1] == {"role": "tool", "tool_call_id": "call_2_0", "content": "4 words"}
