"""What every part of the bench shares: options, the stand-in process, servers, the client-side lag monitor, output."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.procs import LOCAL_FLAGS, Server, Standin
from bench.stats import LoopLag, summary
from kit.peers import Peer, warm_up


@dataclass
class Options:
    quick: bool = False
    engines: tuple[str, ...] = ("standin", "local")
    probe: bool = True
    seed: int = 1
    llm_model: str = ""  # LLM_MODEL of the embedded servers the parts start (empty: the product's default)
    full_clients: bool = False  # the scale part's stand-in sessions: full client peers instead of light ones
    client_nice: int = 10  # the scale part's stand-in sessions: nice of the client peers and the stand-in engines


@dataclass
class Ctx:
    opts: Options
    standin: Standin
    lag: LoopLag
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # the headline figures a baseline stores
    _servers: dict[str, Server] = field(default_factory=dict)

    def emit(self, text: str) -> None:
        self.tables.append(text)
        print(text + "\n", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def progress(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def figure(self, key: str, value: float | None) -> None:
        if value is not None:
            self.figures[key] = round(float(value), 3)

    def client_lag(self, t0: float, t1: float = float("inf")) -> dict[str, Any]:
        return summary(self.lag.between(t0, t1))

    async def server(self, engines: str, extra: list[str] | None = None, name: str = "server", shared: bool = True) -> Server:
        """A started, healthy server on `engines` ("standin" or "local"); raises with the reason otherwise.
        With the product's defaults (no `extra`) and `shared`, parts reuse one server per engine set:
        starting one costs seconds, and every session starts fresh anyway."""
        key = engines if shared and not extra else ""
        if key and key in self._servers and self._servers[key].proc.poll() is None:
            return self._servers[key]
        flags = self.standin.engine_flags() if engines == "standin" else LOCAL_FLAGS
        if engines == "local" and self.opts.llm_model:
            flags = [*flags, "--llm-model", self.opts.llm_model]
        server = Server(flags, extra, probe=self.opts.probe, name=f"{name}-{engines}")
        try:
            await server.wait_ready(timeout=60 if engines == "standin" else 240)
        except Exception:
            server.close()
            raise
        if key:
            self._servers[key] = server
        return server

    async def warm(self, server: Server, timeout: float = 30.0) -> None:
        """One spoken turn, not measured, unless the server had one: the first use of each engine in
        a fresh process does one-off work (connections, lazy imports, cold model pages)."""
        if server.warmed:
            return
        peer = Peer(server.url)
        try:
            await peer.connect()
            await warm_up(peer, timeout=timeout)
        finally:
            await peer.close()
        await server.wait_sessions(0)
        server.warmed = True

    def release(self, server: Server) -> None:
        """Done with `server`: a shared one stays up for the next part."""
        if server not in self._servers.values():
            server.close()

    def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()


def reason_of(exc: BaseException) -> str:
    """Why a part could not run, short: the end of the message is where the cause is."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 400 else "..." + text[-400:]


async def per_engines(
    ctx: Ctx, title: str, run: Callable[[Ctx, str], Awaitable[dict[str, Any]]], report: Callable[[str, dict[str, Any]], None]
) -> dict[str, Any]:
    """A part once for each engine set asked for, each `report`ed; one that cannot run (the embedded
    engines not installed, say) is said to be unavailable, and the others go on."""
    out: dict[str, Any] = {}
    for engines in ctx.opts.engines:
        try:
            out[engines] = r = await run(ctx, engines)
        except Exception as exc:  # noqa: BLE001 - reported, and the next engine set runs
            out[engines] = {"unavailable": reason_of(exc)}
            ctx.emit(f"{title} - {engines} engines: unavailable: {out[engines]['unavailable']}")
            continue
        report(engines, r)
    return out


class LagWindow:
    """Server event-loop lag over a window, from the bench probe's 10 ms ticker (exact samples)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.t0 = 0.0

    async def start(self) -> None:
        self.t0 = time.monotonic()

    async def stop(self) -> dict[str, Any]:
        return await probe_lag(self.server, self.t0, time.monotonic())


def lag_text(s: dict[str, Any] | None) -> str:
    """'p99 X ms (max Y)', or why there is no figure."""
    if not s or not s.get("n"):
        return (s or {}).get("why", "n/a")
    return f"p99 {s['p99']:.1f} ms (max {s['max']:.0f})"


async def probe_lag(server: Server, t0: float, t1: float) -> dict[str, Any]:
    """Server event-loop lag between t0 and t1 from the probe, or {"n": 0, "why": ...}."""
    if not server.probe_enabled:
        return {"n": 0, "why": "n/a (run without --no-probe to measure)"}
    try:
        body = await server.probe(since=t0)
    except Exception as exc:  # noqa: BLE001
        return {"n": 0, "why": f"probe failed: {exc}"}
    assert body is not None
    return summary(lag for t, lag in body["lag"] if t <= t1)
