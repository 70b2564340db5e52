"""When the recogniser most likely misheard: REPEAT_BELOW_LOGPROB chosen on a tune set, checked on held-out ones.

    .venv/bin/python -m bench.hearing [--model tiny.en] [--languages en]

TUNE: espeak voices, the tune questions, clean / pink noise 5 dB / a phone band / 260 wpm. HELD-OUT:
flite voices, the held-out questions, clean / reverb RT60 0.7 s / babble 5 dB / phone band + noise
10 dB / time-compressed 1.35x, and the real recordings. Misheard: word error rate over 0.3. The
threshold is the highest that asks again for at most 1 in 20 rightly heard tune clips.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.eval_set import QUESTIONS  # noqa: E402
from kit import eval_voices as ev  # noqa: E402
from kit.speech import RATE, speak  # noqa: E402
from kit.wer import wer  # noqa: E402
from pipeline.engines.local_stt import LocalSTT  # noqa: E402

MISHEARD_WER = 0.3
MAX_FALSE_ASKS = 0.05  # of rightly heard tune clips


def _pad(x: np.ndarray) -> np.ndarray:
    z = np.zeros(int(0.3 * RATE), np.int16)
    return np.concatenate([z, x, z])


@dataclass
class Clip:
    split: str
    condition: str
    text: str
    audio: np.ndarray


def clips() -> list[Clip]:
    out: list[Clip] = []
    tune = [q.text for q in QUESTIONS if q.split == "tune"]
    held = [q.text for q in QUESTIONS if q.split == "held-out"]
    for i, text in enumerate(tune):
        voice = ev.SEEN_VOICES[i % len(ev.SEEN_VOICES)]
        clean = _pad(ev.render(text, voice))
        out += [
            Clip("tune", "clean", text, clean),
            Clip("tune", "pink noise 5 dB", text, ev.add_noise(clean, 5.0, seed=i)),
            Clip("tune", "phone band", text, ev.phone_band(clean)),
            Clip("tune", "fast, 260 wpm", text, _pad(ev.level(speak(text, voice=voice.partition(":")[2], wpm=260)))),
        ]
    voices = [v for v in ev.HELD_OUT_VOICES if ev.available(v)]
    for i, text in enumerate(held):
        clean = _pad(ev.render(text, voices[i % len(voices)]))
        out += [
            Clip("held-out", "clean", text, clean),
            Clip("held-out", "reverb, RT60 0.7 s", text, _pad(ev.reverb(clean, seed=i))),
            Clip("held-out", "babble 5 dB", text, ev.babble(clean, 5.0, seed=i, texts=[q.text for q in QUESTIONS])),
            Clip("held-out", "phone band + noise 10 dB", text, ev.phone_band(ev.add_noise(clean, 10.0, seed=100 + i))),
            Clip("held-out", "fast, 1.35x", text, ev.faster(clean, 1.35)),
        ]
    out += [Clip("held-out", f"real, {r.source}", r.text, r.samples) for r in ev.recordings()]
    return out


async def measure(model: str, languages: tuple[str, ...]) -> list[tuple[Clip, float, float]]:
    stt = LocalSTT(model=model, languages=languages)
    await stt.start()
    out = []
    for clip in clips():
        heard = await stt.transcribe(clip.audio.tobytes())
        logprob = heard.avg_logprob if heard.avg_logprob is not None else 0.0
        out.append((clip, wer([(clip.text, heard.text)])[0] or 0.0, logprob))
    await stt.close()
    return out


def choose(rows: list[tuple[Clip, float, float]]) -> float:
    right = sorted(lp for clip, w, lp in rows if clip.split == "tune" and w <= MISHEARD_WER)
    allowed = int(MAX_FALSE_ASKS * len(right))
    return right[allowed] if right else float("-inf")  # asks again below it: `allowed` rightly heard clips at most


def report(rows: list[tuple[Clip, float, float]], threshold: float) -> None:
    print(f"threshold (mean log-probability): {threshold:.3f}")
    print(f"{'split':9} {'condition':28} {'clips':>5} {'misheard':>8} {'asked again':>11} {'right, asked':>12}")
    keys = dict.fromkeys((clip.split, clip.condition) for clip, _, _ in rows)
    for split, condition in [*keys, ("tune", "all"), ("held-out", "all")]:
        group = [(w, lp) for clip, w, lp in rows if clip.split == split and condition in ("all", clip.condition)]
        wrong = [lp for w, lp in group if w > MISHEARD_WER]
        right = [lp for w, lp in group if w <= MISHEARD_WER]
        caught = sum(lp < threshold for lp in wrong)
        false = sum(lp < threshold for lp in right)
        print(f"{split:9} {condition:28} {len(group):5} {len(wrong):8} {caught:>5}/{len(wrong):<5} {false:>6}/{len(right):<5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="STT_MODEL (default: the product's for --languages)")
    parser.add_argument("--languages", default="en")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.model, tuple(args.languages.split(","))))
    report(rows, choose(rows))


if __name__ == "__main__":
    main()
