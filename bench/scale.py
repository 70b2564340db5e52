"""Scale: how many full-duplex sessions one box holds, and how long people wait when several ask at once.

What it measures and how each figure is defined: bench/README.md, "scale"."""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from typing import Any

from bench.context import Ctx, LagWindow, reason_of
from bench.procs import RESULTS, CpuWindow, set_nice
from bench.stats import fmt, summary, table, triple
from bench.wire import Wire
from kit.peers import FRAME_S, Peer, Turn, close_all, connect_all, make_clip

SCALE_QUESTIONS = ["What time is it?", "Is it raining?", "Hello there."]
SCALE_REPLY = "It is noon. Anything else?"
JITTER_LIMIT_MS = 10.0
OVERHEAD_LIMIT_MS = 100.0


def jitter_of(
    peers: list[Peer], t0: float, t1: float, source: str, wire: list[tuple[float, int, int, int, int]] | None = None
) -> dict[str, Any]:
    """Inter-arrival jitter of the server's 20 ms frames at the clients, pooled over peers.

    source "rtp": arrival of each RTP packet at the client (before its jitter buffer and decoder
    thread); "decoded": arrival of each decoded frame at the client's application; "wire": the
    kernel's timestamp of each packet to the client's port on loopback (bench/wire.py, `wire`).
    """
    deviations: list[float] = []
    lost = received = expected = 0
    worst_gap = 0.0
    to_port: dict[int, list[float]] = {}  # the window's packets by destination port, in arrival order
    for when, _src, dst, _size, _seq in sorted(wire or []):
        if t0 <= when < t1:
            to_port.setdefault(dst, []).append(when)
    for peer in peers:
        if source == "wire":
            times = sorted(t for port in peer.local_ports() for t in to_port.get(port, []))
        else:
            times = peer.rtp_times(t0, t1) if source == "rtp" else peer.frame_times(t0, t1)
        if len(times) < 2:
            continue
        deltas = [b - a for a, b in zip(times, times[1:], strict=False)]
        deviations += [abs(d - FRAME_S) * 1000 for d in deltas]
        worst_gap = max(worst_gap, max(deltas) * 1000)
        exp = int(round((times[-1] - times[0]) / FRAME_S)) + 1
        expected += exp
        received += len(times)
        lost += max(0, exp - len(times))
    s = summary(deviations)  # of |inter-arrival - 20 ms|
    return {"p50_ms": s.get("p50"), "p99_ms": s.get("p99"), "max_ms": s.get("max"), "worst_gap_ms": round(worst_gap, 1)} | {
        "frames_expected": expected,
        "frames_received": received,
        "frames_lost": lost,
    }


async def talker(peer: Peer, clips: list[Any], stop_at: float, rng: random.Random, turns: list[Turn]) -> None:
    await asyncio.sleep(rng.uniform(0.0, 3.0))
    while time.monotonic() < stop_at - 2.5:
        turn = await peer.ask(rng.choice(clips), timeout=20)
        turns.append(turn)
        await asyncio.sleep(rng.uniform(1.0, 2.5))


async def level(ctx: Ctx, server: Any, n: int, window: float, clips: list[Any], rng: random.Random) -> dict[str, Any]:
    connect_started = time.monotonic()
    peers, errors = await connect_all(server.url, n, parallel=4, light=not ctx.opts.full_clients)
    out: dict[str, Any] = {
        "sessions": n,
        "connected": len(peers),
        "connect_errors": errors[:5],
        "connect_s": round(time.monotonic() - connect_started, 1),
    }
    wire = Wire(RESULTS / f"wire-{os.getpid()}.json")
    try:
        await asyncio.sleep(1.0)
        stats0 = await asyncio.gather(*(p.inbound_stats() for p in peers))
        probe0 = await server.probe(since=time.monotonic())
        cpu = CpuWindow({"server": server.pid, "standin": ctx.standin.pid, "bench_clients": os.getpid()}, trees=("server",))
        lag = LagWindow(server) if server.workers == 1 else None  # /metrics is per worker: a diff across two means nothing
        if lag is not None:
            await lag.start()
        sniffing = await wire.start()
        t0 = time.monotonic()
        cpu.start()
        turns: list[Turn] = []
        talkers = [asyncio.ensure_future(talker(p, clips, t0 + window, rng, turns)) for p in peers]
        await asyncio.sleep(window)
        t1 = time.monotonic()
        out["cpu_percent_of_one_core"] = cpu.stop()
        packets = await wire.stop()
        out["server_loop_lag_ms"] = await lag.stop() if lag is not None else {"n": 0, "why": "n/a with workers"}
        probe1 = await server.probe(since=t0)
        stats1 = await asyncio.gather(*(p.inbound_stats() for p in peers))
        # turns still in flight finish (each is bounded by its own timeout)
        done, pending = await asyncio.wait(talkers, timeout=3 if ctx.opts.quick else 25)
        for task in pending:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        out["jitter"] = jitter_of(peers, t0, t1, "rtp")
        out["jitter_decoded"] = jitter_of(peers, t0, t1, "decoded")
        out["jitter_wire"] = jitter_of(peers, t0, t1, "wire", packets) if sniffing else {}
        pairs = [(a, b) for a, b in zip(stats0, stats1, strict=False) if a and b]
        out["rtp"] = {k: sum(b.get(k, 0) - a.get(k, 0) for a, b in pairs) for k in ("packets_received", "packets_lost")}
        if probe0 and probe1:
            out["server_late_frames"] = probe1["late_frames"] - probe0["late_frames"]
            out["server_frames_sent"] = probe1["frames_sent"] - probe0["frames_sent"]
            out["server_pacing"] = probe1.get("pacing")
        out["client_loop_lag_ms"] = ctx.client_lag(t0, t1)
        ok = [t for t in turns if t.ok]
        out["turns"] = len(turns)
        out["turns_ok"] = len(ok)
        out["turn_errors"] = sorted({t.error or "empty transcript" for t in turns if not t.ok})[:5]
        out["overhead_ms"] = summary(t.client_ms()["after_endpoint"] for t in ok)
        out["server_after_endpoint_ms"] = summary(t.server_ms().get("after_endpoint") for t in ok)
        out["v2v_client_ms"] = summary(t.client_ms()["voice_to_voice"] for t in ok)
        out["server_cpu_per_session"] = round(out["cpu_percent_of_one_core"]["server"] / max(len(peers), 1), 2)
    finally:
        await wire.stop()  # (already stopped, unless the window failed)
        await close_all(peers)
        await server.wait_sessions(0, timeout=20)
    j, o = judged_jitter(out).get("p99_ms"), out["overhead_ms"].get("p95")
    out["within_limits"] = (
        len(peers) == n and out["turns_ok"] == out["turns"] and (j or 1e9) < JITTER_LIMIT_MS and (o or 1e9) < OVERHEAD_LIMIT_MS
    )
    return out


def judged_jitter(r: dict[str, Any]) -> dict[str, Any]:
    """The jitter the limit applies to: on the wire (the server's own sending, timed by the kernel)
    where the sniffer ran, else at the client peers (which adds the bench's own loop delays)."""
    return r["jitter_wire"] if r.get("jitter_wire", {}).get("p99_ms") is not None else r["jitter"]


async def run_standin_scale(ctx: Ctx, workers: int = 1) -> dict[str, Any]:
    # Small steps where one 2-core box breaks (3-8 sessions), so one worker and two can be told apart.
    sizes = [1, 5] if ctx.opts.quick else [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 40]
    window = 5.0 if ctx.opts.quick else 15.0
    retries = 0 if ctx.opts.quick else 1
    budget = 30.0 if ctx.opts.quick else 420.0
    rng = random.Random(ctx.opts.seed)
    await ctx.standin.reset(stt_text="What time is it?", llm_reply=SCALE_REPLY)
    server = await ctx.server("standin", name=f"scale-w{workers}", extra=["--workers", str(workers)] if workers > 1 else None)
    levels: list[dict[str, Any]] = []
    started = time.monotonic()
    stopped_by = "largest size reached"
    try:
        clips = [make_clip(q) for q in SCALE_QUESTIONS]
        await ctx.standin.configure(stt_text="What time is it?")
        await ctx.warm(server)
        # The client peers and the stand-in engines stand for other machines: at a lower priority
        # they take only the cores the server leaves (the server was started before, at 0).
        for pid in (os.getpid(), ctx.standin.pid):
            set_nice(pid, ctx.opts.client_nice)
        queue = list(sizes)
        refined = False
        while queue:
            n = queue.pop(0)
            if time.monotonic() - started > budget:
                stopped_by = f"time budget ({budget:.0f} s) spent"
                break
            attempts: list[dict[str, Any]] = []
            for attempt in range(1 + retries):
                a = await level(ctx, server, n, window, clips, rng)
                attempts.append(a)
                others = a["cpu_percent_of_one_core"]["others"]
                if a["within_limits"] or attempt == retries or time.monotonic() - started > budget:
                    break
                # A p99 over 15 s is noisy at the edge: a breach is measured once more, for both worker counts alike.
                ctx.progress(f"scale {n}: limit breached (other processes used {others:.0f}% of a core): measuring again")
            passed = [a for a in attempts if a["within_limits"]]
            r = passed[0] if passed else min(attempts, key=lambda a: a["cpu_percent_of_one_core"]["others"])
            r["attempts"] = len(attempts)
            levels.append(r)
            ctx.progress(
                f"scale {n}: jitter p99 wire {fmt(r.get('jitter_wire', {}).get('p99_ms'), digits=1)} / client {fmt(r['jitter'].get('p99_ms'), digits=1)} ms, overhead p95 {fmt(r['overhead_ms'].get('p95'))} ms, "
                f"server cpu {r['cpu_percent_of_one_core']['server']}%, lag p99 {fmt(r['server_loop_lag_ms'].get('p99'), digits=1)} ms"
            )
            if not r["within_limits"]:
                stopped_by = f"limit breached at {n} sessions"
                good = [x["sessions"] for x in levels if x["within_limits"] and x["sessions"] < n]
                # one bisection step between the last passing size and this one (full runs)
                if not refined and not ctx.opts.quick and good and n - max(good) > 2:
                    refined = True
                    queue = [(max(good) + n) // 2]
                    continue
                break
    finally:
        for pid in (os.getpid(), ctx.standin.pid):
            set_nice(pid, 0)
        ctx.release(server)
    levels.sort(key=lambda x: x["sessions"])
    passing = [r["sessions"] for r in levels if r["within_limits"]]
    best = 0
    for r in levels:  # the largest size such that it and every smaller size measured passed
        if not r["within_limits"]:
            break
        best = r["sessions"]
    out = {
        "workers": workers,
        "full_clients": ctx.opts.full_clients,
        "client_nice": ctx.opts.client_nice,
        "levels": levels,
        "largest_within_limits": best,
        "stopped": stopped_by,
        "window_s": window,
        "passing": passing,
    }
    ctx.emit(scale_table(out))
    return out


def scale_table(out: dict[str, Any]) -> str:
    rows = []
    for r in out["levels"]:
        cpu, j, pacing = r["cpu_percent_of_one_core"], r["jitter"], r.get("server_pacing") or {}
        rows.append(
            [
                f"{r['connected']}/{r['sessions']}" + (f" x{r['attempts']}" if r.get("attempts", 1) > 1 else ""),
                f"{cpu['server']:.0f} ({r['server_cpu_per_session']:.1f}), wait {cpu['runqueue_wait']['server']:.0f}",
                f"{cpu['bench_clients']:.0f} / {cpu['others']:.0f}",
                f"{fmt(r['server_loop_lag_ms'].get('p99'), digits=1)} / {fmt(r['client_loop_lag_ms'].get('p99'), digits=1)}",
                f"{fmt(r.get('jitter_wire', {}).get('p99_ms'), digits=1)} / {fmt(j.get('p99_ms'), digits=1)} ({fmt(judged_jitter(r).get('worst_gap_ms'))})",
                f"{fmt(pacing.get('track_p99_ms'), digits=1)} / {fmt(pacing.get('socket_p99_ms'), digits=1)}",
                f"{j['frames_lost']}/{r['rtp']['packets_lost']}",
                f"{r['turns_ok']}/{r['turns']}",
                f"{fmt(r['overhead_ms'].get('p95'))} ({fmt(r['server_after_endpoint_ms'].get('p95'))})",
                fmt(r["v2v_client_ms"].get("p95")),
                "yes" if r["within_limits"] else "NO",
            ]
        )
    headers = ["sessions", "srv CPU % (per session), runq wait %", "clients / others CPU %", "loop lag p99 srv / cli"]
    headers += ["jitter p99 wire / RTP (max gap)", "srv pacing p99 track / socket", "lost frames / aiortc", "turns ok"]
    headers += ["overhead p95 (srv)", "v2v p95", "ok"]
    clients = "full" if out.get("full_clients") else "light (pre-encoded mic, replies never decoded)"
    title = (
        f"Scale - stand-in engines, WORKERS={out['workers']}: every session asks a question every few seconds; {out['window_s']:.0f} s per level; ms\n"
        f"  limits: jitter p99 < {JITTER_LIMIT_MS:.0f} ms (on the wire where it can be read), turn overhead p95 < {OVERHEAD_LIMIT_MS:.0f} ms "
        f"(`speaking` - `speech_stopped` at the client); client peers {clients}, at nice {out['client_nice']} with the stand-in"
    )
    text = table(headers, rows, title)
    return text + f"\n  largest session count within limits: {out['largest_within_limits']} ({out['stopped']})"


LOCAL_DESIGNS: list[tuple[str, list[str]]] = [("one worker", []), ("WORKERS=2 (one LLM server)", ["--workers", "2"])]


async def run_local_design(ctx: Ctx, label: str, extra: list[str], sizes: list[int], rounds: int) -> dict[str, Any]:
    questions = ["What is the capital of France?", "How far away is the moon?"]
    server = await ctx.server("local", extra=extra, name="scale", shared=False)  # its memory after warm-up alone
    out: dict[str, Any] = {"design": label, "flags": extra, "levels": [], "health": server.health}
    try:
        clips = [make_clip(q) for q in questions]
        await ctx.warm(server, timeout=120)
        out["memory_warm_mb"] = server.memory_mb()
        for n in sizes:
            peers, errors = await connect_all(server.url, n)
            turns: list[Turn] = []
            cpu = CpuWindow({"server": server.pid}, trees=("server",))
            cpu.start()
            try:
                await asyncio.sleep(0.5)
                # One session alone is the baseline every "vs 1" divides by: it asks four times the
                # rounds, as many turns as four sessions do (two per question made "4 vs 1" move
                # 1.6-2.2x between runs of the same code, with the one-alone p50).
                for r in range(rounds * 4 if n == 1 else rounds):
                    got = await asyncio.gather(*(p.ask(clips[r % len(clips)], timeout=240) for p in peers))
                    turns += got
                    await asyncio.sleep(0.5)
            finally:
                await close_all(peers)
                await server.wait_sessions(0, timeout=20)
            ok = [t for t in turns if t.ok]
            lvl = {
                "sessions": n,
                "connected": len(peers),
                "connect_errors": errors[:3],
                "turns": len(turns),
                "turns_ok": len(ok),
                "errors": sorted({t.error or "empty transcript" for t in turns if not t.ok}),
                "v2v_client_ms": summary(t.client_ms()["voice_to_voice"] for t in ok),
                "v2v_client_ms_by_question": {
                    q: summary(t.client_ms()["voice_to_voice"] for t in ok if t.question == q) for q in questions
                },
                "stt_ms": summary(t.metrics.get("stt_ms") for t in ok),
                "llm_first_token_ms": summary(t.metrics.get("llm_first_token_ms") for t in ok),
                "first_sentence_ms": summary(t.metrics.get("first_sentence_ms") for t in ok),
                "tts_first_audio_ms": summary(t.metrics.get("tts_first_audio_ms") for t in ok),
                "endpoint_ms": summary(t.metrics.get("endpoint_ms") for t in ok),
                "server_v2v_ms": summary(t.metrics.get("voice_to_voice_ms") for t in ok),
                "turn_metrics": [t.metrics for t in turns],
                "cpu_percent_of_one_core": cpu.stop(),
            }
            out["levels"].append(lvl)
            ctx.progress(
                f"scale/local [{label}] {n}: v2v p50 {fmt(lvl['v2v_client_ms'].get('p50'))} ms, max {fmt(lvl['v2v_client_ms'].get('max'))} ms, ok {len(ok)}/{len(turns)}"
            )
        out["behind_long_reply"] = await behind_long_reply(server, clips[0])
        ctx.progress(f"scale/local [{label}] behind a long reply: {out['behind_long_reply']}")
        out["memory_after_mb"] = server.memory_mb()
    finally:
        ctx.release(server)
    return out


LONG_REQUEST = "Tell me a long story about a lighthouse keeper and a whale, in five sentences."


async def behind_long_reply(server: Any, clip: Any) -> dict[str, Any]:
    """Item 3's case: B asks a short question while A's long reply is being written and spoken.
    B's voice-to-voice then, against B asking the same alone just before (same server, same run)."""
    peers, _ = await connect_all(server.url, 2)
    try:
        a, b = peers
        alone = await b.ask(clip, timeout=120)
        index = len(a.client.events)
        long = asyncio.ensure_future(a.type(LONG_REQUEST, timeout=240))
        async with asyncio.timeout(120):  # until A's reply is heard
            while not any(ev.get("type") == "state" and ev.get("state") == "speaking" for _, ev in a.events_since(index)):
                await asyncio.sleep(0.05)
        behind = await b.ask(clip, timeout=240)
        story = await long
    finally:
        await close_all(peers)
        await server.wait_sessions(0, timeout=20)
    return {
        "alone_v2v_ms": float(alone.client_ms()["voice_to_voice"] or 0) if alone.ok else None,
        "behind_v2v_ms": float(behind.client_ms()["voice_to_voice"] or 0) if behind.ok else None,
        "long_reply_chars": len(story.reply),
        "ok": alone.ok and behind.ok and story.ok,
    }


def wait_ratio(d: dict[str, Any], sessions: int) -> float | None:
    """How much longer each waits with `sessions` asking at once than alone: per question, p50 against
    p50, then the geometric mean over the questions. One p50 over all turns would mix two questions
    whose replies take about 1.5 and 4 s, and fall anywhere between them."""
    levels = {lvl["sessions"]: lvl.get("v2v_client_ms_by_question") or {} for lvl in d.get("levels", [])}
    alone, many = levels.get(1, {}), levels.get(sessions, {})
    ratios = [many[q]["p50"] / alone[q]["p50"] for q in alone if alone[q].get("p50") and many.get(q, {}).get("p50")]
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else None


async def run_local_scale(ctx: Ctx) -> dict[str, Any]:
    sizes = [1, 2] if ctx.opts.quick else [1, 2, 4]
    rounds = 1 if ctx.opts.quick else 2
    designs: list[dict[str, Any]] = []
    rows = []
    for label, extra in LOCAL_DESIGNS:
        try:
            d = await run_local_design(ctx, label, extra, sizes, rounds)
        except Exception as exc:  # noqa: BLE001
            d = {"design": label, "flags": extra, "unavailable": reason_of(exc)}
            rows.append([label, "-", "-", "-", "-", "-", "-", f"unavailable: {d['unavailable']}"[:80]])
            designs.append(d)
            continue
        designs.append(d)
        behind, mem = d.get("behind_long_reply") or {}, d.get("memory_warm_mb") or {}
        for lvl in d["levels"]:
            ratio = wait_ratio(d, lvl["sessions"])
            rows.append(
                [
                    label if lvl is d["levels"][0] else "",
                    str(lvl["sessions"]),
                    f"{lvl['turns_ok']}/{lvl['turns']}",
                    triple(lvl["v2v_client_ms"]),
                    f"{ratio:.2f}x" if ratio else "-",
                    f"{triple(lvl['stt_ms'])} | {triple(lvl['llm_first_token_ms'])} | {triple(lvl['tts_first_audio_ms'])}",
                    f"{fmt(behind.get('behind_v2v_ms'))} (alone {fmt(behind.get('alone_v2v_ms'))})" if lvl is d["levels"][0] else "",
                    f"{mem.get('pss', 0):.0f}" if lvl is d["levels"][0] else "",
                ]
            )
    headers = ["design", "asking at once", "turns ok", "v2v client p50/p95/max", "vs 1 (per question)"]
    headers += ["server STT | LLM 1st token | TTS 1st chunk", "v2v behind another's long reply", "box PSS MB"]
    title = f"Scale - embedded engines: sessions asking at the same moment, {rounds} round(s) ({4 * rounds} alone); ms"
    ctx.emit(table(headers, rows, title))
    return {"designs": designs}


async def run_scale(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "standin" in ctx.opts.engines:
        out["standin"] = r = await run_standin_scale(ctx)
        ctx.figure("scale/standin/sessions_within_limits", r["largest_within_limits"])
        first = r["levels"][0] if r["levels"] else {}
        ctx.figure("scale/standin/cpu_per_session_pct", first.get("server_cpu_per_session"))
        if not ctx.opts.quick:
            try:
                out["standin_workers2"] = r2 = await run_standin_scale(ctx, workers=2)
                ctx.figure("scale/standin/sessions_within_limits_workers2", r2["largest_within_limits"])
            except Exception as exc:  # noqa: BLE001
                out["standin_workers2"] = {"unavailable": reason_of(exc)}
    if "local" in ctx.opts.engines:
        try:
            out["local"] = r = await run_local_scale(ctx)
        except Exception as exc:  # noqa: BLE001
            out["local"] = {"unavailable": reason_of(exc)}
            ctx.emit(f"Scale - embedded engines: unavailable: {out['local']['unavailable']}")
        else:
            one = next((d for d in r["designs"] if not d["flags"] and "unavailable" not in d), None)
            if one:
                ctx.figure("scale/local/4_vs_1", wait_ratio(one, max(lvl["sessions"] for lvl in one["levels"])))
                ctx.figure("scale/local/behind_long_reply_ms", (one.get("behind_long_reply") or {}).get("behind_v2v_ms"))
                ctx.figure("scale/local/memory_pss_mb", (one.get("memory_warm_mb") or {}).get("pss"))
    return out
