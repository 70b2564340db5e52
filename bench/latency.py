"""Turn latency per stage: the server's figures (its `metrics` event) and the client's (arrival times).

One peer asks the spoken questions one after another (each after the previous answer has
finished playing), on the stand-in engines with zero delays (the pipeline's own overhead) and
on the embedded engines.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.context import Ctx, LagWindow, lag_text, per_engines, probe_lag
from bench.stats import fmt, summary, table, triple
from kit.peers import QUESTIONS, WARMUP, Peer, Turn, make_clip, warm_up
from settings import Settings

STANDIN_REPLY = "You said: {last_user}. This is the stand-in's answer. It has three sentences."
STANDIN_MS_PER_CHAR = 10.0  # shorter playout between turns; latency does not depend on it
VAD_SILENCE_MS = Settings().vad_silence_ms  # the longest silence the server waits (a prepared reply goes sooner)

STAGES = [
    # (label, server key, client key, how the client figure is measured)
    ("end-of-speech detection", "endpoint", "endpoint", "speech_stopped event - end of client speech"),
    ("STT", "stt", "stt", "transcript event - speech_stopped event"),
    ("LLM first token", "llm_first_token", "llm_first_token", "first reply_delta - transcript"),
    ("first sentence ready", "first_sentence", "first_sentence", "reply_delta completing sentence 1 - transcript"),
    ("TTS first chunk", "tts_first_audio", "tts_first_chunk", "~ speaking event - sentence-1 delta"),
    ("first audio frame leaves server", "voice_to_voice", "first_audio_leaving", "speaking event - end of client speech"),
    ("voice-to-voice (heard)", None, "voice_to_voice", "first audible frame received - end of client speech"),
    ("  of which delivery", None, "delivery", "first audible frame - speaking event"),
]


def n_questions(ctx: Ctx, engines: str) -> int:
    if ctx.opts.quick:
        return 3 if engines == "standin" else 2
    return 12 if engines == "standin" else 10


async def run_turns(ctx: Ctx, engines: str) -> dict[str, Any]:
    n = n_questions(ctx, engines)
    questions = QUESTIONS[:n]
    if engines == "standin":
        # The warm-up turn may take one STT pass or two (a pause after "Hello," may end a turn or
        # be held), so every pass of it hears WARMUP and the questions' script starts after it.
        await ctx.standin.reset(stt_text=WARMUP, llm_reply=STANDIN_REPLY, tts_ms_per_char=STANDIN_MS_PER_CHAR)
    server = await ctx.server(engines, name="latency")
    result: dict[str, Any] = {
        "engines": engines,
        "server_ready_s": server.ready_s,
        "health": server.health,
        "vad_silence_ms": VAD_SILENCE_MS,
    }
    try:
        clips = [make_clip(q) for q in questions]
        peer = Peer(server.url)
        await peer.connect()
        tw = time.monotonic()
        warm = await warm_up(peer, timeout=30 if engines == "standin" else 120)
        server.warmed = True
        result["warmup_turns"] = [t.to_dict() for t in warm]
        result["warmup_server_loop_lag_ms"] = await probe_lag(server, tw, time.monotonic())
        await asyncio.sleep(0.5)
        lag = LagWindow(server)
        await lag.start()
        t0 = time.monotonic()
        turns: list[Turn] = []
        for i, clip in enumerate(clips):
            if engines == "standin":  # by text, not by call order: one question may be transcribed at each pause
                await ctx.standin.configure(stt_text=clip.text)
            turn = await peer.ask(clip, timeout=30 if engines == "standin" else 120)
            turns.append(turn)
            c = turn.client_ms()
            ctx.progress(
                f"latency/{engines} {i + 1}/{n}: v2v client {fmt(c['voice_to_voice'])} ms, server {fmt(turn.metrics.get('voice_to_voice_ms'))} ms"
                + (f" [{turn.error or 'empty transcript'}]" if not turn.ok else "")
            )
            await asyncio.sleep(0.4)
        t1 = time.monotonic()
        result["server_loop_lag_ms"] = await lag.stop()
        result["client_loop_lag_ms"] = ctx.client_lag(t0, t1)
        await peer.close()
    finally:
        ctx.release(server)
    result["turns"] = [t.to_dict() for t in turns]
    ok = [t for t in turns if t.ok]
    result["failed"] = [{"question": t.question, "error": t.error or "empty transcript"} for t in turns if not t.ok]
    result["server"] = {
        k: summary(t.server_ms().get(k) for t in ok)
        for k in ("endpoint", "stt", "llm_first_token", "first_sentence", "tts_first_audio", "voice_to_voice", "after_endpoint")
    }
    result["client"] = {k: summary(t.client_ms().get(k) for t in ok) for k in ok[0].client_ms()} if ok else {}
    return result


def latency_table(r: dict[str, Any]) -> str:
    name = "stand-in engines, zero delay (the pipeline's own overhead)" if r["engines"] == "standin" else "embedded engines"
    engines = ", ".join(f"{k}={v.get('engine')}" for k, v in (r.get("health", {}).get("engines") or {}).items())
    ok = len(r["turns"]) - len(r["failed"])
    rows = []
    for label, skey, ckey, how in STAGES:
        rows.append([label, triple(r["server"].get(skey)) if skey else "-", triple(r["client"].get(ckey)), how])
    title = f"Turn latency - {name}: {ok}/{len(r['turns'])} turns ok; VAD_SILENCE_MS {r['vad_silence_ms']}; ms p50 / p95 / max\n  engines: {engines}"
    out = table(["stage", "server (metrics event)", "client (arrival times)", "client measure"], rows, title)
    client = r.get("client_loop_lag_ms") or {}
    out += f"\n  server event-loop lag: {lag_text(r.get('server_loop_lag_ms'))}; client process loop lag p99 {fmt(client.get('p99'), digits=1)} ms"
    warm = (r.get("warmup_turns") or [{}])[-1]
    if warm.get("client_ms"):
        out += (
            f"\n  not counted: the first spoken turn after start (warm-up): voice-to-voice client {fmt(warm['client_ms']['voice_to_voice'])} ms, "
            f"server {fmt(warm['server_ms'].get('voice_to_voice'))} ms; server loop lag max during warm-up {fmt((r.get('warmup_server_loop_lag_ms') or {}).get('max'))} ms"
        )
    for f in r["failed"]:
        out += f"\n  failed turn: {f['question']!r}: {f['error']}"
    return out


async def run_latency(ctx: Ctx) -> dict[str, Any]:
    def report(engines: str, r: dict[str, Any]) -> None:
        ctx.emit(latency_table(r))
        for key in ("voice_to_voice", "endpoint", "stt", "first_sentence", "delivery"):
            ctx.figure(f"latency/{engines}/{key}_p50_ms", (r["client"].get(key) or {}).get("p50"))

    return await per_engines(ctx, "Turn latency", run_turns, report)
