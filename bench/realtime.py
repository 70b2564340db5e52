"""The Realtime WebSocket path beside the page's WebRTC path, on one server, turn by turn.

The same spoken questions go alternately through an aiortc peer (the page's protocol) and through
the official `openai` SDK's Realtime WebSocket client (`/v1/realtime`, 24 kHz PCM sent in 20 ms
chunks as a microphone would). Voice-to-voice on each: from the end of the client's voiced audio
to the first audible frame received (page) or the first `response.output_audio.delta` (WebSocket).
Then barge-in over the WebSocket: "Wait, stop." over a long reply; how many deltas of that
response arrived after `input_audio_buffer.speech_started`, and when its last one did.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.bargein import LONG_REPLY, LONG_REQUEST, STANDIN_REPLY
from bench.context import Ctx, per_engines
from bench.stats import fmt, summary, table, triple
from kit.peers import INTERRUPTION, QUESTIONS, WARMUP, Peer, make_clip, warm_up
from kit.realtime_client import RATE, Received, realtime, stream
from kit.speech import concat, silence, speak, voiced_bounds

STANDIN_REPLY_V2V = "You said: {last_user}. This is the stand-in's answer. It has three sentences."


def ws_clip(text: str) -> tuple[Any, float, float]:
    """24 kHz samples padded as the page's clips are, and their first and last voiced second."""
    speech = speak(text, rate=RATE)
    first, last = voiced_bounds(speech, rate=RATE)
    return concat(silence(0.2, RATE), speech, silence(1.5, RATE)), 0.2 + first, 0.2 + last


async def ws_turn(connection: Any, received: Received, text: str, timeout: float) -> dict[str, Any]:
    samples, _, last = ws_clip(text)
    start = time.monotonic()
    sending = asyncio.create_task(stream(connection, samples, chunk_ms=20))
    speech_end = start + last
    try:
        t_done, done = await received.wait("response.done", after=start, timeout=timeout)
    except TimeoutError:
        return {"error": "no response.done"}
    finally:
        await sending
    deltas = [t for t, e in received.of("response.output_audio.delta", after=start) if e.response_id == done.response.id]
    if not deltas:
        return {"error": "no audio delta"}
    return {"voice_to_voice": round((deltas[0] - speech_end) * 1000, 1), "status": done.response.status}


async def ws_bargein(ctx: Ctx, connection: Any, received: Received, rng: random.Random) -> dict[str, Any]:
    await ctx.standin.configure(stt_text=INTERRUPTION, llm_reply=LONG_REPLY, llm_first_token_delay=0.0)
    t0 = time.monotonic()
    await connection.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_REQUEST}]}
    )
    await connection.response.create()
    try:
        t_first, first = await received.wait("response.output_audio.delta", after=t0, timeout=15)
    except TimeoutError:
        return {"error": "the long reply never started"}
    await asyncio.sleep(rng.uniform(0.8, 1.6))
    await ctx.standin.configure(llm_reply=STANDIN_REPLY, llm_first_token_delay=1.0)
    samples, first_voiced, _ = ws_clip(INTERRUPTION)
    start = time.monotonic()
    sending = asyncio.create_task(stream(connection, samples, chunk_ms=20))
    onset = start + first_voiced
    try:
        t_started, _ = await received.wait("input_audio_buffer.speech_started", after=start, timeout=5)
        _, done = await received.wait("response.done", after=t_first, timeout=10, where=lambda e: e.response.id == first.response_id)
    except TimeoutError:
        return {"error": "no speech_started or no end of the interrupted response"}
    finally:
        await sending
    ours = [t for t, e in received.of("response.output_audio.delta", after=t_first) if e.response_id == first.response_id]
    after = [t for t in ours if t > t_started]
    await received.wait("response.done", after=t_started, timeout=15, where=lambda e: e.response.id != first.response_id)
    return {
        "stop_ms": round((max(ours) - onset) * 1000, 1),
        "detect_ms": round((t_started - onset) * 1000, 1),
        "deltas_after_speech_started": len(after),
        "status": done.response.status,
    }


async def run_paths(ctx: Ctx, engines: str) -> dict[str, Any]:
    n = (3 if engines == "standin" else 2) if ctx.opts.quick else (10 if engines == "standin" else 6)
    questions = QUESTIONS[:n]
    if engines == "standin":
        await ctx.standin.reset(stt_text=WARMUP, llm_reply=STANDIN_REPLY_V2V, tts_ms_per_char=10.0)
    server = await ctx.server(engines, name="realtime")
    timeout = 30 if engines == "standin" else 120
    page: list[dict[str, Any]] = []
    ws: list[dict[str, Any]] = []
    bargein: list[dict[str, Any]] = []
    try:
        peer = Peer(server.url)
        await peer.connect()
        await warm_up(peer, timeout=timeout)
        async with realtime(server.url) as (connection, received):
            await received.wait("session.created")
            for i, text in enumerate(questions):
                if engines == "standin":
                    await ctx.standin.configure(stt_text=text)
                turn = await peer.ask(make_clip(text), timeout=timeout)
                c = turn.client_ms()
                page.append({"question": text, "voice_to_voice": c.get("voice_to_voice") if turn.ok else None, "error": turn.error})
                await asyncio.sleep(0.4)
                w = await ws_turn(connection, received, text, timeout) | {"question": text}
                ws.append(w)
                ctx.progress(
                    f"realtime/{engines} {i + 1}/{n}: v2v page {fmt(page[-1]['voice_to_voice'])} ms, websocket {fmt(w.get('voice_to_voice'))} ms"
                )
                await asyncio.sleep(0.4)
            if engines == "standin":
                rng = random.Random(7)
                for i in range(2 if ctx.opts.quick else 6):
                    trial = await ws_bargein(ctx, connection, received, rng)
                    bargein.append(trial)
                    ctx.progress(
                        f"realtime/bargein {i + 1}: stop {fmt(trial.get('stop_ms'))} ms, deltas after speech_started {trial.get('deltas_after_speech_started')}"
                    )
                    await asyncio.sleep(0.5)
        await peer.close()
    finally:
        ctx.release(server)
    v2v_page = [p["voice_to_voice"] for p in page if p["voice_to_voice"] is not None]
    v2v_ws = [w["voice_to_voice"] for w in ws if w.get("voice_to_voice") is not None]
    pairs = [
        w["voice_to_voice"] - p["voice_to_voice"]
        for p, w in zip(page, ws, strict=True)
        if p["voice_to_voice"] is not None and w.get("voice_to_voice") is not None
    ]
    return {
        "engines": engines,
        "page": page,
        "websocket": ws,
        "bargein": bargein,
        "summary": {
            "page_v2v": summary(v2v_page),
            "websocket_v2v": summary(v2v_ws),
            "websocket_minus_page": summary(pairs),
            "bargein_stop": summary(b.get("stop_ms") for b in bargein),
            "bargein_deltas_after": sum(b.get("deltas_after_speech_started", 0) for b in bargein),
        },
    }


def paths_table(r: dict[str, Any]) -> str:
    s = r["summary"]
    rows = [
        [
            "voice-to-voice, page (WebRTC, first audible frame)",
            triple(s["page_v2v"]),
            f"{len([p for p in r['page'] if p['voice_to_voice'] is not None])}/{len(r['page'])}",
        ],
        [
            "voice-to-voice, WebSocket (first audio delta)",
            triple(s["websocket_v2v"]),
            f"{len([w for w in r['websocket'] if w.get('voice_to_voice') is not None])}/{len(r['websocket'])}",
        ],
        ["  WebSocket minus page, same question", triple(s["websocket_minus_page"]), ""],
    ]
    if r["bargein"]:
        ok = [b for b in r["bargein"] if "stop_ms" in b]
        rows.append(["barge-in over the WebSocket: last delta - speech onset", triple(s["bargein_stop"]), f"{len(ok)}/{len(r['bargein'])}"])
        rows.append(["  deltas of the interrupted response after speech_started", str(s["bargein_deltas_after"]), ""])
    return table(["measure", "ms p50 / p95 / max", "ok"], rows, f"Realtime WebSocket beside the page, one server - {r['engines']} engines")


async def run_realtime(ctx: Ctx) -> dict[str, Any]:
    def report(engines: str, r: dict[str, Any]) -> None:
        ctx.emit(paths_table(r))
        ctx.figure(f"realtime/{engines}/websocket_minus_page_p50_ms", (r["summary"]["websocket_minus_page"] or {}).get("p50"))
        ctx.figure(f"realtime/{engines}/websocket_v2v_p50_ms", (r["summary"]["websocket_v2v"] or {}).get("p50"))

    return await per_engines(ctx, "Realtime paths", run_paths, report)
