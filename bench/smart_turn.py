"""`python -m bench.smart_turn`: Smart Turn v3.2 (the end-of-turn model) speed and separation.

Speed: ~30 calls on one thread, log-mel features alone and features + inference, on an
8 s window (the model always sees 8 s, so the length of the utterance does not matter).

Separation: P(complete) for complete questions and for the same questions cut off
mid-phrase, spoken by espeak-ng in several voices and by the product's piper voice
(`piper`; it samples noise, so its figures vary from run to run). Each clip is trimmed
to its last voiced frame and followed by 200 ms of silence (--pause), as the pipeline
asks the model once a pause is 200 ms long (JUDGE_AFTER_S). AUC is the chance
that a complete clip scores above a truncated one of the same voice.

Both TTS engines say a truncated text with the intonation of a finished sentence, so
these truncated clips are harder than a person trailing off mid-sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import numpy as np

from bench.stats import pct, table
from kit.speech import FINISHED_AND_CUT_OFF as PAIRS
from kit.speech import RATE, concat, silence, speak, voiced_bounds
from pipeline.engines.local_tts import LocalTTS
from pipeline.engines.smart_turn import SmartTurn, features, int16_to_float

VOICES = ["en-us", "en+f3", "en-gb", "piper"]
PAUSE_S = 0.2


def then_pause(samples: np.ndarray, pause_s: float = PAUSE_S) -> np.ndarray:
    """`samples` cut at their last voiced frame, then `pause_s` of silence."""
    _, end = voiced_bounds(samples)
    return concat(samples[: int(end * RATE)], silence(pause_s))


def piper_clips(texts: list[str]) -> list[np.ndarray]:
    """`texts` in the product's piper voice, 16 kHz int16."""

    async def render() -> list[np.ndarray]:
        tts = LocalTTS(threads=1)
        await tts.start()
        out = []
        try:
            for text in texts:
                pcm = np.frombuffer(b"".join([chunk async for chunk in tts.stream(text)]), dtype=np.int16)
                n = int(round(len(pcm) * RATE / tts.sample_rate))
                out.append(np.interp(np.arange(n) * (tts.sample_rate / RATE), np.arange(len(pcm)), pcm.astype(np.float64)).astype(np.int16))
        finally:
            await tts.close()
        return out

    return asyncio.run(render())


def clips(voice: str) -> Callable[[str], np.ndarray]:
    if voice == "piper":
        rendered = dict(zip([t for pair in PAIRS for t in pair], piper_clips([t for pair in PAIRS for t in pair]), strict=True))
        return rendered.__getitem__
    return lambda text: speak(text, voice=voice)


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def ms(values: list[float]) -> str:
    return f"{pct(values, 50):.1f} / {pct(values, 95):.1f} / {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per measure")
    parser.add_argument("--voices", nargs="*", default=VOICES, help="espeak-ng voices, and `piper` for the product's voice")
    parser.add_argument("--pause", type=float, default=PAUSE_S, help="silence after the last voiced frame, s")
    args = parser.parse_args()

    started = time.perf_counter()
    model = SmartTurn(threads=1).load_sync()
    print(f"loaded (verified) in {time.perf_counter() - started:.2f} s")

    audio = int16_to_float(then_pause(speak(PAIRS[0][0])))
    for _ in range(3):  # warm-up
        model.probability(audio)
    feat_ms, full_ms = [], []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        features(audio)
        t1 = time.perf_counter()
        model.probability(audio)
        t2 = time.perf_counter()
        feat_ms.append((t1 - t0) * 1000)
        full_ms.append((t2 - t1) * 1000)
    print()
    print(
        table(
            ["measure", "p50 / p95 / max ms"],
            [["log-mel features", ms(feat_ms)], ["features + inference", ms(full_ms)]],
            title=f"Speed, {args.calls} calls, 1 thread",
        )
    )

    rows = []
    summary = []
    for voice in args.voices:
        done, cut = [], []
        say = clips(voice)
        for complete, truncated in PAIRS:
            p_done = model.probability(then_pause(say(complete), args.pause))
            p_cut = model.probability(then_pause(say(truncated), args.pause))
            done.append(p_done)
            cut.append(p_cut)
            rows.append([voice, complete, f"{p_done:.3f}", f"{p_cut:.3f}", "yes" if p_done > p_cut else "NO"])
        right = sum(p > 0.5 for p in done) + sum(p <= 0.5 for p in cut)
        summary.append(
            [
                voice,
                f"{np.median(done):.3f} ({min(done):.3f}-{max(done):.3f})",
                f"{np.median(cut):.3f} ({min(cut):.3f}-{max(cut):.3f})",
                f"{sum(d > c for d, c in zip(done, cut, strict=True))}/{len(PAIRS)}",
                f"{auc(done, cut):.2f}",
                f"{right}/{2 * len(PAIRS)}",
            ]
        )
    print()
    print(table(["voice", "complete question", "P complete", "P truncated", "complete > truncated"], rows, title="Per clip"))
    print()
    print(
        table(
            ["voice", "complete: median (range)", "truncated: median (range)", "pairs ordered", "AUC", "right at 0.5"],
            summary,
            title=f"Separation, {len(PAIRS)} pairs per voice, {args.pause * 1000:.0f} ms pause after speech",
        )
    )


if __name__ == "__main__":
    main()
