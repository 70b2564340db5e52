"""`python -m bench languages`: Mandarin and Portuguese through the whole product, real speakers
and questions in Kokoro's voices, against the English default in the same run (bench/README.md says what
each figure is)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.context import Ctx, reason_of
from bench.eval_set import QUESTIONS, QUESTIONS_BY_LANGUAGE, is_right
from bench.quality import TURN_TIMEOUT_S, clip_of
from bench.stats import pct
from kit.eval_voices import (
    KOKORO_HELD_OUT_VOICES,
    KOKORO_SEEN_VOICES,
    SEEN_VOICES,
    Recording,
    mandarin_recordings,
    portuguese_recordings,
    render,
)
from kit.peers import Peer
from kit.wer import cer, wer
from pipeline.language import script_language

ENGLISH_ITEMS = 8
LANGUAGES = "en,zh,pt"


def _spoken(text: str, language: str, index: int, split: str = "tune") -> np.ndarray:
    if language == "en":
        core = render(text, SEEN_VOICES[index % len(SEEN_VOICES)])
    else:  # Kokoro's voices other than the reply's; held-out questions in held-out voices
        voices = KOKORO_SEEN_VOICES if split == "tune" else KOKORO_HELD_OUT_VOICES
        core = render(text, voices[index // 2 % len(voices)], language)
    pad = np.zeros(4800, np.int16)
    return np.concatenate([pad, core, pad])


async def _ask(
    url: str, text: str, language: str, index: int, peer: Peer | None = None, samples: np.ndarray | None = None, split: str = "tune"
) -> dict[str, Any]:
    own = peer is None
    peer = peer or Peer(url)
    try:
        if own:
            await peer.connect()
        if samples is None:
            samples = _spoken(text, language, index, split)
        turn = await peer.ask(clip_of(text, samples), timeout=TURN_TIMEOUT_S)
        return {"said": text, "language": language, "heard": turn.transcript, "heard_as": turn.language, "reply": turn.reply,
                "v2v_ms": turn.client_ms()["voice_to_voice"], "error": turn.error}  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one broken item is a wrong answer, not a broken run
        return {"said": text, "language": language, "heard": "", "heard_as": "", "reply": "", "v2v_ms": None, "error": reason_of(exc)}
    finally:
        if own:
            await peer.close()


def _errors(rows: list[dict[str, Any]], language: str) -> float | None:
    errors = (cer if language == "zh" else wer)([(r["said"], r["heard"]) for r in rows])[0]
    return None if errors is None else round(errors, 3)


def _heard(rows: list[dict[str, Any]], language: str) -> dict[str, Any]:
    """Real recordings (statements, not questions): what was heard, not what was answered."""
    return {
        "n": len(rows),
        "cer" if language == "zh" else "wer": _errors(rows, language),
        "heard_as_right": f"{sum(r['heard_as'] == language for r in rows)}/{len(rows)}",
        "v2v_p50": pct([r["v2v_ms"] for r in rows if r["v2v_ms"] is not None], 50),
    }


def _summary(rows: list[dict[str, Any]], language: str, keywords: dict[str, tuple[str, ...]], splits: dict[str, str]) -> dict[str, Any]:
    right = {s: [is_right(r["reply"], keywords[r["said"]]) for r in rows if splits[r["said"]] == s] for s in ("tune", "held-out")}
    in_language = [script_language(r["reply"], (language, "en")) == language or language == "pt" for r in rows if r["reply"]]
    return {
        "n": len(rows),
        "cer" if language == "zh" else "wer": _errors(rows, language),
        "heard_as_right": f"{sum(r['heard_as'] == language for r in rows)}/{len(rows)}",
        "right_tune": f"{sum(right['tune'])}/{len(right['tune'])}",
        "right_held_out": f"{sum(right['held-out'])}/{len(right['held-out'])}",
        "replies_in_script": f"{sum(in_language)}/{len(in_language)}",
        "v2v_p50": pct([r["v2v_ms"] for r in rows if r["v2v_ms"] is not None], 50),
    }


# espeak-ng's voice: a real speaker's pause inside a question would be answered at once by a
# stand-in that hears the whole question in any part of it.
STANDIN_QUESTION = "中国的首都是哪里？"
STANDIN_REPLY = "中国的首都是北京。北京是一座历史悠久的城市。你去过北京吗？"  # streamed a character at a time


async def run_standin(ctx: Ctx) -> dict[str, Any]:
    await ctx.standin.reset(stt_text=STANDIN_QUESTION, llm_reply=STANDIN_REPLY, tts_ms_per_char=30.0)
    server = await ctx.server("standin", ["--languages", "en,zh"], name="languages-standin")
    try:
        await ctx.warm(server)
        rows = [await _ask(server.url, STANDIN_QUESTION, "zh", i) for i in range(3 if ctx.opts.quick else 10)]
    finally:
        ctx.release(server)
    out = _heard(rows, "zh")
    ctx.emit(f"Languages, stand-in engines (LANGUAGES=en,zh), a Mandarin question: {out}")
    ctx.figure("languages/standin_zh_v2v_p50_ms", out["v2v_p50"])
    return out


async def run_languages(ctx: Ctx) -> dict[str, Any]:
    standin = await run_standin(ctx) if "standin" in ctx.opts.engines else None
    if "local" not in ctx.opts.engines:
        return {"standin": standin}
    english = QUESTIONS[: ENGLISH_ITEMS // 2 if ctx.opts.quick else ENGLISH_ITEMS]
    out: dict[str, Any] = {"rows": {}, "summary": {}, "standin": standin}
    try:
        multi = await ctx.server("local", ["--languages", LANGUAGES], name="languages")
        await ctx.warm(multi, timeout=TURN_TIMEOUT_S)
        for code, questions in QUESTIONS_BY_LANGUAGE.items():
            rows = [await _ask(multi.url, q.text, code, i, split=q.split) for i, q in enumerate(questions[:: 2 if ctx.opts.quick else 1])]
            out["rows"][code] = rows
            out["summary"][code] = _summary(rows, code, {q.text: q.keywords for q in questions}, {q.text: q.split for q in questions})
            ctx.progress(f"languages/{code}: {out['summary'][code]}")
        real: dict[str, list[Recording]] = {"zh": mandarin_recordings(), "pt": portuguese_recordings()}
        for code, recordings in real.items():
            recordings = recordings[:: 2 if ctx.opts.quick else 1]
            rows = [await _ask(multi.url, r.text, code, i, samples=r.samples) for i, r in enumerate(recordings)]
            out["rows"][f"{code} real"] = rows
            out["summary"][f"{code} real"] = _heard(rows, code)
            ctx.progress(f"languages/{code} real: {out['summary'][f'{code} real']}")
        rows = [await _ask(multi.url, q.text, "en", i) for i, q in enumerate(english)]
        out["rows"]["en"] = rows
        out["summary"]["en"] = _summary(rows, "en", {q.text: q.keywords for q in english}, {q.text: q.split for q in english})
        peer = Peer(multi.url)
        await peer.connect()
        # Real speakers for the other languages.
        zh, pt = real["zh"][0], real["pt"][2]
        switch = [
            (QUESTIONS[0].text, "en", None),
            (zh.text, "zh", zh.samples),
            (QUESTIONS[2].text, "en", None),
            (pt.text, "pt", pt.samples),
        ]
        steps = [await _ask(multi.url, text, code, i, peer, samples) for i, (text, code, samples) in enumerate(switch)]
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
        f"Languages through the product, embedded (LANGUAGES={LANGUAGES}; questions in Kokoro voices)\n"
        + "\n".join(lines)
        + f"\n  English voice-to-voice, LANGUAGES={LANGUAGES} / en: {ratio and round(ratio, 2)}"
        + f"\n  switching conversation (spoken, heard as, reply): {out['switch']}"
    )
    ctx.figure("languages/zh_cer", out["summary"]["zh"].get("cer"))
    ctx.figure("languages/zh_real_cer", out["summary"]["zh real"].get("cer"))
    ctx.figure("languages/pt_real_wer", out["summary"]["pt real"].get("wer"))
    ctx.figure("languages/en_v2v_ratio", ratio)
    return out
