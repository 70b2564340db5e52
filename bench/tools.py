"""`python -m bench tools`: spoken questions a tool answers (products, the date and time), with tools off and on.

What it measures and how each figure is defined: bench/README.md, "tools"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, Question, is_right
from bench.quality import ask_question
from bench.stats import pct

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
    for name, flags in (("without tools", ["--tools", ""]), ("with tools", ["--tools", "clock,arithmetic", "--timezone", "UTC"])):
        server = await ctx.server("local", flags, name=f"tools-{name.split()[0]}")
        try:
            await ctx.warm(server, timeout=60.0)
            rows = await _ask_all(ctx, server.url, items + plain)
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
    ctx.emit("Tools through the product, embedded, one run\n" + "\n".join(lines))
    on = out.get("with tools", {})
    for name, r in (("on", on), ("off", out.get("without tools", {}))):
        for kind in ("product", "clock", "plain"):
            if kind in r and r[kind]["n"]:
                ctx.figure(f"tools/{kind}_right_pct_{name}", 100 * r[kind]["right"] / r[kind]["n"])
    if "plain" in on and on["plain"]["v2v_p50"] and on["product"]["v2v_p50"]:
        ctx.figure("tools/tool_turn_over_plain_v2v", on["product"]["v2v_p50"] / on["plain"]["v2v_p50"])
    return out
