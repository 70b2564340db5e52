"""`python -m bench network`: what a lossy, jittery uplink does to what the server hears.

The real server on its embedded engines; for each uplink condition, a fresh real aiortc peer
whose outgoing RTP goes through tests/impair.py (user space: this kernel has no sch_netem)
asks the same spoken questions (the first QUESTIONS of the evaluation set, espeak-ng and flite
voices in turn). Per condition: transcript WER, answers right, turns lost (no transcript or
reply within the timeout), voice-to-voice p50 at the client, and the server's inbound
packets lost, each printed against the clean run.

This is issue 11's measuring stick: it is run before the deadline-based inbound buffer
exists, so its first table is the baseline that work is measured against.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, is_right
from bench.eval_voices import render
from bench.peers import Clip, Peer
from bench.procs import BENCH_LIMITS
from bench.quality import wer_of
from tests.impair import Impairment, impair
from tests.rtc_client import to_48k
from tests.speech import RATE, voiced_bounds

CONDITIONS: dict[str, Impairment] = {
    "clean": Impairment(),
    "jitter 30+-15 ms": Impairment(delay_ms=30, jitter_ms=15, seed=1),
    "loss 5 %": Impairment(loss=0.05, seed=2),
    "loss 5 % + jitter": Impairment(loss=0.05, delay_ms=30, jitter_ms=15, seed=3),
    "bursts 10 %": Impairment(burst_loss=0.10, seed=4),
}
VOICES = ["espeak:en-us", "flite:slt"]
N_QUESTIONS = 10
TURN_TIMEOUT_S = 45.0


def _clip(text: str, voice: str) -> Clip:
    lead = np.zeros(int(0.3 * RATE), np.int16)
    samples = np.concatenate([lead, render(text, voice), lead])
    first, last = voiced_bounds(samples)
    return Clip(text, samples, to_48k(samples), first, last)


async def run_condition(url: str, name: str, imp: Impairment, n: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    sent = dropped = 0
    for i, q in enumerate(QUESTIONS[:n]):
        peer = Peer(url)
        try:
            await peer.connect()
            stats = impair(peer.client.pc, imp)
            turn = await peer.ask(_clip(q.text, VOICES[i % len(VOICES)]), timeout=TURN_TIMEOUT_S)
            sent, dropped = sent + stats.sent, dropped + stats.dropped
            rows.append(
                {
                    "question": q.text,
                    "transcript": turn.transcript,
                    "reply": turn.reply,
                    "right": is_right(turn.reply, q.keywords),
                    "lost": not turn.transcript or not turn.done or bool(turn.error),
                    "v2v_ms": turn.client_ms()["voice_to_voice"],
                }
            )
        except Exception as exc:  # noqa: BLE001 - a dropped session is a lost turn, not a broken run
            rows.append({"question": q.text, "transcript": "", "reply": "", "right": False, "lost": True, "error": reason_of(exc)})
        finally:
            await peer.close()
    v2v = sorted(r["v2v_ms"] for r in rows if r.get("v2v_ms") is not None)
    return {
        "wer": wer_of([(r["question"], r["transcript"]) for r in rows]),
        "right": sum(r["right"] for r in rows),
        "lost": sum(r["lost"] for r in rows),
        "n": len(rows),
        "v2v_p50": float(np.percentile(v2v, 50)) if v2v else None,
        "packets_sent": sent,
        "packets_dropped": dropped,
        "rows": rows,
    }


async def run_network(ctx: Ctx) -> dict[str, Any]:
    n = 4 if ctx.opts.quick else N_QUESTIONS
    server = await ctx.server("local", BENCH_LIMITS, name="network")
    results: dict[str, Any] = {}
    started = time.monotonic()
    try:
        for name, imp in CONDITIONS.items():
            results[name] = await run_condition(server.url, name, imp, n)
            r = results[name]
            ctx.progress(f"network/{name}: WER {r['wer']}, right {r['right']}/{r['n']}, lost {r['lost']}, v2v p50 {r['v2v_p50']}")
    finally:
        server.close()
    clean = results["clean"]
    lines = ["condition  WER (vs clean)  right  lost turns  v2v p50 ms (vs clean)  packets dropped/sent"]
    for name, r in results.items():
        d_wer = f"{r['wer'] - clean['wer']:+.3f}" if r["wer"] is not None and clean["wer"] is not None else "-"
        d_v2v = f"{r['v2v_p50'] - clean['v2v_p50']:+.0f}" if r["v2v_p50"] is not None and clean["v2v_p50"] is not None else "-"
        v2v = f"{r['v2v_p50']:.0f}" if r["v2v_p50"] is not None else "-"
        lines.append(
            f"{name}  {r['wer']} ({d_wer})  {r['right']}/{r['n']}  {r['lost']}  {v2v} ({d_v2v})  {r['packets_dropped']}/{r['packets_sent']}"
        )
    ctx.emit("Uplink impairment (client side, user space), embedded engines, one run\n" + "\n".join(lines))
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results
