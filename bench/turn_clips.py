"""Spoken test clips for `python -m bench turns`, in voices other than the reply voice (piper joe).

Seen voices: espeak-ng variants (the voice family every other bench part and test uses).
Held-out voices: flite's (`apt-get install flite`), reported apart; missing flite -> none.
Every utterance is rendered by kit.eval_voices (16 kHz mono int16, one speech level, cached).

Kinds:
    plain questions;
    questions with a thinking pause: the two halves rendered separately (the first with a
        trailing comma, so it ends on a continuation, not a final, intonation), each cut to
        where it rises above -50 dBFS (the server's VAD floor), joined with exactly `pause_s`
        of digital silence (the bench's microphone adds its noise floor on top);
    backchannels ("mm-hmm", "yeah" ...) and a synthetic cough, played over a reply.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np

from kit.eval_voices import HELD_OUT_VOICES, SEEN_VOICES, SPEECH_RMS, VOICES, available, render
from kit.peers import Clip
from kit.rtc_client import to_48k
from kit.speech import RATE, concat, silence, voiced_bounds

PLAIN_QUESTIONS = [
    "What is the capital of Italy?",
    "How many legs does a spider have?",
    "Who painted the Mona Lisa?",
    "What is the tallest mountain in the world?",
    "How many minutes are in an hour?",
    "What language do people speak in Brazil?",
    "What is the largest planet in our solar system?",
    "How many continents are there?",
    "What is the freezing point of water?",
    "Who invented the telephone?",
    "Which animal is the largest on Earth?",
    "What is the speed of sound?",
]
PAUSE_QUESTIONS = [
    ("What is the capital of", "Japan?"),
    ("Can you tell me", "how far the moon is?"),
    ("I would like to know", "who wrote Hamlet."),
]
# Phrasings and (flite) voices nothing was tuned on, neither the end-of-turn rule's word lists nor
# its threshold: their talk-overs are reported apart.
HELD_OUT_PAUSE_QUESTIONS = [
    ("How many moons does", "Jupiter have?"),
    ("Who was the first person", "to walk on the moon?"),
    ("What's the weather going to be", "in Paris tomorrow?"),
]
# Written for the turn-taking state machine's rules without running them on these first, spoken by
# festival's voices, which no turn-taking figure used before: phrasings that stop on a dangling word
# or a question's lone auxiliary, and drawn-out backchannels. Reported apart ("fresh").
FRESH_PAUSE_QUESTIONS = [
    ("Tell me the population of", "Canada."),
    ("How long does", "a flight to Tokyo take?"),
    ("What is the boiling point of", "olive oil?"),
    ("What colour is", "the sky on Mars?"),
    ("Who is the author of", "Pride and Prejudice?"),
    ("How many wheels does", "a tricycle have?"),
]
FRESH_BACKCHANNELS = ["Mm hmm.", "Uh huh.", "Mhm.", "Mm-hmm, right."]
PAUSES_S = [0.4, 0.8, 1.0, 1.2]
BACKCHANNELS = ["Mm-hmm.", "Uh-huh.", "Yeah.", "Okay.", "Right."]
COUGH = "(cough)"


@dataclass
class TurnClip(Clip):
    voice: str = ""
    group: str = ""  # "seen" | "held-out" | "fresh" | "synthetic"
    kind: str = ""  # plain | pause | backchannel | cough
    pause_s: float = 0.0
    pause_at: float | None = None  # s from the clip's first sample to the start of the pause
    head_text: str = ""  # the words before the pause


def flite_available() -> bool:
    return shutil.which("flite") is not None


def voices(group: str) -> list[str]:
    if group == "seen":
        return list(SEEN_VOICES)
    if group == "fresh":
        return [v for v in VOICES["festival"] if available(v)]
    return list(HELD_OUT_VOICES) if flite_available() else []


def _group(voice: str) -> str:
    return "seen" if voice.startswith("espeak:") else "fresh" if voice.startswith("festival:") else "held-out"


def _clip(text: str, speech: np.ndarray, pre: float, post: float, **meta: object) -> TurnClip:
    first, last = voiced_bounds(speech)
    padded = concat(silence(pre), speech, silence(post))
    return TurnClip(text, padded, to_48k(padded), float(pre + first), float(pre + last), **meta)  # type: ignore[arg-type]


def plain(text: str, voice: str, pre: float = 0.2, post: float = 0.1) -> TurnClip:
    return _clip(text, render(text, voice), pre, post, voice=voice, group=_group(voice), kind="plain")


def with_pause(first: str, second: str, pause_s: float, voice: str, pre: float = 0.2, post: float = 0.1) -> TurnClip:
    a = render(first + ",", voice)
    b = render(second, voice)
    speech = concat(a, silence(pause_s), b)
    text = f"{first} {second}"
    return _clip(
        text,
        speech,
        pre,
        post,
        voice=voice,
        group=_group(voice),
        kind="pause",
        pause_s=pause_s,
        pause_at=pre + len(a) / RATE,
        head_text=first,
    )


def backchannel(text: str, voice: str) -> TurnClip:
    return _clip(text, render(text, voice), 0.0, 0.1, voice=voice, group=_group(voice), kind="backchannel")


def cough(seed: int = 0, seconds: float = 0.25) -> TurnClip:
    """A synthetic cough: band-passed (300-3000 Hz) noise, 8 ms attack, fast exponential decay,
    at SPEECH_RMS over its loud part (a cough close to the microphone is as loud as speech)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3000)] = 0
    burst = np.fft.irfft(spectrum, n)
    t = np.arange(n) / RATE
    envelope = np.minimum(t / 0.008, 1.0) * np.exp(-np.maximum(t - 0.008, 0.0) / 0.07)
    burst *= envelope
    loud = burst[: int(0.1 * RATE)]
    burst *= SPEECH_RMS / float(np.sqrt(np.mean(loud * loud)))
    samples = np.clip(np.round(burst), -32768, 32767).astype(np.int16)
    return _clip(COUGH, samples, 0.0, 0.1, voice="synthetic", group="synthetic", kind="cough")
