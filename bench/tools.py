"""`python -m bench tools`: spoken questions a tool answers (products, the date and time), with tools off and on.

What it measures and how each figure is defined: bench/README.md, "tools"."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, Question, is_right
from bench.quality import ask_question, clip_of
from bench.stats import pct
from kit.eval_voices import spoken
from kit.peers import Peer

PRODUCTS = [(47, 23), (38, 56), (64, 19), (72, 45), (29, 83), (91, 17), (56, 34), (88, 27), (43, 66), (75, 39)]
PLAIN = [q for q in QUESTIONS if q.topic == "fact"][:6]


def clock_questions(now: datetime) -> list[tuple[str, list[tuple[str, ...]]]]:
    """(question, keyword groups): every group needs one of its words in the reply."""
    month, weekday = (now.strftime("%B").lower(),), (now.strftime("%A").lower(),)
    day = tuple(f"{now.day}{end}" for end in ("", "st", "nd", "rd", "th"))
    hour = tuple({f"{h % 24}" for h in (now.hour, now.hour + 1)} | {f"{h % 12 or 12}" for h in (now.hour, now.hour + 1)})
    tomorrow, yesterday = (((now + timedelta(days=d)).strftime("%A").lower(),) for d in (1, -1))
    return [
        ("What day of the week is it today?", [weekday]),
        ("What is today's date?", [month, day]),
        ("What month is it?", [month]),
        ("What year is it?", [(str(now.year),)]),
        ("What time is it?", [hour]),
        ("What day will it be tomorrow?", [tomorrow]),
        ("What's the date today?", [month, day]),
        ("Which day of the month is it?", [day]),
        ("Can you tell me the time, please?", [hour]),
        ("What day was it yesterday?", [yesterday]),
    ]


async def _ask_all(ctx: Ctx, url: str, items: list[tuple[str, str, list[tuple[str, ...]]]]) -> list[dict[str, Any]]:
    rows = []
    for index, (kind, text, groups) in enumerate(items):
        for group in ("espeak", "flite" if index % 2 else "festival"):
            result = await ask_question(url, Question(text, groups[0], "fact"), group, index)
            if result is None:
                continue
            step = result.steps[0] if result.steps else {"reply": "", "transcript": "", "v2v_ms": None}
            right = bool(step["reply"]) and all(is_right(step["reply"], g) for g in groups)
            rows.append({"kind": kind, "group": group, "said": text, **step, "right": right, "error": result.error})
            if not right:
                ctx.progress(f"  tools WRONG [{group}] {text!r} heard {step['transcript']!r} -> {step['reply']!r}")
    return rows


def _summary(rows: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [r for r in rows if r["kind"] == kind]
    seen, held = ([r for r in mine if (r["group"] == "espeak") == seen] for seen in (True, False))
    right = {f"{name}": f"{sum(r['right'] for r in part)}/{len(part)}" for name, part in (("seen", seen), ("held_out", held))}
    return right | {"right": sum(r["right"] for r in mine), "n": len(mine), "v2v_p50": pct([r["v2v_ms"] for r in mine], 50)}


SET_TIMER = "Set a timer for five seconds."
OVER_TIMER = "What is the capital of France, and how many people live there these days?"


async def _timer_trial(url: str, group: str, index: int, speak_over: bool) -> dict[str, Any] | None:
    """A timer set by voice; the user silent when it is due, or speaking across its due time."""
    made, over = spoken(SET_TIMER, group, index), spoken(OVER_TIMER, group, index)
    if made is None or over is None:
        return None
    peer = Peer(url)
    await peer.connect()
    row: dict[str, Any] = {"group": group, "speaking_at_due": speak_over}
    try:
        asked = await peer.ask(clip_of(SET_TIMER, made[1]), timeout=60)
        row |= {"transcript": asked.transcript, "reply": asked.reply}
        t_set, timer = await peer.client.wait_event("timer", timeout=5, after=asked.asked, status="set")
        due_at = t_set + timer["seconds"]  # the client's clock: the set event is out as soon as it is set
        row["seconds"] = timer["seconds"]
        floor_free = due_at
        if speak_over:  # from 1.5 s before it is due, for about 4 s
            await asyncio.sleep(max(0.0, due_at - 1.5 - time.monotonic()))
            question = await peer.ask(clip_of(OVER_TIMER, over[1]), timeout=60)
            assert question.speech_start is not None and question.speech_end is not None and question.t_reply is not None
            row |= {
                "speech_ms": [round((t - due_at) * 1000) for t in (question.speech_start, question.speech_end)],
                "answer": question.reply,
            }
            floor_free = question.t_reply  # the user's question answered, and played
        t_due, _ = await peer.client.wait_event("timer", timeout=60, after=t_set, status="due")
        t_said, said = await _unasked_reply(peer, t_due)
        heard = peer.audible(max(t_due, floor_free))
        row |= {"said": said["text"], "due_ms": round((t_due - due_at) * 1000)}
        row["first_audio_after_due_ms"] = round((heard[0] - due_at) * 1000) if heard and heard[0] < t_said else None
        if speak_over:
            row["after_answer_ms"] = round((heard[0] - floor_free) * 1000) if heard else None
    except Exception as exc:  # noqa: BLE001
        row["error"] = reason_of(exc)
    finally:
        await peer.close()
    return row


async def _unasked_reply(peer: Peer, after: float, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
    """The first reply after `after` in a turn with no transcript: one nobody asked for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = {ev.get("turn") for _, ev in peer.client.events if ev.get("type") == "transcript"}
        for t, ev in peer.client.events:
            if t >= after and ev.get("type") == "reply" and ev.get("turn") not in asked:
                return t, ev
        await asyncio.sleep(0.05)
    raise TimeoutError("nothing was said when the timer was due")


async def _timers(ctx: Ctx, url: str) -> list[dict[str, Any]]:
    trials = [("espeak", False), ("flite", False), ("festival", False), ("espeak", True), ("flite", True)]
    rows = []
    for index, (group, over) in enumerate(trials[:: 2 if ctx.opts.quick else 1]):
        row = await _timer_trial(url, group, index, over)
        if row is not None:
            rows.append(row)
            ctx.progress(f"  timer [{group}{', spoken over' if over else ''}] {row}")
    return rows


async def run_tools(ctx: Ctx) -> dict[str, Any]:
    if "local" not in ctx.opts.engines:
        ctx.emit("Tools: needs the embedded engines (--engines local or both)")
        return {"skipped": "stand-in engines only"}
    now = datetime.now(UTC)
    items = [("product", f"What is {a} times {b}?", [(str(a * b),)]) for a, b in PRODUCTS]
    items += [("clock", text, groups) for text, groups in clock_questions(now)]
    if ctx.opts.quick:
        items = items[::5]
    plain = [("plain", q.text, [q.keywords]) for q in PLAIN]
    out: dict[str, Any] = {"asked_at": now.isoformat()}
    for name, flags in (("without tools", ["--tools", ""]), ("with tools", ["--tools", "clock,arithmetic,timers", "--timezone", "UTC"])):
        server = await ctx.server("local", flags, name=f"tools-{name.split()[0]}")
        try:
            await ctx.warm(server, timeout=60.0)
            rows = await _ask_all(ctx, server.url, items + plain)
            if name == "with tools":
                out["timers"] = await _timers(ctx, server.url)
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": reason_of(exc)}
            continue
        finally:
            ctx.release(server)
        out[name] = {kind: _summary(rows, kind) for kind in ("product", "clock", "plain")} | {"rows": rows}
    lines = ["config  products right (seen / held-out)  clock right (seen / held-out)  v2v p50 ms: product / clock / plain"]
    for name, r in ((name, out.get(name, {})) for name in ("without tools", "with tools")):
        right = [f"{r[k]['seen']} / {r[k]['held_out']}" for k in ("product", "clock")] if "product" in r else [f"FAILED {r.get('error')}"]
        lines.append("  ".join([name, *right, " / ".join(str(r[k]["v2v_p50"]) for k in ("product", "clock", "plain") if k in r)]))
    for row in out.get("timers", []):
        late = row.get("first_audio_after_due_ms")
        waited = (
            f", user spoke {row['speech_ms'][0]}..{row['speech_ms'][1]} ms around it, said {row.get('after_answer_ms')} ms after their answer"
            if row["speaking_at_due"]
            else ""
        )
        lines.append(
            f"timer [{row['group']}] heard {row.get('transcript')!r}: first audio {late} ms after due{waited} {row.get('error', '')}"
        )
    ctx.emit("Tools through the product, embedded, one run\n" + "\n".join(lines))
    on = out.get("with tools", {})
    for name, r in (("on", on), ("off", out.get("without tools", {}))):
        for kind in ("product", "clock", "plain"):
            if kind in r and r[kind]["n"]:
                ctx.figure(f"tools/{kind}_right_pct_{name}", 100 * r[kind]["right"] / r[kind]["n"])
    silent = [
        r["first_audio_after_due_ms"]
        for r in out.get("timers", [])
        if not r["speaking_at_due"] and r.get("first_audio_after_due_ms") is not None
    ]
    if silent:
        ctx.figure("tools/timer_first_audio_after_due_ms_max", max(silent))
    if "plain" in on and on["plain"]["v2v_p50"] and on["product"]["v2v_p50"]:
        ctx.figure("tools/tool_turn_over_plain_v2v", on["product"]["v2v_p50"] / on["plain"]["v2v_p50"])
    return out
