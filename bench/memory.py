"""Part 5: server memory across connect / talk / disconnect cycles.

A fresh server on the stand-in engines. Cycles run in batches of 10 (5 lanes
in parallel, 2 cycles each); each cycle connects a peer, has one typed turn
("hi"; every 10th cycle a spoken question instead), and disconnects. After each
batch the bench waits until the server reports 0 sessions, then reads VmRSS
from /proc (and, with the probe, the server's live Python objects, tasks and
threads). Growth is judged from the warm-up batch on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.context import Ctx
from bench.stats import fmt, table
from kit.peers import Peer, make_clip

LANES = 5
BATCH = 10


async def cycle(url: str, i: int, clip: Any) -> str:
    peer = Peer(url)
    try:
        await peer.connect()
        turn = await (peer.ask(clip, timeout=20) if i % 10 == 0 else peer.type("hi", timeout=20))
        return "" if turn.ok else (turn.error or "empty transcript")
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:120]
    finally:
        await peer.close()


async def run_memory(ctx: Ctx) -> dict[str, Any]:
    # 100 cycles as asked, then 100 more (full run) to tell a plateau from a leak
    total = 20 if ctx.opts.quick else 200
    checkpoints = {BATCH, 100, total}
    await ctx.standin.reset(stt_text="Hello.", llm_reply="Hi there.")
    server = await ctx.server("standin", name="memory")
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    started = time.monotonic()
    try:
        clip = make_clip("Hello, how are you today?")
        await asyncio.sleep(1.0)

        async def sample(cycles: int, with_gc: bool = False) -> None:
            drained = await server.wait_sessions(0, timeout=20)
            await asyncio.sleep(0.5)
            rss = round(server.rss_mb(), 1)
            probe = await server.probe(since=time.monotonic(), gc=with_gc, trim=with_gc) or {}
            s = {
                "cycles": cycles,
                "rss_mb": rss,
                "rss_after_trim_mb": round(probe["rss_after_trim_mb"], 1) if "rss_after_trim_mb" in probe else None,
                "sessions_drained": drained,
                "tasks": probe.get("tasks"),
                "threads": probe.get("threads"),
                "gc_objects": probe.get("gc_objects"),
                "gc_types": probe.get("gc_types"),
                "t": round(time.monotonic() - started, 1),
            }
            samples.append(s)
            ctx.progress(
                f"memory: {cycles} cycles, RSS {s['rss_mb']} MB, tasks {s['tasks']}, threads {s['threads']}"
                + (f", objects {s['gc_objects']}" if with_gc else "")
            )

        await sample(0, with_gc=True)
        done = 0
        while done < total:
            n = min(BATCH, total - done)
            queue = list(range(done, done + n))

            async def lane(queue: list[int] = queue) -> None:
                while queue:
                    i = queue.pop(0)
                    err = await cycle(server.url, i, clip)
                    if err:
                        errors.append(f"cycle {i}: {err}")

            await asyncio.gather(*(lane() for _ in range(LANES)))
            done += n
            await sample(done, with_gc=done in checkpoints)
    finally:
        server.close()
    checked = [s for s in samples if s.get("rss_after_trim_mb") is not None]
    segments = []
    for a, b in zip(checked[1:], checked[2:], strict=False):  # from the warm-up checkpoint on
        n = b["cycles"] - a["cycles"]
        seg = {
            "from": a["cycles"],
            "to": b["cycles"],
            "rss_mb": round(b["rss_mb"] - a["rss_mb"], 1),
            "rss_after_trim_mb": round(b["rss_after_trim_mb"] - a["rss_after_trim_mb"], 1),
            "objects": (b["gc_objects"] - a["gc_objects"]) if a.get("gc_objects") and b.get("gc_objects") else None,
        }
        seg["trimmed_kb_per_cycle"] = round(seg["rss_after_trim_mb"] * 1024 / max(n, 1), 1)
        segments.append(seg)
    out: dict[str, Any] = {
        "cycles": total,
        "samples": samples,
        "segments": segments,
        "errors": errors[:20],
        "error_count": len(errors),
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"],
    }
    at = {s["cycles"]: s for s in samples}
    if 100 in at:
        out["rss_after_100_mb"] = at[100]["rss_mb"]
    rows = [
        [
            str(s["cycles"]),
            f"{s['rss_mb']:.1f}",
            fmt(s["rss_after_trim_mb"], digits=1),
            str(s["tasks"] if s["tasks"] is not None else "-"),
            str(s["threads"] if s["threads"] is not None else "-"),
            str(s["gc_objects"] or ""),
        ]
        for s in samples
    ]
    text = table(
        ["cycles", "server RSS MB (/proc)", "after malloc_trim", "asyncio tasks", "threads", "live Python objects (after gc)"],
        rows,
        f"Memory - {total} connect / talk / disconnect cycles ({LANES} at a time; every 10th spoken); malloc_trim(0) hands free heap back, what is left is in use",
    )
    text += f"\n  RSS after start {out['rss_start_mb']:.1f} MB" + (
        f", after 100 cycles {out['rss_after_100_mb']:.1f} MB" if "rss_after_100_mb" in out else ""
    )
    text += f", after {total} {out['rss_end_mb']:.1f} MB"
    for seg in segments:
        text += (
            f"\n  cycles {seg['from']}-{seg['to']}: RSS {seg['rss_mb']:+.1f} MB, after malloc_trim {seg['rss_after_trim_mb']:+.1f} MB "
            f"({seg['trimmed_kb_per_cycle']:+.0f} KB per cycle)"
            + (f", live objects {seg['objects']:+d}" if seg["objects"] is not None else "")
        )
    if len(checked) >= 2:
        before, after = checked[1].get("gc_types") or {}, checked[-1].get("gc_types") or {}
        grown = sorted(((after.get(k, 0) - before.get(k, 0), k) for k in after), reverse=True)[:6]
        out["grown_types"] = {k: d for d, k in grown if d > 0}
        if out["grown_types"]:
            text += f"\n  object types that grew most from cycle {checked[1]['cycles']} on: " + ", ".join(
                f"{k} {d:+d}" for k, d in out["grown_types"].items()
            )
    if errors:
        text += f"\n  {len(errors)} cycle(s) failed, e.g. {errors[0]}"
    ctx.emit(text)
    if segments:
        first, last = segments[0], segments[-1]
        threads = {x["cycles"]: x["threads"] for x in samples}
        new_threads = (threads.get(last["to"]) or 0) - (threads.get(last["from"]) or 0)
        if last["to"] - last["from"] < 50:
            verdict = "too few cycles to judge"
        elif (last["objects"] or 0) > 1000:
            verdict = "python objects accumulate"
        elif last["trimmed_kb_per_cycle"] < 30 or (len(segments) > 1 and last["trimmed_kb_per_cycle"] <= first["trimmed_kb_per_cycle"] / 2):
            verdict = "levelling off"
        else:
            verdict = "growing"
        out["verdict"] = verdict
        detail = (
            f"in-use memory (after malloc_trim) {first['rss_after_trim_mb']:+.1f} MB over cycles {first['from']}-{first['to']}"
            + (f", then {last['rss_after_trim_mb']:+.1f} MB over {last['from']}-{last['to']}" if last is not first else "")
            + f"; live Python objects {last['objects']:+d} in the last segment"
            if last["objects"] is not None
            else ""
        )
        arena = (
            f"; the server started {new_threads} more executor thread(s) in that segment, each with its own malloc arena"
            if new_threads > 0
            else ""
        )
        if verdict == "too few cycles to judge":
            pass  # --quick: the full run's 200 cycles tell a plateau from a leak
        elif verdict == "levelling off":
            ctx.note(
                f"memory: no leak found: {detail}{arena}. What grows is allocator arenas of the Opus/executor threads reaching their high-water mark"
            )
        elif verdict == "growing":
            ctx.note(
                f"memory: still growing: {detail}{arena}; Python objects are not what grows, so it is native (codec/SRTP/arena) memory"
            )
        else:
            ctx.note(f"memory: {detail}: Python objects accumulate; see grown_types in the JSON")
    return out
