"""Answer quality of the embedded engines: STT word error rate, LLM answers right, per-stage latency.

    python -m bench.answers [--presets default,tiny,quality] [--stt tiny.en,base] [--parts wer,llm,e2e]

Ten varied questions, spoken by espeak-ng (not the product's piper voice):

- wer: each STT model transcribes the ten clips directly (LocalSTT); word error rate after
  normalisation (lower case, no punctuation, digits spelt out on both sides).
- llm: each LLM preset answers the ten questions as text (LocalLLM.stream, the product's
  system prompt, temperature 0, a fresh conversation each); an answer is right if it
  contains one of the question's keywords. Tokens/s and first-token latency per reply.
  A preset whose model packages are not installed is reported as unavailable.
- e2e: the real app in this process on 127.0.0.1 with the default engines (temperature 0),
  one real aiortc peer asks the ten questions in one session, one after another; the
  server's `metrics` event per turn and the client's voice-to-voice (end of the client's
  speech -> first audible reply frame received).

Prints tables and writes bench/results/answers-<timestamp>.json. Run it on loopback only:
    unshare -n bash -c 'ip link set lo up && .venv/bin/python -m bench.answers'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kit.speech import concat, silence, speak, voiced_bounds  # noqa: E402
from pipeline.conversation import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from pipeline.engines.base import EngineError  # noqa: E402
from settings import Settings, load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"

# (question, expected keywords: the answer is right if it contains any of them as a word)
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What is two plus two?", ("four", "4")),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("At what temperature does water boil?", ("100", "hundred", "212")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("How many continents are there?", ("seven", "7")),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the chemical symbol for gold?", ("au",)),
]

AUDIBLE_RMS = 500.0  # a received frame louder than this is reply audio (silence decodes to ~0)
LEAD_S, TAIL_S = 0.3, 0.2  # silence around each spoken question
STAGES = [
    ("end of speech detected", "endpoint_ms"),
    ("STT", "stt_ms"),
    ("LLM first token", "llm_first_token_ms"),
    ("first sentence ready", "first_sentence_ms"),
    ("TTS first audio", "tts_first_audio_ms"),
    ("voice-to-voice (server)", "voice_to_voice_ms"),
    ("voice-to-voice (client, heard)", "client_v2v_ms"),
]


# ---------- text normalisation and scoring ----------

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 <= n < 10**9 in words: 212 -> 'two hundred twelve'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + " " + name + ("" if n % size == 0 else " " + number_words(n % size))
    raise ValueError(n)


def normalise(text: str) -> list[str]:
    """Words for WER: lower case, punctuation dropped, numbers spelt out, British spellings folded."""
    text = text.lower().replace("colour", "color")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = text.replace("+", " plus ").replace("=", " equals ")
    text = re.sub(r"[-–—/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text).replace("'", "")
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} " if len(m.group()) <= 9 else m.group(), text)
    return text.split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float, int, int]:
    """(corpus WER, word errors, reference words)."""
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalise(ref), normalise(hyp)
        errors += edit_distance(r, h)
        words += len(r)
    return (errors / words if words else 0.0), errors, words


def is_right(answer: str, keywords: Sequence[str]) -> bool:
    text = answer.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(k)}(?![a-z0-9])", text) for k in keywords)


# ---------- output ----------


def med(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def worst(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return max(v) if v else None


def fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float | int) and not isinstance(x, bool):
        return f"{x:.{digits}f}"
    return str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str) -> str:
    cells = [list(headers)] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]]
    return "\n".join(line.rstrip() for line in lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def settings_for(**overrides: Any) -> Settings:
    """Defaults only (never the developer's environment or .env), plus overrides."""
    settings = load_settings([], env={}, dotenv_path=None)
    for key, value in overrides.items():
        setattr(settings, key, value)
    settings.validate()
    return settings


def clip16k(question: str):
    speech = speak(question)
    return speech, concat(silence(LEAD_S), speech, silence(TAIL_S))


# ---------- part 1: STT word error rate ----------


async def run_wer(models: Sequence[str]) -> dict[str, Any]:
    from pipeline.engines.local_stt import LocalSTT

    out: dict[str, Any] = {}
    for model in models:
        stt = LocalSTT.from_settings(settings_for(stt_model=model))
        entry: dict[str, Any] = {"model": model}
        try:
            t0 = time.monotonic()
            await asyncio.wait_for(stt.start(), 300)
            entry["load_s"] = round(time.monotonic() - t0, 2)
            rows = []
            for question, _ in QUESTIONS:
                _, clip = clip16k(question)
                t0 = time.monotonic()
                text = await asyncio.wait_for(stt.transcribe(clip.tobytes(), 16000), 60)
                ms = (time.monotonic() - t0) * 1000
                errors = edit_distance(normalise(question), normalise(text))
                rows.append(
                    {"question": question, "transcript": text, "errors": errors, "words": len(normalise(question)), "ms": round(ms, 1)}
                )
                say(f"  stt {model}: {question!r} -> {text!r} ({errors} errors, {ms:.0f} ms)")
            rate, errors, words = wer([r["question"] for r in rows], [r["transcript"] for r in rows])
            entry.update(
                wer=round(rate, 4), errors=errors, words=words, stt_ms_median=round(med([r["ms"] for r in rows]) or 0, 1), rows=rows
            )
        except (EngineError, TimeoutError) as exc:
            entry["unavailable"] = str(exc) or type(exc).__name__
            say(f"  stt {model}: unavailable ({entry['unavailable']})")
        finally:
            await stt.close()
        out[model] = entry
    return out


def print_wer(result: dict[str, Any]) -> None:
    rows = []
    for model, e in result.items():
        if "unavailable" in e:
            rows.append([model, f"unavailable ({e['unavailable']})", "", "", "", ""])
        else:
            wrong = sum(1 for r in e["rows"] if r["errors"])
            rows.append(
                [
                    model,
                    f"{100 * e['wer']:.1f} %",
                    f"{e['errors']}/{e['words']}",
                    f"{wrong}/10",
                    fmt(e["stt_ms_median"]),
                    fmt(e["load_s"], 1),
                ]
            )
    say(
        table(
            ["STT model", "WER", "word errors", "questions with errors", "transcribe ms (median)", "load s"],
            rows,
            "STT word error rate (10 espeak-ng questions)",
        )
    )
    for model, e in result.items():
        for r in e.get("rows", []):
            if r["errors"]:
                say(f"  {model}: {r['question']!r} heard as {r['transcript']!r}")


# ---------- part 2: answers right per LLM preset ----------


async def ask_llm(llm: Any, question: str, timeout: float) -> dict[str, Any]:
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
    t0 = time.monotonic()
    first: float | None = None
    parts: list[str] = []

    async def consume() -> None:
        nonlocal first
        async for delta in llm.stream(messages):
            if first is None:
                first = time.monotonic() - t0
            parts.append(delta)

    await asyncio.wait_for(consume(), timeout)
    timings = dict(llm.last_timings or {})
    return {
        "answer": "".join(parts).strip(),
        "first_token_ms": round(first * 1000, 1) if first is not None else None,
        "total_ms": round((time.monotonic() - t0) * 1000, 1),
        "tokens": timings.get("predicted_n"),
        "tokens_per_s": round(float(timings["predicted_per_second"]), 2) if timings.get("predicted_per_second") else None,
    }


async def run_llm(presets: Sequence[str]) -> dict[str, Any]:
    from pipeline.engines.local_llm import LocalLLM

    out: dict[str, Any] = {}
    for preset in presets:
        llm = LocalLLM.from_settings(settings_for(llm_model=preset, llm_temperature=0.0))
        entry: dict[str, Any] = {"preset": preset}
        try:
            t0 = time.monotonic()
            await asyncio.wait_for(llm.start(), 600)
            entry["load_s"] = round(time.monotonic() - t0, 2)
            await ask_llm(llm, "Hello.", 120)  # warm-up, not counted: cold model pages, the system prompt into the cache
            rows = []
            for question, keywords in QUESTIONS:
                r = await ask_llm(llm, question, 120)
                r.update(question=question, right=is_right(r["answer"], keywords))
                rows.append(r)
                say(f"  llm {preset}: {question!r} -> {r['answer']!r} [{'right' if r['right'] else 'WRONG'}]")
            tokens = sum(r["tokens"] or 0 for r in rows)
            entry.update(
                right=sum(r["right"] for r in rows),
                tokens_per_s_median=med([r["tokens_per_s"] for r in rows]),
                first_token_ms_median=med([r["first_token_ms"] for r in rows]),
                first_token_ms_worst=worst([r["first_token_ms"] for r in rows]),
                reply_ms_median=med([r["total_ms"] for r in rows]),
                tokens_median=med([r["tokens"] for r in rows]),
                tokens_total=tokens,
                model=llm.name,
                rows=rows,
            )
        except (EngineError, TimeoutError) as exc:
            entry["unavailable"] = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            say(f"  llm {preset}: unavailable ({entry['unavailable']})")
        finally:
            await llm.close()
        out[preset] = entry
    return out


def print_llm(result: dict[str, Any]) -> None:
    rows = []
    for preset, e in result.items():
        if "unavailable" in e:
            rows.append([preset, f"unavailable ({e['unavailable']})", "", "", "", "", ""])
        else:
            rows.append(
                [
                    preset,
                    f"{e['right']}/10",
                    fmt(e["tokens_per_s_median"], 1),
                    fmt(e["first_token_ms_median"]),
                    fmt(e["first_token_ms_worst"]),
                    fmt(e["reply_ms_median"]),
                    fmt(e["load_s"], 1),
                ]
            )
    say(
        table(
            [
                "LLM preset",
                "right",
                "tokens/s (median)",
                "first token ms (median)",
                "first token ms (worst)",
                "whole reply ms (median)",
                "load s",
            ],
            rows,
            "LLM answers right (text questions, product system prompt, temperature 0)",
        )
    )
    for preset, e in result.items():
        for r in e.get("rows", []):
            if not r["right"]:
                say(f"  {preset} wrong: {r['question']!r} -> {r['answer']!r}")


# ---------- part 3: end of speech -> first audible reply, through the real server ----------


async def run_e2e(turn_timeout: float = 120.0) -> dict[str, Any]:
    from aiohttp import web

    from kit.rtc_client import Client, to_48k
    from pipeline.engines.factory import build_engines
    from pipeline.wiring import pipeline_factory
    from rtc.http import HttpConfig, create_app
    from rtc.ice import use_host_addresses

    use_host_addresses(["127.0.0.1"])
    settings = settings_for(llm_temperature=0.0)
    engines = build_engines(settings)
    result: dict[str, Any] = {"engines": {}, "rows": []}
    t0 = time.monotonic()
    await asyncio.wait_for(engines.start(), 600)
    result["engines_load_s"] = round(time.monotonic() - t0, 2)
    result["engines"] = {k: v["engine"] for k, v in engines.readiness().items()}
    config = HttpConfig.from_settings(settings, pipeline_factory(settings, engines), engines.readiness)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = Client(f"http://127.0.0.1:{port}")
    try:
        await asyncio.wait_for(client.connect(), 30)
        await client.wait_event("state", state="listening", timeout=30)
        # Warm-up typed turn, not counted: the first request touches cold model pages.
        client.send({"type": "text", "text": "Hello."})
        await client.wait_event("reply", timeout=turn_timeout)
        await client.wait_event("state", state="listening", timeout=60, after=client.events[-1][0])
        await asyncio.sleep(0.5)
        for i, (question, keywords) in enumerate(QUESTIONS, start=1):
            speech, clip = clip16k(question)
            mark = time.monotonic()
            sent = await asyncio.wait_for(client.mic.say(to_48k(clip)), 30)
            speech_end = sent + LEAD_S + voiced_bounds(speech)[1]
            row: dict[str, Any] = {"question": question}
            try:
                _, stopped = await client.wait_event("speech_stopped", timeout=30, after=mark)
                turn = stopped["turn"]
                _, transcript = await client.wait_event("transcript", turn=turn, timeout=60, after=mark)
                row["transcript"] = transcript["text"]
                _, metrics = await client.wait_event("metrics", turn=turn, timeout=turn_timeout, after=mark)
                t_reply, reply = await client.wait_event("reply", turn=turn, timeout=turn_timeout, after=mark)
                row["reply"] = reply["text"]
                row["interrupted"] = reply.get("interrupted")
                row.update({k: metrics.get(k) for _, k in STAGES if k in metrics})
                audible = [t for t in client.audible_times(AUDIBLE_RMS) if t > speech_end]
                row["client_v2v_ms"] = round((audible[0] - speech_end) * 1000, 1) if audible else None
                row["right"] = is_right(reply["text"], keywords)
                await client.wait_event("state", state="listening", timeout=60, after=t_reply)
            except TimeoutError as exc:
                row["error"] = str(exc)
                errors = [ev for _, ev in client.events if ev.get("type") == "error"]
                if errors:
                    row["error"] += f"; error events: {errors[-3:]}"
                row["right"] = False
            result["rows"].append(row)
            say(
                f"  e2e {i}/10: v2v client {fmt(row.get('client_v2v_ms'))} ms, server {fmt(row.get('voice_to_voice_ms'))} ms: "
                f"{row.get('transcript')!r} -> {row.get('reply')!r}" + (f" [{row['error']}]" if "error" in row else "")
            )
            await asyncio.sleep(0.5)
            # received frames of finished turns are not needed again: bound the client's memory
            client.frames = [f for f in client.frames if f.t > time.monotonic() - 5]
    finally:
        await client.close()
        await runner.cleanup()
        await engines.close()
    rows = result["rows"]
    result["summary"] = {key: {"median": med([r.get(key) for r in rows]), "worst": worst([r.get(key) for r in rows])} for _, key in STAGES}
    result["right"] = sum(bool(r.get("right")) for r in rows)
    rate, errors, words = wer([r["question"] for r in rows], [r.get("transcript", "") for r in rows])
    result["transcript_wer"] = round(rate, 4)
    return result


def print_e2e(result: dict[str, Any]) -> None:
    rows = []
    for i, r in enumerate(result["rows"], start=1):
        rows.append(
            [str(i)]
            + [fmt(r.get(k)) for _, k in STAGES]
            + ["yes" if r.get("right") else "NO", repr(r.get("transcript", "")), repr(r.get("reply", r.get("error", "")))]
        )
    headers = [
        "#",
        "endpoint",
        "stt",
        "llm 1st tok",
        "1st sentence",
        "tts 1st audio",
        "v2v server",
        "v2v client",
        "right",
        "transcript",
        "reply",
    ]
    say(table(headers, rows, f"End of speech -> first audible reply, per question (ms; engines {result['engines']})"))
    say()
    summary = result["summary"]
    srows = [[label, fmt(summary[k]["median"]), fmt(summary[k]["worst"])] for label, k in STAGES]
    say(table(["stage", "median ms", "worst ms"], srows, "Per stage over the 10 spoken questions"))
    say(
        f"answers right through the whole pipeline: {result['right']}/10; WER of the pipeline's transcripts: {100 * result['transcript_wer']:.1f} %"
    )


# ---------- main ----------


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "questions": [{"question": q, "keywords": list(k)} for q, k in QUESTIONS],
    }
    if "wer" in parts:
        say("== STT word error rate ==")
        out["wer"] = await run_wer([m.strip() for m in args.stt.split(",") if m.strip()])
    if "llm" in parts:
        say("== LLM answers ==")
        out["llm"] = await run_llm([p.strip() for p in args.presets.split(",") if p.strip()])
    if "e2e" in parts:
        say("== end to end through the server ==")
        out["e2e"] = await run_e2e()
    say()
    if "wer" in out:
        print_wer(out["wer"])
        say()
    if "llm" in out:
        print_llm(out["llm"])
        say()
    if "e2e" in out:
        print_e2e(out["e2e"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.answers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="default,tiny,quality", help="LLM presets (or GGUF paths), comma-separated")
    ap.add_argument("--stt", default="tiny.en,base", help="STT models, comma-separated")
    ap.add_argument("--parts", default="wer,llm,e2e", help="which parts: wer, llm, e2e")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    out = asyncio.run(amain(args))
    out["duration_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"answers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    say(f"\nwrote {path.relative_to(ROOT)} ({out['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
