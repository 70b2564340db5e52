"""Part 3: barge-in. The client speaks over a long reply; how soon does the reply's audio stop at the client?

Per trial: a typed request for a long reply (stand-in: 12 sentences, ~40 s of
audio); once `state speaking` arrives, wait 0.8-1.6 s (random phase), then
speak an interruption. The stand-in transcribes the interruption as
"[BLANK_AUDIO]", so it starts no reply of its own: every audible frame after
the onset belongs to the interrupted turn.

    onset       = the interruption clip's send time + offset of its first voiced 10 ms (client media time)
    stop        = last audible frame of the interrupted reply received - onset
    detect      = speech_started event received - onset (the server's decision, seen at the client)
    stale       = audible frames received more than STALE_AFTER_S after speech_started arrived
                  (the server flushed by then; what is already in flight or in the client's
                  4-frame jitter buffer arrives within ~100 ms), and
    resumed     = audible frames after a silent gap of >= 100 ms following the onset
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.context import Ctx, LagWindow, lag_text
from bench.stats import fmt, summary, table, triple
from kit.peers import INTERRUPTION, Peer, make_clip, warm_up

LONG_REPLY = " ".join(f"This is sentence number {i} of a rather long answer that goes on." for i in range(1, 13))
STALE_AFTER_S = 0.12
GAP_S = 0.10


async def _wait(peer: Peer, index: int, timeout: float, kind: str, after: float = 0.0, **match: Any) -> tuple[float, dict[str, Any]] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, ev in peer.client.events[index:]:
            if t >= after and ev.get("type") == kind and all(ev.get(k) == v for k, v in match.items()):
                return t, ev
        await asyncio.sleep(0.01)
    return None


async def trial(peer: Peer, clip: Any, rng: random.Random) -> dict[str, Any]:
    index = len(peer.client.events)
    peer.client.send({"type": "text", "text": "Tell me a long story."})
    speaking = await _wait(peer, index, 15, "state", state="speaking")
    if speaking is None:
        return {"error": "the long reply never started"}
    t_speaking, ev = speaking
    turn = ev.get("turn")
    await asyncio.sleep(rng.uniform(0.8, 1.6))
    sent = await asyncio.wait_for(peer.client.mic.say(clip.samples48k), 10)
    onset = sent + clip.first_voiced
    started = await _wait(peer, index, 10, "speech_started", after=onset - 0.05)
    reply = await _wait(peer, index, 10, "reply", turn=turn)
    stopped = await _wait(peer, index, 15, "speech_stopped", after=onset)
    if stopped is not None:  # the interruption's own (empty) turn is over
        await _wait(peer, index, 10, "state", after=stopped[0], state="listening")
    await asyncio.sleep(0.3)
    audible = peer.audible(t_speaking - 0.5)
    out: dict[str, Any] = {"turn": turn, "onset": onset, "t_speaking": t_speaking, "played_before_onset_s": None}
    before = [t for t in audible if t < onset]
    if not before:
        out["error"] = "no reply audio before the interruption"
        return out
    out["played_before_onset_s"] = round(onset - before[0], 2)
    last = max(audible)
    out["stop_ms"] = round((last - onset) * 1000, 1)
    out["reply_interrupted"] = bool(reply and reply[1].get("interrupted"))
    out["heard_chars"] = len(reply[1].get("heard", "")) if reply else None
    if started is None:
        out["error"] = "no speech_started for the interruption"
        return out
    t_started = started[0]
    out["detect_ms"] = round((t_started - onset) * 1000, 1)
    out["stale_frames"] = sum(1 for t in audible if t > t_started + STALE_AFTER_S)
    after = [t for t in audible if t >= onset]
    resumed, prev = 0, onset
    for t in after:
        if t - prev >= GAP_S + 0.02:
            resumed += 1
        prev = t
    out["resumed_frames"] = resumed
    out["audible_after_onset"] = len(after)
    peer.forget_frames(time.monotonic() - 1.0)
    return out


async def run_bargein(ctx: Ctx) -> dict[str, Any]:
    n = 3 if ctx.opts.quick else 12
    rng = random.Random(ctx.opts.seed)
    await ctx.standin.reset(llm_reply="Okay.", stt_text="[BLANK_AUDIO]")
    server = await ctx.server("standin", name="bargein")
    trials: list[dict[str, Any]] = []
    try:
        clip = make_clip(INTERRUPTION)
        peer = Peer(server.url)
        await peer.connect()
        await warm_up(peer)
        await ctx.standin.configure(llm_reply=LONG_REPLY)
        await asyncio.sleep(0.5)
        lag = LagWindow(server)
        await lag.start()
        t0 = time.monotonic()
        for i in range(n):
            r = await trial(peer, clip, rng)
            trials.append(r)
            ctx.progress(
                f"bargein {i + 1}/{n}: stop {fmt(r.get('stop_ms'))} ms, detect {fmt(r.get('detect_ms'))} ms, stale {r.get('stale_frames')}"
                + (f" [{r['error']}]" if r.get("error") else "")
            )
            await asyncio.sleep(0.3)
        t1 = time.monotonic()
        server_lag = await lag.stop()
        await peer.close()
    finally:
        server.close()
    ok = [t for t in trials if not t.get("error")]
    out = {
        "trials": trials,
        "stop_ms": summary(t["stop_ms"] for t in ok),
        "detect_ms": summary(t["detect_ms"] for t in ok),
        "stale_frames": sum(t["stale_frames"] for t in ok),
        "resumed_frames": sum(t["resumed_frames"] for t in ok),
        "interrupted_replies": sum(1 for t in ok if t["reply_interrupted"]),
        "ok": len(ok),
        "server_loop_lag_ms": server_lag,
        "client_loop_lag_ms": ctx.client_lag(t0, t1),
    }
    rows = [
        [
            "speech onset -> last audible frame of the reply",
            triple(out["stop_ms"]),
            "client: audio frame arrival - clip send time + voiced offset",
        ],
        [
            "speech onset -> server's speech_started",
            triple(out["detect_ms"]),
            f"event arrival; includes the {100} ms of speech the VAD needs (VAD_START_MS)",
        ],
    ]
    text = table(
        ["barge-in (ms p50 / p95 / max)", "ms", "how"],
        rows,
        f"Barge-in - stand-in engines: {len(ok)}/{n} trials; the client talks over a 12-sentence reply",
    )
    text += (
        f"\n  stale audio: {out['stale_frames']} audible frames arrived > {STALE_AFTER_S * 1000:.0f} ms after speech_started; "
        f"{out['resumed_frames']} resumed after a >= {GAP_S * 1000:.0f} ms gap; {out['interrupted_replies']}/{len(ok)} replies reported interrupted=true"
    )
    text += f"\n  server event-loop lag: {lag_text(server_lag)}; client process loop lag p99 {fmt(out['client_loop_lag_ms'].get('p99'), digits=1)} ms"
    ctx.emit(text)
    if out["stop_ms"].get("n") and out["detect_ms"].get("n"):
        ctx.note(
            f"barge-in: of the {out['stop_ms']['p50']:.0f} ms (p50) to silence, {out['detect_ms']['p50']:.0f} ms is detection "
            "(100 ms of voiced audio by design, plus the uplink incl. the server's receive jitter buffer, RTP_JITTER_FRAMES deep); the rest is "
            "audio already in flight and in the client's 4-frame jitter buffer"
        )
    return out
