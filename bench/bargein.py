"""Barge-in: the client says "Wait, stop." over a long reply; how soon does that reply's audio stop?

What it measures and how each figure is defined: bench/README.md, "bargein"."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.context import Ctx, LagWindow, lag_text
from bench.stats import fmt, summary, table, triple
from kit.peers import INTERRUPTION, Clip, Peer, make_clip

LONG_REQUEST = "Tell me a long story."
LONG_REPLY = " ".join(f"This is sentence number {i} of a rather long answer that goes on." for i in range(1, 13))
STANDIN_REPLY = "Okay, I stopped."
STANDIN_REPLY_DELAY_S = 1.0  # the interruption's own answer starts late, so its audio is not counted as the old reply's
STALE_AFTER_S = 0.12
GAP_S = 0.10
OBSERVE_S = 3.0  # after the interruption: how long its own reply may take to start


async def until(peer: Peer, index: int, timeout: float, pred: Any) -> tuple[float, dict[str, Any]] | None:
    """The first event from `index` on for which pred(t, event) holds, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for t, ev in peer.client.events[index:]:
            if pred(t, ev):
                return t, ev
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.01)


def speaking(t: float, ev: dict[str, Any]) -> bool:
    return ev.get("type") == "state" and ev.get("state") == "speaking"


async def interrupt(ctx: Ctx, peer: Peer, clip: Clip, rng: random.Random) -> dict[str, Any]:
    """One trial on a connected peer: a long reply, then `clip` spoken over it."""
    await ctx.standin.configure(stt_text=clip.text, llm_reply=LONG_REPLY, llm_first_token_delay=0.0)
    index = len(peer.client.events)
    peer.client.send({"type": "text", "text": LONG_REQUEST})
    started_reply = await until(peer, index, 15, speaking)
    if started_reply is None:
        return {"error": "the long reply never started"}
    t_sp, ev = started_reply
    turn = ev.get("turn")
    await asyncio.sleep(rng.uniform(0.8, 1.6))
    # the long reply's text is all written by now (zero delay): the next LLM request is the interruption's
    await ctx.standin.configure(llm_reply=STANDIN_REPLY, llm_first_token_delay=STANDIN_REPLY_DELAY_S)
    sent = await asyncio.wait_for(peer.client.mic.say(clip.samples48k), 10)
    onset = sent + clip.first_voiced
    detected = await until(peer, index, 5.0, lambda t, ev: ev.get("type") == "speech_started" and t >= onset - 0.05)
    old = await until(peer, index, 10.0, lambda t, ev: ev.get("type") == "reply" and ev.get("turn") == turn)
    cap = sent + clip.last_voiced + OBSERVE_S

    def answer(t: float, ev: dict[str, Any]) -> bool:  # its text is sent before its audio is made
        return t > onset and ev.get("turn") != turn and (ev.get("type") == "reply_delta" or speaking(t, ev))

    new = await until(peer, index, max(0.0, cap - time.monotonic()), answer)
    await asyncio.sleep(0.3)
    t_new = min(new[0], cap) if new is not None else cap  # frames before it are the old reply's
    audible = peer.audible(t_sp - 0.5, t_new)
    out: dict[str, Any] = {"onset": onset, "answered": new is not None, "interrupted": bool(old and old[1].get("interrupted"))}
    if not [t for t in audible if t < onset]:
        return out | {"error": "no reply audio before the interruption"}
    out["stop_ms"] = round((max(audible) - onset) * 1000, 1)
    if detected is None:
        return out | {"error": "no speech_started for the interruption"}
    t_det = detected[0]
    out["detect_ms"] = round((t_det - onset) * 1000, 1)
    out["stale_frames"] = sum(1 for t in audible if t > t_det + STALE_AFTER_S)
    resumed, prev = 0, t_det
    for t in (t for t in audible if t >= t_det):
        if t - prev >= GAP_S + 0.02:
            resumed += 1
        prev = t
    out["resumed_frames"] = resumed
    return out


async def run_bargein(ctx: Ctx) -> dict[str, Any]:
    n = 3 if ctx.opts.quick else 12
    rng = random.Random(ctx.opts.seed)
    await ctx.standin.reset(stt_text=INTERRUPTION, llm_reply=STANDIN_REPLY)
    server = await ctx.server("standin", name="bargein")
    clip = make_clip(INTERRUPTION)
    trials: list[dict[str, Any]] = []
    lag = LagWindow(server)
    try:
        await ctx.warm(server)
        await lag.start()
        t0 = time.monotonic()
        for i in range(n):
            peer = Peer(server.url)  # a fresh session: nothing of the last trial's answer is still playing
            try:
                await peer.connect()
                r = await interrupt(ctx, peer, clip, rng)
            finally:
                await peer.close()
            trials.append(r)
            ctx.progress(
                f"bargein {i + 1}/{n}: stop {fmt(r.get('stop_ms'))} ms, detect {fmt(r.get('detect_ms'))} ms, stale {r.get('stale_frames')}"
                + (f" [{r['error']}]" if r.get("error") else "")
            )
        t1 = time.monotonic()
        server_lag = await lag.stop()
    finally:
        await ctx.standin.configure(llm_first_token_delay=0.0)
        ctx.release(server)
    ok = [t for t in trials if not t.get("error")]
    out = {
        "trials": trials,
        "stop_ms": summary(t["stop_ms"] for t in ok),
        "detect_ms": summary(t["detect_ms"] for t in ok),
        "stale_frames": sum(t["stale_frames"] for t in ok),
        "resumed_frames": sum(t["resumed_frames"] for t in ok),
        "interrupted": sum(1 for t in ok if t["interrupted"]),
        "answered": sum(1 for t in ok if t["answered"]),
        "server_loop_lag_ms": server_lag,
        "client_loop_lag_ms": ctx.client_lag(t0, t1),
    }
    rows = [
        [
            "speech onset -> last audible frame of the reply",
            triple(out["stop_ms"]),
            "client: frame arrival - clip send time + voiced offset",
        ],
        ["speech onset -> server's speech_started", triple(out["detect_ms"]), "event arrival; includes the voiced audio the VAD needs"],
    ]
    text = table(
        ["barge-in (ms p50 / p95 / max)", "ms", "how"],
        rows,
        f"Barge-in - stand-in engines: {len(ok)}/{n} trials; the client says {INTERRUPTION!r} over a 12-sentence reply",
    )
    text += (
        f"\n  stale audio: {out['stale_frames']} audible frames arrived > {STALE_AFTER_S * 1000:.0f} ms after speech_started; "
        f"{out['resumed_frames']} resumed after a >= {GAP_S * 1000:.0f} ms gap; {out['interrupted']}/{len(ok)} replies reported "
        f"interrupted, {out['answered']}/{len(ok)} interruptions answered"
    )
    text += f"\n  server event-loop lag: {lag_text(server_lag)}; client process loop lag p99 {fmt(out['client_loop_lag_ms'].get('p99'), digits=1)} ms"
    for t in trials:
        if t.get("error"):
            text += f"\n  failed trial: {t['error']}"
    ctx.emit(text)
    ctx.figure("bargein/stop_p50_ms", out["stop_ms"].get("p50"))
    ctx.figure("bargein/detect_p50_ms", out["detect_ms"].get("p50"))
    ctx.figure("bargein/stale_frames", out["stale_frames"])
    return out
