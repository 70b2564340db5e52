"""kit.eval_voices: voices render, noise hits its SNR, recordings come with their transcripts."""

from __future__ import annotations

import numpy as np
import pytest

from kit import eval_voices as ev
from kit.speech import RATE


@pytest.mark.parametrize("group", sorted(ev.VOICES))
def test_render_gives_16k_int16_speech(group: str) -> None:
    voice = ev.VOICES[group][0]
    if not ev.available(voice):
        pytest.skip(f"{voice} not installed")
    samples = ev.render("How many legs does a spider have?", voice)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert 0.5 * RATE < len(samples) < 6 * RATE  # trimmed: a short question, not seconds of silence
    assert np.array_equal(samples, ev.render("How many legs does a spider have?", voice))  # cached


def test_unknown_voice() -> None:
    assert not ev.available("piper:en_US-joe-medium")
    assert not ev.available("festival:no_such_voice")
    with pytest.raises(ValueError):
        ev.render("hello", "piper:en_US-joe-medium")


def _speechlike(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 3000 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.concatenate([np.zeros(RATE // 4), tone, np.zeros(RATE // 4)]).astype(np.int16)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_add_noise_hits_snr(snr_db: float) -> None:
    clean = _speechlike()
    noisy = ev.add_noise(clean, snr_db, seed=3)
    assert noisy.dtype == np.int16 and len(noisy) == len(clean)
    noise = noisy.astype(np.float64) - clean
    measured = 10 * np.log10(ev.speech_power(clean) / np.mean(noise * noise))
    assert abs(measured - snr_db) < 0.5


def test_add_noise_is_seeded_and_pink() -> None:
    clean = _speechlike()
    assert np.array_equal(ev.add_noise(clean, 10, seed=1), ev.add_noise(clean, 10, seed=1))
    assert not np.array_equal(ev.add_noise(clean, 10, seed=1), ev.add_noise(clean, 10, seed=2))
    power = np.abs(np.fft.rfft(ev.pink_noise(4 * RATE, seed=0))) ** 2
    freqs = np.fft.rfftfreq(4 * RATE, 1 / RATE)
    low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 1000) & (freqs < 2000)].mean()
    assert 5 < low / high < 20  # 1/f: a decade up is ten times less power per Hz


def test_parse_transcription() -> None:
    text = "<s> ten of clubs  </s> (001)\n<s> go <sil> forward </s> (dir/goforward)\nnot a transcript line\n\n"
    assert ev.parse_transcription(text) == {"001": "ten of clubs", "dir/goforward": "go forward"}


def test_asterisk_prompt_filter() -> None:
    listing = "; comment\nbeep: [this is a simple beep tone]\na: Please press 1 now.\nb: To leave the conference...\nc: Your message has been saved.\nd: Goodbye."
    assert ev.asterisk_prompts(listing) == {"c": "Your message has been saved."}


def test_recordings() -> None:
    if not ev.POCKETSPHINX.is_dir() and not ev.ASTERISK.is_dir():
        pytest.skip("neither pocketsphinx-testdata nor asterisk-core-sounds-en-wav is installed")
    recs = ev.recordings()
    assert recs and {r.source for r in recs} <= {"pocketsphinx", "asterisk"}
    for r in recs:
        assert r.text.strip() and r.samples.dtype == np.int16 and r.samples.ndim == 1 and r.seconds > 0.5
    if ev.ASTERISK_TEXT.exists():
        assert all(2.0 <= r.seconds <= 8.0 for r in recs if r.source == "asterisk")
