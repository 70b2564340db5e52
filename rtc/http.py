"""The HTTP side: the page, `POST /offer`, `GET /v1/realtime`, `GET /healthz`, `GET /config`, `GET /metrics`.

`create_app` is given what it needs (a pipeline factory, ICE settings, a
readiness probe) rather than building it, so tests assemble the same app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtc.handoff import Siblings, forward, handed, relay
from rtc.ice import rtc_configuration
from rtc.inbound import InboundConfig
from rtc.playout import DelayBounds
from rtc.realtime import RealtimeEvents, RealtimeSocket, serve
from rtc.session import SESSION_ID, ChannelFactory, InvalidOffer, PageEvents, PipelineFactory, Session, SessionLimits
from rtc.telemetry import Telemetry
from rtc.turn import TurnConfig
from settings import Settings

log = logging.getLogger("rtc.http")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_OFFER_BYTES = 64 * 1024  # a real SDP offer is a few KB

SESSIONS: web.AppKey[dict[str, Session]] = web.AppKey("sessions", dict)
REALTIME: web.AppKey[dict[str, RealtimeSocket]] = web.AppKey("realtime_sessions", dict)
CONFIG: web.AppKey[HttpConfig] = web.AppKey("config")
TELEMETRY: web.AppKey[Telemetry] = web.AppKey("telemetry", Telemetry)


@dataclass
class HttpConfig:
    make_pipeline: PipelineFactory
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    turn: TurnConfig | None = None  # TURN with credentials minted per page and per offer
    limits: SessionLimits = field(default_factory=SessionLimits)
    readiness: Callable[[], dict[str, Any]] = dict
    pipeline_name: str = "assistant"
    token: str = ""  # bearer token required on /offer; empty: none
    allowed_origins: list[str] = field(default_factory=list)  # besides the page's own; "*" for any
    max_sessions: int = 10
    inbound: InboundConfig = field(default_factory=InboundConfig)
    worker: int = 0  # this process's number among WORKERS (0 when there is one)
    siblings: Siblings | None = None  # the other workers, to hand a session to when this one is full

    @classmethod
    def from_settings(
        cls, settings: Settings, make_pipeline: PipelineFactory, readiness: Callable[[], dict[str, Any]] = dict
    ) -> HttpConfig:
        return cls(
            make_pipeline=make_pipeline,
            ice_servers=settings.ice_server_list,
            turn=TurnConfig(tuple(settings.turn_url_list), settings.turn_secret, settings.turn_ttl_s) if settings.turn_url_list else None,
            limits=SessionLimits(
                connect_timeout_s=settings.connect_timeout_s,
                no_media_timeout_s=settings.no_media_timeout_s,
                max_duration_s=settings.max_session_s,
                idle_timeout_s=settings.idle_timeout_s,
            ),
            readiness=readiness,
            pipeline_name=settings.pipeline,
            token=settings.voice_token,
            allowed_origins=[o.strip() for o in settings.allowed_origins.split(",") if o.strip()],
            max_sessions=settings.max_sessions,
            inbound=InboundConfig(
                buffer="aiortc" if settings.inbound_buffer == "aiortc" else "deadline",
                delay=DelayBounds(settings.inbound_delay_min_ms / 1000, settings.inbound_delay_max_ms / 1000),
                jitter_frames=settings.rtp_jitter_frames,
            ),
        )

    def ice_servers_for(self, authorized: bool = True) -> list[dict[str, Any]]:
        """ICE_SERVERS plus, for an authorized caller, a freshly minted TURN entry."""
        if self.turn is None or not authorized:
            return list(self.ice_servers)
        return [*self.ice_servers, self.turn.ice_server()]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True  # no Origin: not a browser, nothing for a browser check to protect
    return origin in (f"http://{request.host}", f"https://{request.host}")


def _refuse(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    request.app[TELEMETRY].refused.labels(reason).inc()
    log.info("offer refused (%s): %s", reason, message)
    return _error(status, message)


def _admit(request: web.Request) -> web.Response | None:
    """The token and the origin every way in checks: None, or the refusal."""
    config = request.app[CONFIG]
    if not _has_token(request, config.token):
        return _refuse(request, 401, "auth", "missing or wrong token: send Authorization: Bearer <VOICE_TOKEN>")
    if not _origin_allowed(request, config.allowed_origins):
        return _refuse(request, 403, "origin", f"origin {request.headers.get('Origin', '')[:100]!r} is not allowed (ALLOWED_ORIGINS)")
    return None


def _has_token(request: web.Request, token: str) -> bool:
    """No token configured, or the request carries `Authorization: Bearer <token>`."""
    if not token:
        return True
    return hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode())


async def offer(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    if (refused := _admit(request)) is not None:
        return refused
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
    if params.get("session") is not None:
        return _error(409, "renegotiating a session is not supported: close it and send a new offer")

    answered = await _answer(request, sdp, PageEvents, body)
    if isinstance(answered, web.StreamResponse):
        return answered
    session, answer = answered
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id, "worker": config.worker})


async def _answer(
    request: web.Request,
    sdp: str,
    channel: ChannelFactory,
    body: bytes | aiohttp.FormData,
    setup: Callable[[Session], None] = lambda s: None,
) -> tuple[Session, RTCSessionDescription] | web.StreamResponse:
    """A session for the offer `sdp`, its events spoken by `channel`: the answer, or the response to return
    (`body`: the request as a sibling would be sent it, should this worker be full)."""
    config = request.app[CONFIG]
    sessions = request.app[SESSIONS]
    if (full := await _full(request, body)) is not None:
        return full
    telemetry = request.app[TELEMETRY]

    def closed(s: Session) -> None:
        sessions.pop(s.id, None)
        telemetry.closed.labels(s.close_reason_kind).inc()

    pc = RTCPeerConnection(configuration=rtc_configuration(config.ice_servers_for()))
    inbound = dataclasses.replace(config.inbound, observer=telemetry.inbound)
    session = Session(
        pc, config.make_pipeline, on_closed=closed, limits=config.limits, observe=telemetry.observe, inbound=inbound, channel=channel
    )
    SESSION_ID.set(session.id)  # tasks and callbacks made from here on log with this session's id
    sessions[session.id] = session
    try:
        setup(session)
        answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
    except InvalidOffer as exc:
        await session.close("invalid offer")
        return _error(400, str(exc))
    except Exception as exc:
        log.exception("offer failed")
        await session.close("offer failed")
        return _error(400, f"could not answer the offer: {type(exc).__name__}")
    telemetry.sessions.inc()
    log.info("answered (%d open)", _open_sessions(request.app))
    return session, answer


def _form_text(value: Any) -> str | None:
    """A form field as text: aiohttp gives a part with a content type but no file name as bytes."""
    if isinstance(value, web.FileField):
        value = value.file.read()
    return bytes(value).decode() if isinstance(value, bytes | bytearray) else value


async def realtime_call(request: web.Request) -> web.StreamResponse:
    """`POST /v1/realtime/calls`: an OpenAI Realtime call over WebRTC. The SDP offer in (`application/sdp`,
    or the SDK's multipart form with `sdp` and an optional `session`), the answer out; events on `oai-events`."""
    if (refused := _admit(request)) is not None:
        return refused
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return _error(413, f"offer too large (limit {MAX_OFFER_BYTES} bytes)")
    session_config: Any = None
    body: bytes | aiohttp.FormData
    try:
        if request.content_type == "multipart/form-data":
            form = await request.post()
            sdp, raw = _form_text(form.get("sdp")), _form_text(form.get("session"))
            session_config = json.loads(raw) if raw else None
            body = aiohttp.FormData()
            body.add_field("sdp", sdp or "", content_type="application/sdp")
            if raw:
                body.add_field("session", raw, content_type="application/json")
        else:
            body = await request.content.read(MAX_OFFER_BYTES + 1)
            sdp = body.decode()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the body is an SDP offer (application/sdp), or a form with 'sdp' and a JSON 'session'")
    if not isinstance(sdp, str) or not sdp.strip() or len(sdp) > MAX_OFFER_BYTES:
        return _error(400, "'sdp' must be a non-empty SDP offer")
    if session_config is not None and not isinstance(session_config, dict):
        return _error(400, "'session' must be a JSON object")

    def setup(session: Session) -> None:
        if session_config is not None:  # as if the client's first event were this session.update
            session.channel.incoming(json.dumps({"type": "session.update", "session": session_config}))

    answered = await _answer(request, sdp, RealtimeEvents, body, setup)
    if isinstance(answered, web.StreamResponse):
        return answered
    session, answer = answered
    return web.Response(
        status=201, text=answer.sdp, content_type="application/sdp", headers={"Location": f"/v1/realtime/calls/{session.id}"}
    )


def _open_sessions(app: web.Application) -> int:
    return len(app[SESSIONS]) + len(app[REALTIME])


async def _full(request: web.Request, body: bytes | aiohttp.FormData | None) -> web.StreamResponse | None:
    """None while this worker has room; else a sibling's answer (`body`: the POST to pass on; None: a
    WebSocket, relayed), or a 503 when every worker is full."""
    config = request.app[CONFIG]
    if _open_sessions(request.app) < config.max_sessions:
        return None
    if config.siblings is not None and not handed(request):
        answer = await (relay(request, config.siblings) if body is None else forward(request, body, config.siblings))
        if answer is not None:
            return answer
    refused = _refuse(request, 503, "capacity", f"server is full ({config.max_sessions} sessions); try again later")
    refused.force_close()  # a retry opens a new connection, which the kernel may give to another worker
    return refused


async def realtime(request: web.Request) -> web.StreamResponse:
    """`GET /v1/realtime`: the OpenAI Realtime protocol over a WebSocket (rtc/realtime.py)."""
    config = request.app[CONFIG]
    if (refused := _admit(request)) is not None:
        return refused
    if (full := await _full(request, None)) is not None:
        return full
    open_, telemetry = request.app[REALTIME], request.app[TELEMETRY]

    def opened(session: RealtimeSocket) -> None:
        SESSION_ID.set(session.id)
        open_[session.id] = session
        telemetry.sessions.inc()
        log.info("realtime session opened (%d open)", _open_sessions(request.app))

    def closed(session: RealtimeSocket) -> None:
        open_.pop(session.id, None)
        telemetry.closed.labels(session.close_reason_kind or "closed").inc()

    return await serve(request, config.make_pipeline, config.limits, opened, closed)


async def healthz(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    engines = config.readiness()
    ready = all(e.get("ready", False) for e in engines.values()) if engines else True
    return web.json_response(
        {
            "status": "ok" if ready else "starting",
            "sessions": _open_sessions(request.app),
            "worker": config.worker,
            "pipeline": config.pipeline_name,
            "engines": engines,
        }
    )


async def client_config(request: web.Request) -> web.Response:
    """The page's ICE servers. With VOICE_TOKEN set, TURN credentials go only to a caller that sends the token:
    they let their holder relay anything through the TURN server until they expire."""
    config = request.app[CONFIG]
    ice_servers = config.ice_servers_for(authorized=_has_token(request, config.token))
    return web.json_response({"ice_servers": ice_servers, "token_required": bool(config.token)}, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[TELEMETRY].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def _close_sessions(app: web.Application) -> None:
    sessions = list(app[SESSIONS].values())
    if sessions:
        log.info("closing %d session(s)", len(sessions))
    for realtime_session in app[REALTIME].values():
        realtime_session.close_soon("the server is shutting down", "shutdown")
    await asyncio.gather(*(s.close("the server is shutting down", kind="shutdown") for s in sessions), return_exceptions=True)


async def _watch_loop(app: web.Application) -> Any:
    task = asyncio.get_running_loop().create_task(app[TELEMETRY].watch_loop(), name="loop-lag")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def create_app(config: HttpConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_OFFER_BYTES)
    app[CONFIG] = config
    sessions: dict[str, Session] = {}
    app[SESSIONS] = sessions
    realtime_sessions: dict[str, RealtimeSocket] = {}
    app[REALTIME] = realtime_sessions
    app[TELEMETRY] = Telemetry(
        open_sessions=lambda: len(sessions) + len(realtime_sessions),
        readiness=config.readiness,
        late_frames=lambda: sum(s.outbound.late_frames for s in sessions.values()),
        worker=config.worker,
    )
    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/config", client_config)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/realtime", realtime)
    app.router.add_post("/v1/realtime/calls", realtime_call)
    if WEB_DIR.exists():
        app.router.add_static("/", WEB_DIR, show_index=False)
    app.cleanup_ctx.append(_watch_loop)
    app.on_shutdown.append(_close_sessions)
    return app
