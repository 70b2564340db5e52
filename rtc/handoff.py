"""WORKERS > 1: a full worker hands a new session to a sibling with room, instead of refusing it.

The kernel spreads connections over the workers (SO_REUSEPORT) without knowing which are full,
and clients that do not retry (SDK clients, telephony bridges) would take a 503 while another
worker had room. So each worker also listens on a Unix socket in a directory the supervisor
makes (VOICE_SIBLINGS), and a full one passes the request on: an offer (the answer's ICE
candidates are the sibling's, so the media goes straight there) or a Realtime WebSocket (whose
messages it then relays both ways). A handed-on request carries HANDOFF_HEADER and is never
handed on again: a 503 comes only when every worker is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

log = logging.getLogger("rtc.handoff")

SIBLINGS_ENV = "VOICE_SIBLINGS"
HANDOFF_HEADER = "X-Voice-Handoff"
FORWARDED = ("Authorization", "Content-Type", "Origin", "Accept")  # what the sibling's checks and parsing read
KEPT = ("Content-Type", "Location")  # of its answer


@dataclass(frozen=True)
class Siblings:
    directory: Path
    me: int

    @classmethod
    def from_env(cls, me: int) -> Siblings | None:
        directory = os.environ.get(SIBLINGS_ENV)
        return cls(Path(directory), me) if directory else None

    def socket(self, worker: int) -> Path:
        return self.directory / f"worker-{worker}.sock"

    def others(self) -> Iterator[Path]:
        """The other workers' sockets, starting after this one's (so full workers do not all pick the same)."""
        found = sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("worker-*.sock") if p.stem.split("-")[1].isdigit())
        later = [w for w in found if w > self.me] + [w for w in found if w < self.me]
        return (self.socket(w) for w in later)


def handed(request: web.Request) -> bool:
    return HANDOFF_HEADER in request.headers


def _headers(request: web.Request, content_type: bool = True) -> dict[str, str]:
    out = {k: request.headers[k] for k in FORWARDED if k in request.headers and (content_type or k != "Content-Type")}
    return out | {"Host": request.host, HANDOFF_HEADER: "1"}


async def forward(request: web.Request, body: bytes | aiohttp.FormData, siblings: Siblings) -> web.Response | None:
    """The first sibling's answer to this POST (`body`: as received, or the form it held) that is not a 503;
    None if every one is full (or down)."""
    for path in siblings.others():
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as http,
                http.post(f"http://worker{request.path_qs}", data=body, headers=_headers(request, isinstance(body, bytes))) as resp,
            ):
                if resp.status == 503:
                    continue
                log.info("handed %s on to %s (%d)", request.path, path.name, resp.status)
                return web.Response(
                    status=resp.status, body=await resp.read(), headers={k: resp.headers[k] for k in KEPT if k in resp.headers}
                )
        except (aiohttp.ClientError, OSError) as exc:
            log.debug("sibling %s: %s", path.name, exc)
    return None


async def relay(request: web.Request, siblings: Siblings) -> web.StreamResponse | None:
    """This WebSocket, held by the first sibling with room, its messages relayed both ways; None if all are full."""
    for path in siblings.others():
        http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)))
        try:
            upstream = await http.ws_connect(f"http://worker{request.path_qs}", headers=_headers(request), max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            await http.close()
            if exc.status == 503:
                continue
            return web.json_response({"error": exc.message}, status=exc.status)
        except (aiohttp.ClientError, OSError) as exc:
            await http.close()
            log.debug("sibling %s: %s", path.name, exc)
            continue
        log.info("relaying a realtime session to %s", path.name)
        client = web.WebSocketResponse(max_msg_size=0, heartbeat=30)
        await client.prepare(request)
        try:
            await _pump_both(client, upstream)
        finally:
            await upstream.close()
            await client.close()
            await http.close()
        return client
    return None


async def _pump_both(a: web.WebSocketResponse, b: aiohttp.ClientWebSocketResponse) -> None:
    async def pump(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse
    ) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break

    tasks = [asyncio.create_task(pump(a, b)), asyncio.create_task(pump(b, a))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
