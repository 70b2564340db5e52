"""`python -m bench languages`: other languages through the whole product, embedded engines.

One server with `LANGUAGES=en,zh,pt` (Whisper base) and one with the English default. Each
question of bench/eval_set.py's QUESTIONS_BY_LANGUAGE is asked by a fresh session in an espeak-ng
voice of its language (synthetic: the only Mandarin and Portuguese voices installed here), and a
sample of the English questions in the espeak voices is asked of both servers. Per language:
character (Chinese) or word error rate of the product's transcript, the language it was heard
as, answers right (tune and held-out halves), voice-to-voice p50; and English's voice-to-voice
with LANGUAGES=en,zh,pt against LANGUAGES=en in the same run. Then one session switches
English -> Mandarin -> English -> Portuguese, each reply checked for its language.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, QUESTIONS_BY_LANGUAGE, is_right
from bench.quality import TURN_TIMEOUT_S, _clip
from bench.stats import pct
from kit.eval_voices import SEEN_VOICES, level, render
from kit.peers import Peer
from kit.speech import speak
from kit.wer import cer, wer
from pipeline.language import script_language

VOICES = {"zh": "cmn", "pt": "pt-br"}
ENGLISH_ITEMS = 8
LANGUAGES = "en,zh,pt"


def _spoken(text: str, language: str, index: int) -> np.ndarray:
    core = level(speak(text, voice=VOICES[language])) if language in VOICES else render(text, SEEN_VOICES[index % len(SEEN_VOICES)])
    pad = np.zeros(4800, np.int16)
    return np.concatenate([pad, core, pad])


async def _ask(url: str, text: str, language: str, index: int, peer: Peer | None = None) -> dict[str, Any]:
    own = peer is None
    peer = peer or Peer(url)
    try:
        if own:
            await peer.connect()
        turn = await peer.ask(_clip(text, _spoken(text, language, index)), timeout=TURN_TIMEOUT_S)
        return {"said": text, "language": language, "heard": turn.transcript, "heard_as": turn.language, "reply": turn.reply,
                "v2v_ms": turn.client_ms()["voice_to_voice"], "error": turn.error}  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one broken item is a wrong answer, not a broken run
        return {"said": text, "language": language, "heard": "", "heard_as": "", "reply": "", "v2v_ms": None, "error": reason_of(exc)}
    finally:
        if own:
            await peer.close()


def _summary(rows: list[dict[str, Any]], language: str, keywords: dict[str, tuple[str, ...]], splits: dict[str, str]) -> dict[str, Any]:
    pairs = [(r["said"], r["heard"]) for r in rows]
    errors = (cer if language == "zh" else wer)(pairs)[0]
    right = {s: [is_right(r["reply"], keywords[r["said"]]) for r in rows if splits[r["said"]] == s] for s in ("tune", "held-out")}
    in_language = [script_language(r["reply"], (language, "en")) == language or language == "pt" for r in rows if r["reply"]]
    return {
        "n": len(rows),
        "cer" if language == "zh" else "wer": None if errors is None else round(errors, 3),
        "heard_as_right": f"{sum(r['heard_as'] == language for r in rows)}/{len(rows)}",
        "right_tune": f"{sum(right['tune'])}/{len(right['tune'])}",
        "right_held_out": f"{sum(right['held-out'])}/{len(right['held-out'])}",
        "replies_in_script": f"{sum(in_language)}/{len(in_language)}",
        "v2v_p50": pct([r["v2v_ms"] for r in rows if r["v2v_ms"] is not None], 50),
    }


async def run_languages(ctx: Ctx) -> dict[str, Any]:
    if "local" not in ctx.opts.engines:
        ctx.emit("Languages: needs the embedded engines (--engines local or both)")
        return {"skipped": "stand-in engines only"}
    english = QUESTIONS[: ENGLISH_ITEMS // 2 if ctx.opts.quick else ENGLISH_ITEMS]
    out: dict[str, Any] = {"rows": {}, "summary": {}}
    try:
        multi = await ctx.server("local", ["--languages", LANGUAGES], name="languages")
        await ctx.warm(multi, timeout=TURN_TIMEOUT_S)
        for code, questions in QUESTIONS_BY_LANGUAGE.items():
            rows = [await _ask(multi.url, q.text, code, i) for i, q in enumerate(questions[:: 2 if ctx.opts.quick else 1])]
            out["rows"][code] = rows
            out["summary"][code] = _summary(rows, code, {q.text: q.keywords for q in questions}, {q.text: q.split for q in questions})
            ctx.progress(f"languages/{code}: {out['summary'][code]}")
        rows = [await _ask(multi.url, q.text, "en", i) for i, q in enumerate(english)]
        out["rows"]["en"] = rows
        out["summary"]["en"] = _summary(rows, "en", {q.text: q.keywords for q in english}, {q.text: q.split for q in english})
        peer = Peer(multi.url)
        await peer.connect()
        switch = [(QUESTIONS[0].text, "en"), ("中国的首都是哪里？", "zh"), (QUESTIONS[2].text, "en"), ("Qual é a capital do Brasil?", "pt")]
        steps = [await _ask(multi.url, text, code, i, peer) for i, (text, code) in enumerate(switch)]
        await peer.close()
        out["switch"] = [(s["language"], s["heard_as"], s["reply"][:40]) for s in steps]
        ctx.release(multi)
        plain = await ctx.server("local", name="languages-en")
        await ctx.warm(plain, timeout=TURN_TIMEOUT_S)
        rows = [await _ask(plain.url, q.text, "en", i) for i, q in enumerate(english)]
        ctx.release(plain)
    except Exception as exc:  # noqa: BLE001
        ctx.emit(f"Languages: unavailable: {reason_of(exc)}")
        return out | {"error": reason_of(exc)}
    out["summary"]["en (LANGUAGES=en)"] = _summary(rows, "en", {q.text: q.keywords for q in english}, {q.text: q.split for q in english})
    lines = [f"  {code:20} {s}" for code, s in out["summary"].items()]
    ratio = None
    if out["summary"]["en"]["v2v_p50"] and out["summary"]["en (LANGUAGES=en)"]["v2v_p50"]:
        ratio = out["summary"]["en"]["v2v_p50"] / out["summary"]["en (LANGUAGES=en)"]["v2v_p50"]
    ctx.emit(
        f"Languages through the product, embedded (LANGUAGES={LANGUAGES}; espeak-ng voices)\n"
        + "\n".join(lines)
        + f"\n  English voice-to-voice, LANGUAGES={LANGUAGES} / en: {ratio and round(ratio, 2)}"
        + f"\n  switching conversation (spoken, heard as, reply): {out['switch']}"
    )
    ctx.figure("languages/zh_cer", out["summary"]["zh"].get("cer"))
    ctx.figure("languages/en_v2v_ratio", ratio)
    return out
