"""The text end-of-turn signal (pipeline/engines/text_turn.py): separation, threshold, cost.

    .venv/bin/python -m bench.text_turn [--models default,quality] [--threads N]

Two sets of finished messages and cut-off first halves, in Whisper's style (capitals, and a
cut-off half often closed by "?" or "."): TUNE, on which the prompt variant and the threshold
are chosen, and HELD_OUT, written first, on other topics and in other shapes (commands,
statements, yes/no questions, two sentences), which nothing is tuned on. For each installed
model: AUC on each set, the threshold best on TUNE and its accuracy on HELD_OUT, beside the word
rule (`sounds_unfinished`) alone and the two together (held if either says unfinished); ms per
judgement p50/p95, alone, growing word by word (a partial transcript), and beside a reply being
generated; and the memory a second context on the loaded model costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.engines.local_llm import PRESETS, LocalLLM  # noqa: E402
from pipeline.engines.text_turn import TOP_K, TextTurn, p_finished, render  # noqa: E402

try:
    from pipeline.language import sounds_unfinished  # noqa: E402
except ImportError:
    from pipeline.conversation import sounds_unfinished  # type: ignore[no-redef]  # noqa: E402

# Written before TUNE and never looked at to choose anything: other topics, other shapes.
HELD_OUT_FINISHED = [
    "Turn off the kitchen lights, please.",
    "Remind me to water the plants on Sunday.",
    "I'd like a recipe for banana bread.",
    "Is it going to rain tomorrow in Seattle?",
    "Who painted the Mona Lisa?",
    "Why do cats purr?",
    "Tell me a joke about penguins.",
    "Could you recommend a good science fiction novel?",
    "My phone battery drains really fast. What should I do?",
    "Translate good morning into Spanish.",
    "When did the Berlin Wall fall?",
    "Set a timer for ten minutes.",
    "Do spiders have bones?",
    "I'm feeling a bit stressed about my exam.",
    "What's a good name for a golden retriever puppy?",
    "Play some relaxing jazz.",
    "How long should I boil an egg?",
    "Which planet has the most moons?",
    "Explain how vaccines work.",
    "Should I bring an umbrella today?",
    "Thanks, that was really helpful.",
    "Where was Napoleon born?",
    "Is coffee bad for your heart?",
    "Give me three ideas for a birthday party.",
    "What does a quarterback do?",
    "Convert fifty miles to kilometers.",
    "Who won the World Cup in 2014?",
    "Why is the ocean salty?",
    "I think I'll go for a walk now.",
    "If I leave at noon, will I make it to Boston by three?",
    "Can dogs eat grapes?",
    "How do I reset my router?",
]
HELD_OUT_CUT = [
    "Turn off the",
    "Remind me to water the",
    "I'd like a recipe for",
    "Is it going to rain tomorrow in",
    "Who painted the",
    "Why do cats?",
    "Tell me a joke about",
    "Could you recommend a good",
    "My phone battery drains really fast and",
    "Translate good morning into.",
    "When did the Berlin Wall",
    "Set a timer for.",
    "Do spiders have?",
    "I'm feeling a bit stressed about",
    "What's a good name for a?",
    "Play some",
    "How long should I boil?",
    "Which planet has the",
    "Explain how",
    "Should I bring an",
    "So I was thinking that maybe",
    "Where was",
    "Is coffee bad for your?",
    "Give me three ideas for.",
    "What does a",
    "Convert fifty miles to",
    "Who won the World Cup in",
    "Why is the ocean.",
    "I think I'll go for a",
    "If I leave at noon, will I",
    "Can dogs eat",
    "How do I reset my?",
]

TUNE_FINISHED = [
    "What is the capital of Japan?",
    "How many legs does a cat have?",
    "Can you tell me how far the moon is?",
    "I would like to know who wrote Hamlet.",
    "What is the tallest mountain in the world?",
    "How many days are in a leap year?",
    "Who discovered penicillin?",
    "What is the boiling point of water?",
    "How far is it from London to Paris?",
    "Can you tell me a fun fact about octopuses?",
    "What is the square root of eighty one?",
    "How many moons does Mars have?",
    "Who was the first president of the United States?",
    "What language do they speak in Brazil?",
    "How old is the universe?",
    "What is the largest ocean on Earth?",
    "Can you explain what photosynthesis is?",
    "I want to know how rainbows form.",
    "What is the speed of light?",
    "How many bones are in the human body?",
    "What is the population of Canada?",
    "Who invented the telephone?",
    "What is the longest river in Africa?",
    "How do airplanes stay in the air?",
    "What's the chemical symbol for gold?",
    "Tell me about the Great Wall of China.",
    "What is the difference between a frog and a toad?",
    "How many continents are there?",
    "What year did the Titanic sink?",
    "Can you tell me what time it is in Tokyo?",
]
TUNE_CUT = [
    "What is the capital of",
    "How many legs does",
    "Can you tell me",
    "I would like to know",
    "What is the tallest mountain in?",
    "How many days are in a.",
    "Who discovered",
    "What is the boiling point of?",
    "How far is it from London to",
    "Can you tell me a fun fact about.",
    "What is the square root of",
    "How many moons does?",
    "Who was the first president of",
    "What language do they speak in?",
    "How old is the",
    "What is the largest",
    "Can you explain what",
    "I want to know how.",
    "What is the speed of?",
    "How many bones are in the",
    "What is the population of.",
    "Who invented the?",
    "What is the longest river in",
    "How do airplanes",
    "What's the chemical symbol for?",
    "Tell me about the",
    "What is the difference between a frog and",
    "How many?",
    "What year did the",
    "Can you tell me what time it is in.",
]
SETS = {"tune": (TUNE_FINISHED, TUNE_CUT), "held-out": (HELD_OUT_FINISHED, HELD_OUT_CUT)}
# Prompt variants: (name, render options); scored with and without end punctuation as an end.
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
VARIANTS = {
    "plain": {"plain": True},
    "plain+system": {"plain": True, "system": QWEN_SYSTEM},
    "raw": {"plain": False},
    "raw+system": {"plain": False, "system": QWEN_SYSTEM},
}
GREETING = "Hi! I'm your voice assistant. What would you like to know?"
REPLY = "The Eiffel Tower is about three hundred and thirty meters tall. Is there anything else you'd like to know?"
GROWING = "How many legs does a cat have?"
LONG_QUESTION = [{"role": "user", "content": "Tell me the history of the Roman Empire in detail."}]


def auc(finished: list[float], cut: list[float]) -> float:
    """P(a finished message scores above a cut-off one), ties half (Mann-Whitney)."""
    wins = sum((f > c) + 0.5 * (f == c) for f in finished for c in cut)
    return wins / (len(finished) * len(cut))


def best_threshold(finished: list[float], cut: list[float]) -> tuple[float, float]:
    """(threshold, accuracy): finished when p >= threshold, the most right on these scores."""
    scores = sorted(set(finished + cut))
    candidates = [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] or scores
    best = max(candidates, key=lambda t: (accuracy(finished, cut, t), -abs(t - 0.5)))
    return best, accuracy(finished, cut, best)


def accuracy(finished: list[float], cut: list[float], threshold: float) -> float:
    return (sum(p >= threshold for p in finished) + sum(p < threshold for p in cut)) / (len(finished) + len(cut))


def rule_accuracy(finished: list[str], cut: list[str], held: Callable[[str], bool]) -> float:
    return (sum(not held(t) for t in finished) + sum(held(t) for t in cut)) / (len(finished) + len(cut))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rss_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def installed(preset: str) -> bool:
    from importlib import metadata

    try:
        for piece in PRESETS[preset].pieces:
            metadata.distribution(piece.dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def judge_all(turn: TextTurn, texts: list[str], options: dict, previous: str = "") -> list[list[dict]]:
    return [turn.top_sync(render(t, previous, **options)) for t in texts]


def report_model(preset: str, threads: int) -> None:
    llm = LocalLLM(model=preset, threads=threads)
    asyncio.run(llm.start())
    before = rss_kib()
    turn = TextTurn.beside(llm)
    started = time.monotonic()
    turn.load_sync()
    after = rss_kib()
    print(f"\n=== {preset} ({turn.model_path.name}), {threads} threads; second context loaded in {time.monotonic() - started:.2f} s")
    print("    memory it added: " + ", ".join(f"{k} {(after[k] - before.get(k, 0)) / 1024:+.0f} MiB" for k in after))

    # Separation of every variant on TUNE; the one chosen there is the only one read on HELD_OUT.
    tops = {name: {s: [judge_all(turn, half, opts) for half in SETS[s]] for s in SETS} for name, opts in VARIANTS.items()}
    table = []
    for name in VARIANTS:
        for punctuation in (True, False):
            scores = {s: [[p_finished(t, punctuation=punctuation) for t in half] for half in tops[name][s]] for s in SETS}
            table.append((f"{name}, {'end token or . ? !' if punctuation else 'end token only'}", scores))
    print(f"    {'variant':42} {'AUC tune':>9} {'AUC held-out':>13}")
    for label, scores in table:
        print(f"    {label:42} {auc(*scores['tune']):9.3f} {auc(*scores['held-out']):13.3f}")
    label, scores = max(table, key=lambda row: auc(*row[1]["tune"]))
    threshold, tune_acc = best_threshold(*scores["tune"])
    print(f"    chosen on tune: {label}; threshold {threshold:.3f}")
    for s, (finished, cut) in SETS.items():
        fin_p, cut_p = scores[s]
        words = rule_accuracy(finished, cut, sounds_unfinished)
        model_acc = accuracy(fin_p, cut_p, threshold)
        both = (
            sum(not (sounds_unfinished(t) or p < threshold) for t, p in zip(finished, fin_p, strict=True))
            + sum(sounds_unfinished(t) or p < threshold for t, p in zip(cut, cut_p, strict=True))
        ) / (len(finished) + len(cut))
        print(f"    {s:9} AUC {auc(fin_p, cut_p):.3f}  accuracy: model {model_acc:.1%}  word rule {words:.1%}  either holds {both:.1%}")
        print(
            f"      lowest finished {min(fin_p):.4f}, highest cut off {max(cut_p):.4f}; cut off at 0 (no end in the top {TOP_K}): {cut_p.count(0.0)}"
        )
        wrong = [f"{t!r} {p:.2f}" for t, p in zip(finished, fin_p, strict=True) if p < threshold]
        wrong += [f"{t!r} {p:.2f}" for t, p in zip(cut, cut_p, strict=True) if p >= threshold]
        print(f"      wrong: {'; '.join(wrong) or 'none'}")
        rule_wrong = [t for t in finished if sounds_unfinished(t)] + [t for t in cut if not sounds_unfinished(t)]
        print(f"      the word rule wrong: {'; '.join(map(repr, rule_wrong)) or 'none'}")
    for previous in (GREETING, REPLY):
        opts = VARIANTS[label.split(",")[0]]
        punctuation = "end token only" not in label
        ctx = {
            s: [[p_finished(t, punctuation=punctuation) for t in judge_all(turn, half, opts, previous)] for half in SETS[s]] for s in SETS
        }
        print(
            f"    after the reply {previous[:30]!r}…: AUC tune {auc(*ctx['tune']):.3f}, held-out {auc(*ctx['held-out']):.3f}; "
            f"held-out accuracy at the threshold {accuracy(*ctx['held-out'], threshold):.1%}"
        )

    # Cost: the module's own call (its default rendering), as the pipeline would make it.
    def timed(texts: list[str], previous: str = "") -> list[float]:
        out = []
        for text in texts:
            turn.complete_sync(text, previous)
            out.append(turn.last_ms)
        return out

    every = [t for finished, cut in SETS.values() for t in finished + cut]
    alone = timed(every)
    prefixes = [" ".join(GROWING.split()[:n]) for n in range(1, len(GROWING.split()) + 1)]
    growing = timed(prefixes * 3, REPLY)
    first_after_reply = [timed([every[0]], f"{REPLY} ({n} of 5)")[0] for n in range(5)]
    print(f"    ms per judgement: alone p50 {statistics.median(alone):.0f} p95 {pct(alone, 0.95):.0f} (n={len(alone)})")
    print(f"      growing word by word after a reply: p50 {statistics.median(growing):.0f} p95 {pct(growing, 0.95):.0f}")
    print(f"      first judgement after a new reply (its tail evaluated once): p50 {statistics.median(first_after_reply):.0f} of 5")

    stop = threading.Event()

    def generate() -> None:
        async def run() -> None:
            while not stop.is_set():
                async for _ in llm.stream(LONG_QUESTION):
                    if stop.is_set():
                        break

        asyncio.run(run())

    background = threading.Thread(target=generate, name="bench-reply")
    background.start()
    time.sleep(1.0)
    beside = timed(every[:40])
    stop.set()
    background.join()
    print(f"      beside a reply being generated: p50 {statistics.median(beside):.0f} p95 {pct(beside, 0.95):.0f}")
    asyncio.run(turn.close())
    asyncio.run(llm.close())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,quality", help="LLM presets to measure, where installed")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"sets: tune {len(TUNE_FINISHED)}+{len(TUNE_CUT)}, held-out {len(HELD_OUT_FINISHED)}+{len(HELD_OUT_CUT)} (finished+cut off)")
    print(f"word rule: {sounds_unfinished.__module__}.sounds_unfinished")
    for preset in args.models.split(","):
        if installed(preset):
            report_model(preset, args.threads)
        else:
            print(f"\n=== {preset}: not installed, skipped")


if __name__ == "__main__":
    main()
