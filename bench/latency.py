"""Parts 1 and 2: turn latency per stage (server's figures and the client's), and the seed baseline.

Latency: one peer asks the spoken questions one after another (each after the
previous answer has finished playing), on the stand-in engines with zero
delays (the pipeline's own overhead) and on the embedded engines.

Baseline: the seed design waited 1.5 s of silence, generated the whole reply,
synthesised the whole reply, then sent it. Its voice-to-voice is built from
parts measured in this same invocation, on the same engines and audio:

    seed = end-of-speech at 1.5 s   (a real server run with --vad-silence-ms 1500, same clips, at the client)
         + STT + whole LLM reply + whole-reply TTS   (bench/seed.py: the same engines, run one after another)
         + delivery                 (this run: first audible frame at the client - `speaking` event)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from typing import Any

from bench.context import Ctx, LagWindow, lag_text, probe_lag, reason_of
from bench.procs import LOCAL_FLAGS, PYTHON, ROOT
from bench.stats import fmt, summary, table, triple
from kit.peers import QUESTIONS, WARMUP, Peer, Turn, connect_all, make_clip, warm_up

STANDIN_REPLY = "You said: {last_user}. This is the stand-in's answer. It has three sentences."
STANDIN_MS_PER_CHAR = 10.0  # shorter playout between turns; latency does not depend on it
VAD_SILENCE_MS = 500  # the server's default
SEED_SILENCE_MS = 1500

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
        if engines == "standin":
            await ctx.standin.configure(stt_script=list(questions))
        result["warmup_turns"] = [t.to_dict() for t in warm]
        result["warmup_server_loop_lag_ms"] = await probe_lag(server, tw, time.monotonic())
        await asyncio.sleep(0.5)
        lag = LagWindow(server)
        await lag.start()
        t0 = time.monotonic()
        turns: list[Turn] = []
        for i, clip in enumerate(clips):
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
        server.close()
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
    title = f"Turn latency - {name}: {ok}/{len(r['turns'])} turns ok; VAD silence configured {r['vad_silence_ms']} ms; ms p50 / p95 / max\n  engines: {engines}"
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
    out: dict[str, Any] = {}
    ctx.shared["latency_attempted"] = True
    for engines in ctx.opts.engines:
        try:
            r = await run_turns(ctx, engines)
        except Exception as exc:  # noqa: BLE001 - e.g. embedded engines not installed: report and go on
            out[engines] = {"unavailable": reason_of(exc)}
            ctx.emit(f"Turn latency - {engines} engines: unavailable: {out[engines]['unavailable']}")
            continue
        out[engines] = r
        ctx.shared[f"latency/{engines}"] = r
        ctx.emit(latency_table(r))
        explain_latency(ctx, r)
    return out


def explain_latency(ctx: Ctx, r: dict[str, Any]) -> None:
    c, s = r["client"], r["server"]
    if not c:
        return
    ep = c.get("endpoint", {})
    if ep.get("n") and ep["p50"] - r["vad_silence_ms"] > 40:
        ctx.note(
            f"{r['engines']}: end of speech took {ep['p50']:.0f} ms (p50) at the client for {r['vad_silence_ms']} ms configured. The extra is the "
            "uplink, mostly the server's receive jitter buffer (RTP_JITTER_FRAMES frames of 20 ms, 2 by default) before the VAD sees them, plus the "
            "VAD's tail. The server's endpoint_ms and voice_to_voice_ms cannot see it: its media clock starts at the first frame's arrival"
        )
    dl = c.get("delivery", {})
    if dl.get("n") and dl["p50"] > 50:
        ctx.note(
            f"{r['engines']}: {dl['p50']:.0f} ms (p50) between the server's first audio frame leaving and it arriving as decoded audio: "
            "the client's aiortc jitter buffer holds 4 frames (80 ms) before it releases one (a browser's adaptive buffer holds less)"
        )
    if r["engines"] == "local":
        stages = {k: (s.get(k) or {}).get("p50", 0) for k in ("stt", "first_sentence", "tts_first_audio")}
        slow = max(stages, key=lambda k: stages[k])
        ctx.note(
            f"local: after the 500 ms of silence, {' + '.join(f'{k} {v:.0f}' for k, v in stages.items())} ms (p50) on 2 shared cores; "
            f"the largest is {slow}"
        )


# ---------------------------------------------------------------- baseline


async def seed_endpoints(ctx: Ctx, questions: list[str]) -> dict[str, Any]:
    """End-of-speech at the seed's 1.5 s silence: a real server run on the same clips (3 peers in parallel)."""
    await ctx.standin.reset(stt_text="Okay.", llm_reply="Okay.", tts_ms_per_char=STANDIN_MS_PER_CHAR)
    server = await ctx.server("standin", ["--vad-silence-ms", str(SEED_SILENCE_MS)], name="seed-endpoint")
    by_question: dict[str, dict[str, Any]] = {}
    try:
        peers, errors = await connect_all(server.url, min(3, len(questions)))
        if not peers:
            raise RuntimeError(f"no peer connected: {errors}")
        clips = [make_clip(q) for q in questions]

        async def lane(peer: Peer, share: list[int]) -> None:
            for i in share:
                turn = await peer.ask(clips[i], timeout=20)
                by_question[questions[i]] = {"client_ms": turn.client_ms()["endpoint"], "server_ms": turn.metrics.get("endpoint_ms")}
                await asyncio.sleep(0.3)

        await asyncio.gather(*(lane(p, list(range(k, len(questions), len(peers)))) for k, p in enumerate(peers)))
        for p in peers:
            await p.close()
    finally:
        server.close()
    return by_question


async def seed_engines(ctx: Ctx, engines: str, questions: list[str]) -> dict[str, Any]:
    if engines == "standin":
        await ctx.standin.reset(stt_script=[WARMUP, *questions], llm_reply=STANDIN_REPLY, tts_ms_per_char=STANDIN_MS_PER_CHAR)
        flags = ctx.standin.engine_flags()
    else:
        flags = list(LOCAL_FLAGS)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"flags": flags, "warmup": [WARMUP], "questions": questions, "silence_s": SEED_SILENCE_MS / 1000}, f)
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bench.seed", f.name, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 600)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"bench.seed failed: {err.decode(errors='replace').strip().splitlines()[-3:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def run_baseline(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = {e: ctx.shared.get(f"latency/{e}") for e in ctx.opts.engines}
    if not any(runs.values()) and not ctx.shared.get("latency_attempted"):
        ctx.progress("baseline needs the latency runs: running them")
        await run_latency(ctx)
        runs = {e: ctx.shared.get(f"latency/{e}") for e in ctx.opts.engines}
    all_questions = sorted({t["question"] for r in runs.values() if r for t in r["turns"]}, key=QUESTIONS.index)
    if not all_questions:
        ctx.emit("Baseline: unavailable (no latency run succeeded)")
        return {"unavailable": "no latency run"}
    ctx.progress(f"baseline: seed end-of-speech run ({SEED_SILENCE_MS} ms silence), {len(all_questions)} clips")
    endpoints = await seed_endpoints(ctx, all_questions)
    out["seed_endpoint"] = endpoints
    for engines, run in runs.items():
        if not run:
            continue
        ctx.progress(f"baseline/{engines}: the seed's sequential STT -> whole LLM reply -> whole TTS")
        try:
            seed = await seed_engines(ctx, engines, [t["question"] for t in run["turns"]])
        except Exception as exc:  # noqa: BLE001
            out[engines] = {"unavailable": reason_of(exc)}
            ctx.emit(f"Baseline - {engines}: unavailable: {out[engines]['unavailable']}")
            continue
        out[engines] = compare(run, seed, endpoints)
        ctx.emit(baseline_table(engines, out[engines]))
    return out


def compare(run: dict[str, Any], seed: dict[str, Any], endpoints: dict[str, Any]) -> dict[str, Any]:
    delivery_p50 = (run["client"].get("delivery") or {}).get("p50", 0.0)
    rows: list[dict[str, Any]] = []
    for ours, s in zip(run["turns"], seed["turns"], strict=False):
        c = ours["client_ms"]
        ep = endpoints.get(ours["question"], {})
        delivery = c["delivery"] if c["delivery"] is not None else delivery_p50
        parts = [ep.get("client_ms"), s["stt_ms"], s["llm_full_ms"], s["tts_whole_ms"], delivery]
        seed_v2v = round(sum(parts), 1) if all(p is not None for p in parts) else None
        seed_server = None
        if ep.get("server_ms") is not None:
            seed_server = round(ep["server_ms"] + s["stt_ms"] + s["llm_full_ms"] + s["tts_whole_ms"], 1)
        rows.append(
            {
                "question": ours["question"],
                "ours_client_v2v_ms": c["voice_to_voice"],
                "ours_server_v2v_ms": ours["server_ms"].get("voice_to_voice"),
                "seed_v2v_ms": seed_v2v,
                "seed_server_v2v_ms": seed_server,
                "seed_endpoint_ms": ep.get("client_ms"),
                "seed_endpoint_server_ms": ep.get("server_ms"),
                "seed_stt_ms": s["stt_ms"],
                "seed_llm_full_ms": s["llm_full_ms"],
                "seed_tts_whole_ms": s["tts_whole_ms"],
                "delivery_ms": delivery,
                "ours_llm_full_ms": c["llm_full"],
                "seed_reply_chars": len(s["reply"]),
                "ours_reply_chars": len(ours["reply"]),
                "seed_audio_s": s["audio_s"],
                "ratio": round(c["voice_to_voice"] / seed_v2v, 3) if c["voice_to_voice"] and seed_v2v else None,
            }
        )
    keys = [k for k in rows[0] if k.endswith(("_ms", "_chars")) or k == "ratio"] if rows else []
    return {
        "turns": rows,
        "summary": {k: summary(r[k] for r in rows) for k in keys},
        "seed_load_s": seed.get("load_s"),
        "seed_engines": seed.get("engines"),
    }


def baseline_table(engines: str, b: dict[str, Any]) -> str:
    s = b["summary"]
    ours, seed = s.get("ours_client_v2v_ms", {}), s.get("seed_v2v_ms", {})
    rows = [
        ["ours: voice-to-voice at the client", triple(ours), "measured (latency run above)"],
        ["ours: server's own voice_to_voice_ms", triple(s.get("ours_server_v2v_ms")), "metrics event"],
        [
            "seed: end of speech, 1.5 s silence",
            triple(s.get("seed_endpoint_ms")),
            f"real server run at 1500 ms, same clips (server says {triple(s.get('seed_endpoint_server_ms'))})",
        ],
        ["seed: + STT", triple(s.get("seed_stt_ms")), "bench/seed.py, same engine"],
        [
            "seed: + whole LLM reply",
            triple(s.get("seed_llm_full_ms")),
            f"same engine; ours streamed it in {triple(s.get('ours_llm_full_ms'))}",
        ],
        ["seed: + whole-reply TTS", triple(s.get("seed_tts_whole_ms")), "one request for the whole reply"],
        ["seed: + delivery", triple(s.get("delivery_ms")), "ours: first audible frame - speaking event"],
        ["seed: voice-to-voice", triple(seed), "sum of the above, per question"],
        ["seed: server-side equivalent", triple(s.get("seed_server_v2v_ms")), "server endpoint + engine stages"],
    ]
    rows.append(
        [
            "reply length (characters)",
            f"ours {fmt((s.get('ours_reply_chars') or {}).get('p50'))}, seed {fmt((s.get('seed_reply_chars') or {}).get('p50'))} (p50)",
            "same questions and history; the LLM samples at temperature > 0",
        ]
    )
    ratio = s.get("ratio", {})
    p50_ratio = (ours.get("p50") or 0) / seed["p50"] if seed.get("p50") else None
    title = (
        f"Baseline - {engines} engines: the seed design (1.5 s silence, whole reply, then whole synthesis, then send); ms p50 / p95 / max"
    )
    text = table(["", "ms", "how"], rows, title)
    if ratio.get("n"):
        text += f"\n  ours / seed voice-to-voice: {p50_ratio:.2f} (ratio of p50s); per question p50 {ratio['p50']:.2f}, worst {ratio['max']:.2f}"
    return text
