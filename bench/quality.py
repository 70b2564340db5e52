"""`python -m bench quality`: the spoken evaluation set through the whole product, embedded engines.

What it measures and how each figure is defined: bench/README.md, "quality"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.context import Ctx, reason_of
from bench.eval_set import CONVERSATIONS, QUESTIONS, Conversation, Question, is_right
from bench.stats import pct
from kit.eval_voices import GROUPS, Recording, fixed_reference, recordings, spoken
from kit.peers import Clip, Peer, Turn
from kit.rtc_client import to_48k
from kit.speech import RATE, voiced_bounds
from kit.wer import wer

LATENCY_ITEMS = 4  # per group, sequential, for voice-to-voice
CONCURRENCY = 2
TURN_TIMEOUT_S = 60.0
SETTLE_S = 2.5  # a recording's session: quiet this long after the last transcript -> done


@dataclass
class ItemResult:
    kind: str  # question | conversation | recording
    name: str
    group: str
    voice: str
    split: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)  # one per user utterance
    error: str = ""


def clip_of(text: str, samples: np.ndarray) -> Clip:
    first, last = voiced_bounds(samples)
    return Clip(text, samples, to_48k(samples), first, last)


def _turn_row(turn: Turn, text: str, keywords: Sequence[str]) -> dict[str, Any]:
    v2v = turn.client_ms()["voice_to_voice"]
    return {
        "said": text,
        "transcript": turn.transcript,
        "reply": turn.reply,
        "scored": bool(keywords),
        "right": is_right(turn.reply, keywords) if keywords else None,
        "v2v_ms": v2v,
        "interrupted": None,
        "error": turn.error,
    }


async def _session(url: str) -> Peer:
    peer = Peer(url)
    await peer.connect()
    return peer


async def ask_question(url: str, q: Question, group: str, index: int) -> ItemResult | None:
    made = spoken(q.text, group, index)
    if made is None:
        return None
    voice, samples = made
    item = ItemResult("question", q.text, group, voice, q.split)
    peer = await _session(url)
    try:
        turn = await peer.ask(clip_of(q.text, samples), timeout=TURN_TIMEOUT_S)
        item.steps.append(_turn_row(turn, q.text, q.keywords))
    except Exception as exc:  # noqa: BLE001 - one broken item is a wrong answer, not a broken run
        item.error = reason_of(exc)
    finally:
        await peer.close()
    return item


async def _first_audible(peer: Peer, after: float, timeout: float = 30.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heard = peer.audible(after)
        if heard:
            return heard[0]
        await asyncio.sleep(0.02)
    return None


async def run_conversation(url: str, conv: Conversation, group: str, index: int) -> ItemResult | None:
    voices = [spoken(s.text, group, index, s.after_pause) for s in conv.steps]
    if any(v is None for v in voices):
        return None
    item = ItemResult("conversation", conv.name, group, voices[0][0], conv.split)  # type: ignore[index]
    peer = await _session(url)
    try:
        pending: tuple[asyncio.Task[Turn], str, Sequence[str]] | None = None  # a reply the next step talks over
        for step, made, nxt in zip(conv.steps, voices, [*conv.steps[1:], None], strict=True):
            assert made is not None
            if pending is not None:
                first = await _first_audible(peer, time.monotonic() - 5.0)
                if first is not None:
                    await asyncio.sleep(max(0.0, first + step.delay_s - time.monotonic()))
            task = asyncio.create_task(peer.ask(clip_of(step.spoken, made[1]), timeout=TURN_TIMEOUT_S))
            if pending is not None:
                old, said, keywords = pending
                interrupted = await old
                row = _turn_row(interrupted, said, keywords)
                row["interrupted"] = any(
                    ev.get("type") == "reply" and ev.get("turn") == interrupted.turn and ev.get("interrupted")
                    for _, ev in peer.client.events
                )
                item.steps.append(row)
            pending = (task, step.spoken, step.keywords) if nxt is not None and nxt.kind == "bargein" else None
            if pending is None:
                item.steps.append(_turn_row(await task, step.spoken, step.keywords))
    except Exception as exc:  # noqa: BLE001
        item.error = reason_of(exc)
    finally:
        await peer.close()
    return item


async def speak_recording(url: str, rec: Recording) -> ItemResult:
    """A recording's words as the product heard them: the last transcript of each of its turns, in order."""
    item = ItemResult("recording", rec.id, "recordings", rec.source)
    peer = await _session(url)
    try:
        lead = np.zeros(int(0.3 * RATE), np.int16)
        samples = np.concatenate([lead, rec.samples, lead])
        start = len(peer.client.events)
        sent = await asyncio.wait_for(peer.client.mic.say(to_48k(samples)), 60)
        end = sent + len(samples) / RATE  # the clip is still being spoken until then
        deadline = end + TURN_TIMEOUT_S
        # Done when the clip has ended, every utterance that started has its transcript (or the
        # session went back to listening without one: noise), and nothing new came for SETTLE_S.
        while time.monotonic() < deadline:
            events = [ev for _, ev in peer.client.events[start:]]
            started = {ev.get("turn") for ev in events if ev.get("type") == "speech_started"}
            transcribed = {ev.get("turn") for ev in events if ev.get("type") == "transcript"}
            quiet = not peer.client.events[start:] or time.monotonic() - peer.client.events[-1][0] > SETTLE_S
            idle = events and events[-1].get("type") == "state" and events[-1].get("state") == "listening"
            if time.monotonic() > end + SETTLE_S and quiet and (started <= transcribed or idle):
                break
            await asyncio.sleep(0.05)
        by_turn: dict[Any, str] = {}
        for _, ev in peer.client.events[start:]:
            if ev.get("type") == "transcript":
                by_turn[ev.get("turn")] = ev.get("text", "")
        heard = " ".join(by_turn.values())
        item.steps.append({"said": rec.text, "transcript": heard, "scored": False, "right": None, "v2v_ms": None, "error": ""})
    except Exception as exc:  # noqa: BLE001
        item.error = reason_of(exc)
    finally:
        await peer.close()
    return item


# ---------- scoring ----------


def wer_of(pairs: Sequence[tuple[str, str]]) -> float | None:
    rate = wer(pairs)[0]
    return None if rate is None else round(rate, 4)


def summarise(items: list[ItemResult], latency: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"groups": {}}
    for group in [*GROUPS, "recordings"]:
        mine = [i for i in items if i.group == group]
        if not mine:
            continue
        qs = [i for i in mine if i.kind == "question"]
        steps = [s for i in mine if i.kind == "conversation" for s in i.steps if s["scored"]]
        right = lambda rows: sum(bool(r["right"]) for r in rows)  # noqa: E731
        q_rows = [i.steps[0] if i.steps else {"right": False} for i in qs]
        entry: dict[str, Any] = {
            "questions": f"{right(q_rows)}/{len(q_rows)}" if qs else "-",
            "questions_pct": round(100 * right(q_rows) / len(q_rows), 1) if qs else None,
            "tune": _frac([r for i, r in zip(qs, q_rows, strict=True) if i.split == "tune"]),
            "held_out": _frac([r for i, r in zip(qs, q_rows, strict=True) if i.split == "held-out"]),
            "conversation_steps": _frac(steps),
            "errors": sum(1 for i in mine if i.error) + sum(1 for i in mine for s in i.steps if s.get("error")),
        }
        # A recording's reference with the known mistakes of its transcript fixed.
        pairs = [
            (fixed_reference(i.name, s["said"]) if i.kind == "recording" else s["said"], s.get("transcript", ""))
            for i in mine
            for s in i.steps
        ]
        entry["wer"] = wer_of(pairs)
        out["groups"][group] = entry
    all_q = [i.steps[0] if i.steps else {"right": False} for i in items if i.kind == "question"]
    out["questions_all"] = _frac(all_q)
    out["held_out_groups"] = _frac(
        [i.steps[0] if i.steps else {"right": False} for i in items if i.kind == "question" and i.group != "espeak"]
    )
    out["synthetic_wer"] = wer_of([(s["said"], s.get("transcript", "")) for i in items if i.kind != "recording" for s in i.steps])
    out["v2v_p50"], out["v2v_p95"] = (None if (v := pct(latency, q)) is None else round(v) for q in (50, 95))
    out["v2v_n"] = len(latency)
    return out


def _frac(rows: Sequence[dict[str, Any]]) -> str:
    return f"{sum(bool(r['right']) for r in rows)}/{len(rows)}" if rows else "-"


# ---------- the part ----------


async def _bounded(jobs: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with sem:
            return await job()

    return await asyncio.gather(*(one(j) for j in jobs))


async def run_config(ctx: Ctx, name: str = "defaults") -> dict[str, Any]:
    quick = ctx.opts.quick
    questions = [(i, q) for i, q in enumerate(QUESTIONS) if not quick or i % 4 == 0]
    convs = [(i, c) for i, c in enumerate(CONVERSATIONS) if not quick or i in (4, 6)]
    recs = recordings()
    recs = recs[::3] if quick else recs
    server = await ctx.server("local", name="quality")
    url = server.url
    items: list[ItemResult] = []
    latency: list[float] = []
    started = time.monotonic()
    try:
        await ctx.warm(server, timeout=TURN_TIMEOUT_S)
        # 1. latency: the first LATENCY_ITEMS questions of each group, one session at a time
        sequential = [(g, i, q) for g in GROUPS for i, q in questions[:LATENCY_ITEMS]]
        for g, i, q in sequential:
            result = await ask_question(url, q, g, i)
            if result is not None:
                items.append(result)
                v2v = result.steps[0]["v2v_ms"] if result.steps else None
                if v2v is not None:
                    latency.append(v2v)
        ctx.progress(f"quality/{name}: latency pass done ({len(latency)} turns)")
        # 2. everything else, CONCURRENCY sessions at a time
        jobs: list[Any] = []
        for g in GROUPS:
            jobs += [lambda q=q, g=g, i=i: ask_question(url, q, g, i) for i, q in questions[LATENCY_ITEMS:]]
            jobs += [lambda c=c, g=g, i=i: run_conversation(url, c, g, i) for i, c in convs]
        jobs += [lambda r=r: speak_recording(url, r) for r in recs]
        done = await _bounded(jobs, CONCURRENCY)
        items += [d for d in done if d is not None]
    finally:
        ctx.release(server)
    summary = summarise(items, latency)
    summary["duration_s"] = round(time.monotonic() - started, 1)
    ctx.progress(f"quality/{name}: {summary['questions_all']} right, WER {summary['synthetic_wer']}, v2v p50 {summary['v2v_p50']}")
    for i in items:
        for s in i.steps:
            if s["scored"] and not s["right"]:
                ctx.progress(f"  {name} WRONG [{i.group} {i.voice}] {s['said']!r} heard {s['transcript']!r} -> {s['reply']!r}")
    return {"summary": summary, "items": [i.__dict__ for i in items]}


def table(results: dict[str, Any]) -> str:
    head = ["config", *GROUPS, "all questions", "held-out groups", "conv steps", "WER synth", "WER rec", "v2v p50/p95 ms"]
    lines = ["  ".join(head)]
    for name, r in results.items():
        if "summary" not in r:
            lines.append(f"{name}  FAILED {r.get('error', '')}")
            continue
        s = r["summary"]
        g = s["groups"]
        conv = "+".join(g[x]["conversation_steps"] for x in GROUPS if x in g)
        cells = [name]
        cells += [f"{g[x]['questions']} ({g[x]['held_out']} h/o)" if x in g else "-" for x in GROUPS]
        cells += [s["questions_all"], s["held_out_groups"], conv, str(s["synthetic_wer"])]
        cells += [str(g.get("recordings", {}).get("wer")), f"{s['v2v_p50']}/{s['v2v_p95']} (n={s['v2v_n']})"]
        lines.append("  ".join(cells))
    return (
        "Answers right through the product (questions per voice group, held-out half in brackets), transcript WER, voice-to-voice\n"
        + "\n".join(lines)
    )


async def run_quality(ctx: Ctx) -> dict[str, Any]:
    if "local" not in ctx.opts.engines:
        ctx.emit("Answer quality: needs the embedded engines (--engines local or both); the stand-in's answers are fixed")
        return {"skipped": "stand-in engines only"}
    try:
        r = await run_config(ctx)
    except Exception as exc:  # noqa: BLE001
        ctx.emit(f"Answer quality: unavailable: {reason_of(exc)}")
        return {"error": reason_of(exc)}
    ctx.emit(table({"defaults": r}))
    s = r["summary"]
    right, n = (int(x) for x in s["questions_all"].split("/")) if "/" in s["questions_all"] else (0, 0)
    ctx.figure("quality/answers_right_pct", 100 * right / n if n else None)
    ctx.figure("quality/wer_synthetic", s["synthetic_wer"])
    ctx.figure("quality/wer_recordings", s["groups"].get("recordings", {}).get("wer"))
    ctx.figure("quality/v2v_p50_ms", s["v2v_p50"])
    return r
