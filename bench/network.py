"""`python -m bench network`: what a lossy, jittery uplink does to what the server hears.

What it measures and how each figure is defined: bench/README.md, "network"."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import numpy as np

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, is_right
from bench.quality import wer_of
from kit.eval_voices import render
from kit.impair import Impairment, impair
from kit.peers import Clip, Peer
from kit.rtc_client import to_48k
from kit.speech import RATE, voiced_bounds

CONDITIONS: dict[str, Impairment] = {
    "clean": Impairment(),
    "jitter 30+-15 ms": Impairment(delay_ms=30, jitter_ms=15, seed=1),
    "loss 5 %": Impairment(loss=0.05, seed=2),
    "loss 5 % + jitter": Impairment(loss=0.05, delay_ms=30, jitter_ms=15, seed=3),
    "bursts 10 %": Impairment(burst_loss=0.10, seed=4),  # runs of 2-6 packets (40-120 ms)
    "bursts 10 %, 2-3 packets": Impairment(burst_loss=0.10, burst_len=(2, 3), seed=4),
    "loss 5 % + jitter, no FEC": Impairment(loss=0.05, delay_ms=30, jitter_ms=15, seed=3),
}
# The client sends Opus in-band FEC when the answer asks for it, as browsers do (only the
# deadline path's answer does); this condition's client does not, to show concealment alone.
NO_FEC = {"loss 5 % + jitter, no FEC"}
QUICK_CONDITIONS = ["clean", "loss 5 % + jitter"]
VOICES = ["espeak:en-us", "flite:slt"]
N_QUESTIONS = 10
TURN_TIMEOUT_S = 45.0


def _clip(text: str, voice: str) -> Clip:
    lead = np.zeros(int(0.3 * RATE), np.int16)
    samples = np.concatenate([lead, render(text, voice), lead])
    first, last = voiced_bounds(samples)
    return Clip(text, samples, to_48k(samples), first, last)


def counters(text: str) -> dict[str, float]:
    """The inbound counters of a /metrics page: made-up frames by how, dropped packets by why, delay sum and count."""
    out: dict[str, float] = {}
    for metric, key in (
        (r'voice_inbound_made_up_frames_total\{how="(\w+)"\}', "made_up_"),
        (r'voice_inbound_dropped_packets_total\{why="(\w+)"\}', "dropped_"),
    ):
        for m in re.finditer(metric + r" ([0-9.e+]+)", text):
            out[key + m.group(1)] = float(m.group(2))
    for name in ("sum", "count"):
        m = re.search(rf"voice_inbound_delay_seconds_{name} ([0-9.e+]+)", text)
        out[f"delay_{name}"] = float(m.group(1)) if m else 0.0
    return out


async def run_condition(ctx: Ctx, url: str, name: str, imp: Impairment, n: int, engines: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    sent = dropped = 0
    for i, q in enumerate(QUESTIONS[:n]):
        peer = Peer(url, fec=name not in NO_FEC)
        if engines == "standin":
            await ctx.standin.configure(stt_text=q.text)
        try:
            await peer.connect()
            # a different stretch of the same random process for each question (one seed for all
            # would drop the same packet positions in every question)
            stats = impair(peer.client.pc, dataclasses.replace(imp, seed=imp.seed * 1000 + i))
            turn = await peer.ask(_clip(q.text, VOICES[i % len(VOICES)]), timeout=TURN_TIMEOUT_S)
            sent, dropped = sent + stats.sent, dropped + stats.dropped
            rows.append(
                {
                    "question": q.text,
                    "voice": VOICES[i % len(VOICES)],
                    "transcript": turn.transcript,
                    "reply": turn.reply,
                    "right": is_right(turn.reply, q.keywords) if engines == "local" else None,
                    "lost": not turn.transcript or not turn.done or bool(turn.error),
                    "v2v_ms": turn.client_ms()["voice_to_voice"],
                }
            )
        except Exception as exc:  # noqa: BLE001 - a dropped session is a lost turn, not a broken run
            rows.append(
                {
                    "question": q.text,
                    "voice": VOICES[i % len(VOICES)],
                    "transcript": "",
                    "reply": "",
                    "right": False,
                    "lost": True,
                    "error": reason_of(exc),
                }
            )
        finally:
            await peer.close()
    v2v = sorted(r["v2v_ms"] for r in rows if r.get("v2v_ms") is not None)
    local = engines == "local"
    return {
        "wer": wer_of([(r["question"], r["transcript"]) for r in rows]) if local else None,
        # espeak-ng is the voice the product was tuned on; flite's are held out
        "wer_by_voice": {v: wer_of([(r["question"], r["transcript"]) for r in rows if r["voice"] == v]) for v in VOICES} if local else {},
        "right": sum(bool(r["right"]) for r in rows) if local else "-",
        "lost": sum(r["lost"] for r in rows),
        "n": len(rows),
        "v2v_p50": float(np.percentile(v2v, 50)) if v2v else None,
        "packets_sent": sent,
        "packets_dropped": dropped,
        "rows": rows,
    }


async def run_network(ctx: Ctx) -> dict[str, Any]:
    results: dict[str, Any] = {}
    n = 2 if ctx.opts.quick else N_QUESTIONS
    conditions = {k: v for k, v in CONDITIONS.items() if not ctx.opts.quick or k in QUICK_CONDITIONS}
    for engines in ctx.opts.engines:
        started = time.monotonic()
        try:
            server = await ctx.server(engines, name="network")
        except Exception as exc:  # noqa: BLE001
            ctx.emit(f"Uplink impairment - {engines} engines: unavailable: {reason_of(exc)}")
            continue
        per: dict[str, Any] = {}
        try:
            await ctx.warm(server, timeout=120)
            for name, imp in conditions.items():
                if engines == "standin":
                    await ctx.standin.reset(llm_reply="Okay.")
                before = counters(await server.metrics_text())
                per[name] = r = await run_condition(ctx, server.url, name, imp, n, engines)
                after = counters(await server.metrics_text())
                r["server"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                ctx.progress(
                    f"network/{engines}/{name}: WER {r['wer']}, right {r['right']}/{r['n']}, lost {r['lost']}, v2v p50 {r['v2v_p50']}"
                )
        finally:
            ctx.release(server)
        results[engines] = per | {"duration_s": round(time.monotonic() - started, 1)}
        ctx.emit(f"Uplink impairment (client side, user space) - {engines} engines\n" + table(per))
        worst = per[list(conditions)[-1]]
        ctx.figure(f"network/{engines}/lost_turns", sum(r["lost"] for r in per.values()))
        ctx.figure(f"network/{engines}/impaired_v2v_p50_ms", worst["v2v_p50"])
        if engines == "local":
            ctx.figure("network/local/impaired_wer", worst["wer"])
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(per: dict[str, Any]) -> str:
    clean = per["clean"]
    lines = [
        "condition  WER (vs clean)  right  lost turns  v2v p50 ms (vs clean)  packets dropped/sent  server: concealed+FEC frames, late packets, mean delay ms"
    ]
    for name, r in per.items():
        d_wer = f"{r['wer'] - clean['wer']:+.3f}" if r["wer"] is not None and clean["wer"] is not None else "-"
        d_v2v = f"{r['v2v_p50'] - clean['v2v_p50']:+.0f}" if r["v2v_p50"] is not None and clean["v2v_p50"] is not None else "-"
        srv = r.get("server", {})
        made = f"{srv.get('made_up_concealed', 0):.0f}+{srv.get('made_up_recovered', 0):.0f}"
        delay = srv.get("delay_sum", 0) / srv["delay_count"] * 1000 if srv.get("delay_count") else None
        lines.append(
            f"{name}  {r['wer']} ({d_wer})  {' / '.join(str(w) for w in r.get('wer_by_voice', {}).values())}  {r['right']}/{r['n']}  {r['lost']}  {_ms(r['v2v_p50'])} ({d_v2v})  "
            f"{r['packets_dropped']}/{r['packets_sent']}  {made}, {srv.get('dropped_late', 0):.0f}, {_ms(delay)}"
        )
    return "\n".join(lines)
