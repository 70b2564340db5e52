"""What the embedded Whisper hears of the first half of each thinking-pause question, alone.

    .venv/bin/python -m bench.pause_halves

At a thinking pause the turn is judged on the words so far. This prints tiny.en's transcript
(the product's settings: fitted window, beam 5) of each first half of bench/turn_clips.py's
pause questions, the tuned and the held-out phrasings, and of the whole questions, in two
espeak-ng and the four flite voices, each clip as the pause would cut it (0.3 s of silence
before, 0.1 s after), and whether the end-of-turn text rule (`sounds_unfinished`) would hold it.
A half that comes back as a finished question ("Who was the first person?") cannot be told from
one that is over by its words either.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.turn_clips import HELD_OUT_PAUSE_QUESTIONS, PAUSE_QUESTIONS, RATE, flite_available, render  # noqa: E402
from pipeline.conversation import sounds_unfinished  # noqa: E402
from pipeline.engines.local_stt import LocalSTT  # noqa: E402

VOICES = ["espeak:en-us", "espeak:en+f3", "flite:kal", "flite:awb", "flite:rms", "flite:slt"]


async def main() -> None:
    stt = LocalSTT(model="tiny.en", language="en", window="fit")
    await stt.start()
    voices = [v for v in VOICES if v.startswith("espeak:") or flite_available()]
    sets = {
        "first halves, tuned phrasings": [a for a, _ in PAUSE_QUESTIONS],
        "first halves, held-out phrasings": [a for a, _ in HELD_OUT_PAUSE_QUESTIONS],
        "whole questions, held-out phrasings": [f"{a} {b}" for a, b in HELD_OUT_PAUSE_QUESTIONS],
    }
    for name, texts in sets.items():
        print(f"== {name} (held: the text rule keeps the reply for the long silence)")
        for voice in voices:
            heard = []
            for text in texts:
                pad = np.zeros(int(0.3 * RATE), dtype=np.int16)
                pcm = np.concatenate([pad, render(text, voice), pad[: int(0.1 * RATE)]]).tobytes()
                got = (await stt.transcribe(pcm, RATE)).strip()
                heard.append(f"{got!r}{' held' if sounds_unfinished(got) else ''}")
            print(f"  {voice:14} " + " | ".join(heard))
    await stt.close()


if __name__ == "__main__":
    asyncio.run(main())
