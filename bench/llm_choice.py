"""Choosing the LLM defaults: presets, temperature, system prompt, interrupted-reply history, as text.

    python -m bench.llm_choice [--configs NAME,...] [--runs 2]

The evaluation set's 48 questions and 8 conversations (bench/eval_set.py) are sent to the
embedded LLM as text, the reference wording (what STT should have heard), once per
configuration, `--runs` times each to show whether the answers repeat. A barge-in step
is simulated: the reply it interrupts is cut after the words its delay would have let
the user hear (2.6 words/s), and the history records that cut reply as the product would.
The spoken, whole-product run is `python -m bench quality`; this part is the cheap one
that picks what that run then confirms.

Per configuration: answers right on the tune and the held-out half (reported apart),
conversation steps right, identical answers across runs, time to the first sentence
(the part that the voice waits for), reply tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.eval_set import CONVERSATIONS, QUESTIONS, is_right  # noqa: E402
from pipeline.conversation import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from pipeline.engines.base import Message  # noqa: E402
from pipeline.history import History  # noqa: E402
from pipeline.sentences import SentenceSplitter  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORDS_PER_S = 2.6  # piper joe at speed 1.0, measured on its replies

OLD_PROMPT = (
    "You are a friendly voice assistant. Everything you write is spoken aloud, so answer in one to three short "
    "sentences of plain conversational English: no lists, no markdown, no emojis, no code. Start with the answer. "
    "If you did not understand the question, say so briefly."
)
SHORT_PROMPT = "You are a helpful voice assistant. Answer in one short sentence. Give the answer first. Plain words only."
EXPERT_PROMPT = (
    "You are a knowledgeable and accurate voice assistant. Your words are spoken aloud. "
    "Reply with one short, correct sentence that starts with the answer. "
    "Remember what the user told you earlier in the conversation."
)
FEWSHOT_PROMPT = (
    "You are a knowledgeable and accurate voice assistant. Your words are spoken aloud. "
    "Reply with one short, correct sentence that starts with the answer, like these examples.\n"
    "User: What is the capital of Peru? You: The capital of Peru is Lima.\n"
    "User: How many wheels does a bicycle have? You: A bicycle has two wheels.\n"
    "User: Is the moon a planet? You: No, the moon is a satellite of the Earth.\n"
    "User: What is four times five? You: Four times five is twenty.\n"
    "Remember what the user told you earlier in the conversation."
)

ASR_NOTE = " The user's words come from speech recognition and may contain misheard words: answer the question they most likely meant."

PROMPTS = {
    "old": OLD_PROMPT,
    "short": SHORT_PROMPT,
    "expert": EXPERT_PROMPT,
    "fewshot": FEWSHOT_PROMPT,
    "product": DEFAULT_SYSTEM_PROMPT,
    "product+asr": DEFAULT_SYSTEM_PROMPT + ASR_NOTE,
}


def old_history(history: History, user: str) -> list[Message]:
    """The history format before issue 10: the heard part, then '… (interrupted by the user)'."""
    out: list[Message] = [{"role": "system", "content": history.system_prompt}]
    for e in history.entries:
        text = e.text
        if e.interrupted:
            text = f"{text}… (interrupted by the user)" if text else "(interrupted by the user before speaking)"
        out.append({"role": e.role, "content": text})
    out.append({"role": "user", "content": user})
    return out


def plain_history(history: History, user: str) -> list[Message]:
    """Only what was heard, no mark (LiveKit's and Pipecat's default)."""
    out: list[Message] = [{"role": "system", "content": history.system_prompt}]
    out += [{"role": e.role, "content": e.text} for e in history.entries]
    out.append({"role": "user", "content": user})
    return out


def _interrupted_as(style: str) -> Callable[[History, str], list[Message]]:
    """Other ways to write an interrupted reply into the history, for --part interruptions."""

    def render(history: History, user: str) -> list[Message]:
        out: list[Message] = [{"role": "system", "content": history.system_prompt}]
        for e in history.entries:
            if not e.interrupted:
                out.append({"role": e.role, "content": e.text})
            elif style == "bracket":
                out.append({"role": "assistant", "content": f"{e.text}… [interrupted by the user]"})
            elif style == "user-note":
                out.append({"role": "assistant", "content": f"{e.text} —"})
                user = f"(I interrupted you.) {user}"
        out.append({"role": "user", "content": user})
        return out

    return render


HISTORIES: dict[str, Callable[[History, str], list[Message]]] = {
    "bracket": _interrupted_as("bracket"),
    "user-note": _interrupted_as("user-note"),
    "old": old_history,
    "plain": plain_history,
    "product": lambda history, user: history.messages(user),
}


@dataclass(frozen=True)
class Config:
    name: str
    preset: str = "default"
    temperature: float = 0.0
    prompt: str = "product"
    history: str = "product"
    max_tokens: int = 200
    repeat_penalty: float = 1.05


CONFIGS = {
    c.name: c
    for c in [
        Config("old", temperature=0.3, prompt="old", history="old"),
        Config("old-t0", prompt="old", history="old"),
        Config("short-t0", prompt="short", history="product"),
        Config("expert-t0", prompt="expert"),
        Config("fewshot-t0", prompt="fewshot"),
        Config("fewshot-t0-rp1", prompt="fewshot", repeat_penalty=1.0),
        Config("old-quality", preset="quality", temperature=0.3, prompt="old", history="old"),
        Config("fewshot-quality", preset="quality", prompt="fewshot"),
        Config("expert-quality", preset="quality", prompt="expert"),
        Config("expert-tiny", preset="tiny", prompt="expert"),
        Config("product", prompt="product", history="product"),
        Config("product-quality", preset="quality"),
        Config("product-quality-plain-history", preset="quality", history="plain"),
        Config("product-plain-history", history="plain"),
        Config("product-tiny", preset="tiny"),
    ]
}


async def ask(llm: Any, messages: list[Message]) -> dict[str, Any]:
    t0 = time.monotonic()
    first_sentence: float | None = None
    splitter = SentenceSplitter(first_clause_words=10**6)  # whole sentences, not the early first clause
    parts: list[str] = []
    async for delta in llm.stream(messages):
        parts.append(delta)
        if first_sentence is None and splitter.feed(delta):
            first_sentence = time.monotonic() - t0
    total = time.monotonic() - t0
    timings = dict(llm.last_timings or {})
    return {
        "reply": "".join(parts).strip(),
        "first_sentence_ms": round((first_sentence or total) * 1000, 1),
        "tokens": timings.get("predicted_n"),
    }


# --part interruptions: a reply cut after 2 s, then a follow-up about it; right if it names the topic.
TOPICS = [
    ("Tell me a long story about a dragon.", ("dragon", "dragons")),
    ("Tell me about the history of the Eiffel Tower.", ("eiffel", "tower")),
    ("Explain how rainbows form.", ("rainbow", "rainbows")),
    ("Tell me about elephants.", ("elephant", "elephants")),
]
FOLLOW_UPS = [
    "Sorry, what were you telling me about?",
    "What were you saying?",
    "What was that about?",
    "Can you repeat what you were saying?",
    "Go on, what were you saying about it?",
]


async def run_interruptions(llm: Any, prompt: str, styles: list[str]) -> dict[str, Any]:
    heard: dict[str, str] = {}
    for topic, _ in TOPICS:
        r = await ask(llm, [{"role": "system", "content": prompt}, {"role": "user", "content": topic}])
        heard[topic] = heard_part(r["reply"], 2.0)
    out: dict[str, Any] = {}
    for style in styles:
        rows = []
        for topic, keywords in TOPICS:
            history = History(prompt)
            history.add_turn(topic, heard[topic], interrupted=True)
            for follow in FOLLOW_UPS:
                r = await ask(llm, HISTORIES[style](history, follow))
                rows.append({"heard": heard[topic], "follow_up": follow, "reply": r["reply"], "right": is_right(r["reply"], keywords)})
        out[style] = {"right": sum(r["right"] for r in rows), "of": len(rows), "rows": rows}
        print(f"  history {style}: {out[style]['right']}/{len(rows)}", flush=True)
        for r in rows:
            if not r["right"]:
                print(f"    {style} WRONG {r['heard']!r} / {r['follow_up']!r} -> {r['reply']!r}", flush=True)
    return out


async def run_heard(llm: Any, prompts: list[str], splits: tuple[str, ...]) -> dict[str, Any]:
    """--part heard: the questions as the default STT heard them (the newest bench/results/stt-choice-*.json,
    config tiny.en, every voice group), answered with each prompt: how much a prompt recovers from
    misheard words."""
    source = sorted(RESULTS.glob("stt-choice-*.json"))[-1]
    rows = [r for r in json.loads(source.read_text())["rows"] if r["kind"] == "question" and r["split"] in splits]
    keywords = {q.text: q.keywords for q in QUESTIONS}
    out: dict[str, Any] = {"source": source.name}
    for name in prompts:
        right = misheard = misheard_right = 0
        for r in rows:
            heard = r["results"]["tiny.en"]["text"]
            reply = (await ask(llm, [{"role": "system", "content": PROMPTS[name]}, {"role": "user", "content": heard}]))["reply"]
            ok = is_right(reply, keywords[r["ref"]])
            right += ok
            if r["results"]["tiny.en"]["errors"]:
                misheard += 1
                misheard_right += ok
        out[name] = {"right": right, "of": len(rows), "misheard": misheard, "misheard_right": misheard_right}
        print(f"  heard questions, prompt {name}: {right}/{len(rows)} right; misheard {misheard_right}/{misheard}", flush=True)
    return out


def heard_part(reply: str, delay_s: float) -> str:
    words = reply.split()
    return " ".join(words[: int(delay_s * WORDS_PER_S)])


async def run_config(llm: Any, config: Config, splits: tuple[str, ...]) -> dict[str, Any]:
    render = HISTORIES[config.history]
    rows: list[dict[str, Any]] = []
    for q in [q for q in QUESTIONS if q.split in splits]:
        history = History(PROMPTS[config.prompt])
        r = await ask(llm, render(history, q.text))
        rows.append({"kind": "question", "item": q.text, "split": q.split, "right": is_right(r["reply"], q.keywords), **r})
    for conv in [c for c in CONVERSATIONS if c.split in splits]:
        history = History(PROMPTS[config.prompt])
        for i, step in enumerate(conv.steps):
            r = await ask(llm, render(history, step.spoken))
            scored = bool(step.keywords)
            nxt = conv.steps[i + 1] if i + 1 < len(conv.steps) else None
            if nxt is not None and nxt.kind == "bargein":
                history.add_turn(step.spoken, heard_part(r["reply"], nxt.delay_s), interrupted=True)
            else:
                history.add_turn(step.spoken, r["reply"])
            rows.append(
                {
                    "kind": "conversation",
                    "item": f"{conv.name}: {step.spoken}",
                    "split": conv.split,
                    "scored": scored,
                    "right": is_right(r["reply"], step.keywords) if scored else None,
                    **r,
                }
            )
    return {"rows": rows}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]["rows"]
    out: dict[str, Any] = {}
    for split in ("tune", "held-out"):
        qs = [r for r in first if r["kind"] == "question" and r["split"] == split]
        steps = [r for r in first if r["kind"] == "conversation" and r["split"] == split and r["scored"]]
        out[f"questions_{split}"] = f"{sum(r['right'] for r in qs)}/{len(qs)}" if qs else "-"
        out[f"conversation_{split}"] = f"{sum(r['right'] for r in steps)}/{len(steps)}" if steps else "-"
    right_per_run = [sum(bool(r["right"]) for r in run["rows"] if r["kind"] == "question") for run in runs]
    out["questions_right_per_run"] = right_per_run
    out["identical_runs"] = all([r["reply"] for r in run["rows"]] == [r["reply"] for r in first] for run in runs[1:])
    qrows = [r for run in runs for r in run["rows"] if r["kind"] == "question"]
    out["first_sentence_ms_p50"] = round(statistics.median(r["first_sentence_ms"] for r in qrows))
    out["tokens_p50"] = statistics.median(r["tokens"] or 0 for r in qrows)
    out["tokens_max"] = max(r["tokens"] or 0 for r in qrows)
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from bench.answers import settings_for
    from pipeline.engines.base import EngineError
    from pipeline.engines.local_llm import LocalLLM

    if args.part == "heard":
        llm = LocalLLM.from_settings(settings_for(llm_model=args.preset, llm_temperature=0.0))
        try:
            await llm.start()
            await ask(llm, [{"role": "user", "content": "Hello."}])
            splits = ("tune",) if args.tune_only else ("tune", "held-out")
            prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
            return {"heard": await run_heard(llm, prompts, splits), "preset": args.preset}
        finally:
            await llm.close()
    if args.part == "interruptions":
        llm = LocalLLM.from_settings(settings_for(llm_model=args.preset, llm_temperature=0.0))
        try:
            await llm.start()
            await ask(llm, [{"role": "user", "content": "Hello."}])
            return {"interruptions": await run_interruptions(llm, PROMPTS["product"], list(HISTORIES)), "preset": args.preset}
        finally:
            await llm.close()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    splits = ("tune",) if args.tune_only else ("tune", "held-out")
    out: dict[str, Any] = {"configs": {}}
    loaded: dict[str, Any] = {}
    try:
        for name in names:
            config = CONFIGS[name]
            if config.preset not in loaded:
                for llm in loaded.values():
                    await llm.close()
                loaded.clear()
                llm = LocalLLM.from_settings(settings_for(llm_model=config.preset))
                try:
                    await llm.start()
                except EngineError as exc:
                    out["configs"][name] = {"unavailable": exc.message}
                    print(f"{name}: unavailable ({exc.message})", flush=True)
                    continue
                loaded[config.preset] = llm
                await ask(llm, [{"role": "user", "content": "Hello."}])  # warm-up, not counted
            llm = loaded[config.preset]
            llm.temperature, llm.max_tokens, llm.repeat_penalty = config.temperature, config.max_tokens, config.repeat_penalty
            runs = []
            for run in range(args.runs):
                result = await run_config(llm, config, splits)
                runs.append(result)
                for r in result["rows"]:
                    if r.get("right") is False:
                        print(f"  {name} run {run + 1} WRONG [{r['split']}] {r['item']!r} -> {r['reply']!r}", flush=True)
            summary = summarise(runs)
            out["configs"][name] = {"config": config.__dict__, "summary": summary, "runs": runs}
            print(f"{name}: {summary}", flush=True)
    finally:
        for llm in loaded.values():
            await llm.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.llm_choice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--part", choices=("configs", "interruptions", "heard"), default="configs")
    ap.add_argument("--prompts", default="product,product+asr", help="--part heard: the prompts compared")
    ap.add_argument("--preset", default="quality", help="--part interruptions / heard: the LLM preset")
    ap.add_argument("--tune-only", action="store_true", help="only the tune half (for trying prompts; the held-out half stays unseen)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    out = asyncio.run(amain(args))
    out["duration_s"] = round(time.monotonic() - started, 1)
    print()
    for name, entry in out.get("heard", {}).items():
        if isinstance(entry, dict):
            print(
                f"heard questions with prompt {name}: {entry['right']}/{entry['of']} right, misheard ones {entry['misheard_right']}/{entry['misheard']}"
            )
    for style, entry in out.get("interruptions", {}).items():
        print(f"history of an interrupted reply as {style}: follow-ups right {entry['right']}/{entry['of']}")
    header = [
        "config",
        "q tune",
        "q held-out",
        "conv tune",
        "conv held-out",
        "q right per run",
        "identical",
        "1st sentence ms",
        "tokens p50/max",
    ]
    print("  ".join(header))
    for name, entry in out.get("configs", {}).items():
        s = entry.get("summary")
        if not s:
            print(f"{name}  unavailable")
            continue
        print(
            f"{name}  {s['questions_tune']}  {s['questions_held-out']}  {s['conversation_tune']}  {s['conversation_held-out']}  "
            f"{s['questions_right_per_run']}  {s['identical_runs']}  {s['first_sentence_ms_p50']}  {s['tokens_p50']}/{s['tokens_max']}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"llm-choice-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {path.relative_to(ROOT)} ({out['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
