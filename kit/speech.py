"""Test speech: espeak-ng renders sentences to 16 kHz mono int16, cached per text.

A voice other than the product's TTS voice, so STT is not tested on its own
output. Helpers here build the padded test signals and measure them.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import wave
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / ".cache" / "speech"  # rendered clips, git-ignored
RATE = 16000

# Questions and the same questions cut off mid-phrase: what an end-of-turn model must tell apart.
FINISHED_AND_CUT_OFF = [
    ("What is the capital of France?", "What is the capital of"),
    ("I would like to order a pizza.", "I would like to order a"),
    ("How many legs does a spider have?", "How many legs does a"),
    ("Can you tell me a joke about computers?", "Can you tell me a joke about"),
    ("What time does the train to London leave?", "What time does the train to"),
    ("Please set an alarm for seven tomorrow morning.", "Please set an alarm for"),
    ("Who wrote the book Pride and Prejudice?", "Who wrote the book"),
    ("What's the weather going to be like today?", "What's the weather going to be like"),
    ("Remind me to call my mother this evening.", "Remind me to call my"),
    ("How do I make a cup of green tea?", "How do I make a cup of"),
]


def speak(text: str, rate: int = RATE, voice: str = "en-us", wpm: int = 160) -> np.ndarray:
    """int16 mono samples of `text` spoken by espeak-ng at `rate` Hz (cached)."""
    DATA.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{text}|{rate}|{voice}|{wpm}".encode()).hexdigest()[:16]
    path = DATA / f"speech-{key}.wav"
    if not path.exists():
        raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], check=True, capture_output=True).stdout
        tmp = path.with_suffix(".tmp.wav")
        subprocess.run(["sox", "-t", "wav", "-", "-r", str(rate), "-c", "1", "-b", "16", str(tmp)], input=raw, check=True)
        tmp.rename(path)
    return read_wav(path)


def read_wav(path: Path | str) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def write_wav(path: Path | str, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return Path(path)


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    write_wav(buf, samples, rate)  # type: ignore[arg-type]
    return buf.getvalue()


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(round(seconds * rate)), dtype=np.int16)


def noise(seconds: float, rms: float = 60.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Low-level background noise (about -55 dBFS by default)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, rms, int(round(seconds * rate))), -32768, 32767).astype(np.int16)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int16) for p in parts])


def voiced_bounds(samples: np.ndarray, rate: int = RATE, threshold: float = 300.0, win_ms: int = 10) -> tuple[float, float]:
    """(first, last) time in s where 10 ms RMS exceeds `threshold`: the ground truth of a signal."""
    win = rate * win_ms // 1000
    n = len(samples) // win
    rms = np.sqrt(np.mean(samples[: n * win].astype(np.float64).reshape(n, win) ** 2, axis=1))
    loud = np.nonzero(rms > threshold)[0]
    if len(loud) == 0:
        raise ValueError("no voiced audio")
    return loud[0] * win / rate, (loud[-1] + 1) * win / rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(samples, dtype=np.float64) ** 2))) if len(samples) else 0.0
