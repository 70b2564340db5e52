"""The HTTP side: the page, `POST /offer`, `GET /healthz`, `GET /config`.

`create_app` is given what it needs (a pipeline factory, ICE settings, a
readiness probe) rather than building it, so tests assemble the same app.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtc.ice import rtc_configuration
from rtc.session import InvalidOffer, PipelineFactory, Session, SessionLimits

log = logging.getLogger("rtc.http")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_OFFER_BYTES = 64 * 1024  # a real SDP offer is a few KB

SESSIONS: web.AppKey[dict[str, Session]] = web.AppKey("sessions", dict)
CONFIG: web.AppKey[HttpConfig] = web.AppKey("config")


@dataclass
class HttpConfig:
    make_pipeline: PipelineFactory
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    limits: SessionLimits = field(default_factory=SessionLimits)
    readiness: Callable[[], dict[str, Any]] = dict
    pipeline_name: str = "assistant"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def offer(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return _error(413, f"offer too large (limit {MAX_OFFER_BYTES} bytes)")
    try:
        body = await request.content.read(MAX_OFFER_BYTES + 1)
    except Exception:
        return _error(400, "could not read the request body")
    if len(body) > MAX_OFFER_BYTES:
        return _error(413, f"offer too large (limit {MAX_OFFER_BYTES} bytes)")
    try:
        params = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'body must be JSON: {"sdp": "...", "type": "offer"}')
    if not isinstance(params, dict):
        return _error(400, "body must be a JSON object with 'sdp' and 'type'")
    sdp, kind = params.get("sdp"), params.get("type")
    if not isinstance(sdp, str) or not sdp.strip():
        return _error(400, "'sdp' must be a non-empty string")
    if kind != "offer":
        return _error(400, "'type' must be \"offer\"")

    sessions = request.app[SESSIONS]
    pc = RTCPeerConnection(configuration=rtc_configuration(config.ice_servers))
    session = Session(pc, config.make_pipeline, on_closed=lambda s: sessions.pop(s.id, None), limits=config.limits)
    sessions[session.id] = session
    try:
        answer = await session.accept(RTCSessionDescription(sdp=sdp, type=kind))
    except InvalidOffer as exc:
        await session.close("invalid offer")
        return _error(400, str(exc))
    except Exception as exc:
        log.exception("offer failed")
        await session.close("offer failed")
        return _error(400, f"could not answer the offer: {type(exc).__name__}")
    log.info("session %s: answered (%d open)", session.id, len(sessions))
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id})


async def healthz(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    engines = config.readiness()
    ready = all(e.get("ready", False) for e in engines.values()) if engines else True
    return web.json_response(
        {
            "status": "ok" if ready else "starting",
            "sessions": len(request.app[SESSIONS]),
            "pipeline": config.pipeline_name,
            "engines": engines,
        }
    )


async def client_config(request: web.Request) -> web.Response:
    return web.json_response({"ice_servers": request.app[CONFIG].ice_servers, "token_required": False})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def _close_sessions(app: web.Application) -> None:
    sessions = list(app[SESSIONS].values())
    if sessions:
        log.info("closing %d session(s)", len(sessions))
    await asyncio.gather(*(s.close("server shutting down") for s in sessions), return_exceptions=True)


def create_app(config: HttpConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_OFFER_BYTES)
    app[CONFIG] = config
    app[SESSIONS] = {}
    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", client_config)
    if WEB_DIR.exists():
        app.router.add_static("/", WEB_DIR, show_index=False)
    app.on_shutdown.append(_close_sessions)
    return app
