"""Voices and real recordings for the spoken evaluation set: speech that is NOT the reply voice.

Why: an evaluation spoken only by espeak (the family the developers tuned on) or by the product's
own reply voice (piper en_US-joe) measures how well the system knows those voices, not how well it
hears people. So questions are rendered in three synthetic families, reported per group:
    "espeak"   espeak-ng variants, the 'seen' group (SEEN_VOICES);
    "flite"    flite's voices (held out);
    "festival" festival's diphone and HTS voices (held out, `apt-get install festival
               festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k`);
and real human recordings with reference transcripts come from two Debian packages:
    pocketsphinx-testdata       a LibriVox audiobook excerpt, card names, digits, a robot command;
    asterisk-core-sounds-en-wav a professional voice's telephone prompts (8 kHz, resampled).
A missing engine, voice or package is skipped (available() is False, a source yields no
recordings), never an error. Everything is 16 kHz mono int16, converted with sox once, cut to
its audible part, its voiced part at one speech level, and cached under kit.speech.DATA.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.speech import DATA, RATE, read_wav, speak, voiced_bounds, write_wav

SEEN_VOICES = ["espeak:en-us", "espeak:en+f3", "espeak:en-gb", "espeak:en+m7"]
HELD_OUT_VOICES = ["flite:kal", "flite:awb", "flite:rms", "flite:slt"]
SPEECH_RMS = 3200.0  # voiced-part RMS every utterance is scaled to (about -20 dBFS, espeak's own level)
FLOOR_RMS = 103.0  # -50 dBFS: the server's VAD_MIN_LEVEL_DBFS; quieter frames never count as speech

VOICES: dict[str, list[str]] = {
    "espeak": list(SEEN_VOICES),
    "flite": list(HELD_OUT_VOICES),
    "festival": ["festival:cmu_us_slt_arctic_hts", "festival:kal_diphone", "festival:ked_diphone"],
}
FESTIVAL_VOICES = Path("/usr/share/festival/voices")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
ASTERISK_COUNT = 20  # prompts taken, a fixed stride through the sorted eligible names
ASTERISK_SECONDS = (2.0, 8.0)
# Raw (headerless 16 kHz s16le) test files whose words the package states outside a
# transcription file: goforward.raw is its grammar's `<move>` rule and the hypothesis
# pocketsphinx's own tests expect; the tidigits file's name spells its digits (z = zero), as in
# its python tests. numbers.raw and something.raw have no stated transcript and are left out.
POCKETSPHINX_RAW = {
    "goforward.raw": "go forward ten meters",
    "tidigits/dhd.2934z.raw": "two nine three four zero",
}


# Reference transcripts the packages get wrong, fixed before scoring: {recording id: [(wrong, right)]}.
REFERENCE_FIXES: dict[str, list[tuple[str, str]]] = {
    # pocketsphinx's transcription repeats an "a": the reader says "a more amiable woman".
    "pocketsphinx:librivox/sense_and_sensibility_01_austen_64kb-0920": [("a more a amiable", "a more amiable")],
    # asterisk's prompt list misspells the words the speaker says.
    "asterisk:unidentified-no-callback": [("Un-indentified", "Unidentified"), ("witheld", "withheld")],
}


def fixed_reference(recording_id: str, text: str) -> str:
    for wrong, right in REFERENCE_FIXES.get(recording_id, []):
        text = text.replace(wrong, right)
    return text


@dataclass
class Recording:
    id: str  # "<source>:<name>"
    source: str  # "pocketsphinx" | "asterisk" | "aishell" | "fleurs"
    text: str  # the reference transcript as the package states it
    samples: np.ndarray  # 16 kHz mono int16, the recording's own level and edges

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


@functools.cache
def _flite_voices() -> frozenset[str]:
    if shutil.which("flite") is None:
        return frozenset()
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
    return frozenset(out.split(":", 1)[-1].split())


def available(voice: str) -> bool:
    """Whether `voice`'s engine binary (and, for flite and festival, the voice itself) is installed."""
    engine, _, name = voice.partition(":")
    if engine == "espeak":
        return shutil.which("espeak-ng") is not None
    if engine == "flite":
        return name in _flite_voices()
    if engine == "festival":
        return shutil.which("text2wave") is not None and any(FESTIVAL_VOICES.glob(f"*/{name}"))
    return False


def _sox(src: Path, dst: Path, *src_format: str) -> None:
    """Convert `src` to a 16 kHz mono 16-bit wav at `dst`, atomically (a crash leaves no half file)."""
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.wav")
    subprocess.run(["sox", *src_format, str(src), "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)], check=True, capture_output=True)
    tmp.rename(dst)


def _festival(text: str, voice: str) -> np.ndarray:
    key = hashlib.sha1(f"festival|{text}|{voice}|{RATE}".encode()).hexdigest()[:16]
    path = DATA / f"festival-{key}.wav"
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            txt, raw = Path(tmp) / "in.txt", Path(tmp) / "raw.wav"
            txt.write_text(text)
            subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(raw), str(txt)], check=True, capture_output=True)
            _sox(raw, path)
    return read_wav(path)


def level(samples: np.ndarray) -> np.ndarray:
    """Cut to where it rises above FLOOR_RMS, the voiced part scaled to SPEECH_RMS (without clipping)."""
    first, last = voiced_bounds(samples, threshold=FLOOR_RMS)
    cut = samples[int(first * RATE) : int(last * RATE)].astype(np.float64)
    a, b = voiced_bounds(samples)
    loud = samples[int(a * RATE) : int(b * RATE)].astype(np.float64)
    gain = SPEECH_RMS / max(float(np.sqrt(np.mean(loud * loud))), 1.0)
    gain = min(gain, 30000.0 / max(float(np.abs(cut).max()), 1.0))
    return np.clip(np.round(cut * gain), -32768, 32767).astype(np.int16)


def _flite(text: str, voice: str) -> np.ndarray:
    key = hashlib.sha1(f"flite|{text}|{voice}|{RATE}".encode()).hexdigest()[:16]
    path = DATA / f"flite-{key}.wav"
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True)
            _sox(raw, path)
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


# Mandarin and Portuguese speakers: Kokoro's voices other than the one the assistant answers with
# (KokoroTTS's default), two to tune on and two held out.
KOKORO_SEEN_VOICES = ["kokoro:jm_kumo", "kokoro:jf_nezumi"]
KOKORO_HELD_OUT_VOICES = ["kokoro:jf_alpha", "kokoro:jf_tebukuro"]
_kokoro: dict[tuple[str, str], Any] = {}


def _kokoro_speech(text: str, voice: str, language: str) -> np.ndarray:
    """`text` in Kokoro's `voice` speaking `language`, 16 kHz (cached): the embedded voice's model, another speaker."""
    key = hashlib.sha1(f"kokoro|{text}|{voice}|{language}|{RATE}".encode()).hexdigest()[:16]
    path = DATA / f"kokoro-{key}.wav"
    if not path.exists():
        from pipeline.engines.kokoro_tts import RATE as KOKORO_RATE
        from pipeline.engines.kokoro_tts import KokoroTTS
        from pipeline.engines.voices import resample

        if (voice, language) not in _kokoro:
            _kokoro[(voice, language)] = tts = KokoroTTS(voice=voice, language=language)
            tts.load()
        pcm = resample(_kokoro[(voice, language)].synthesize(text), KOKORO_RATE, RATE)
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        write_wav(tmp, np.frombuffer(pcm, dtype=np.int16))
        tmp.rename(path)
    return read_wav(path)


def render(text: str, voice: str, language: str = "zh") -> np.ndarray:
    """`text` in `voice` ("espeak:", "flite:", "festival:" or "kokoro:" + name): 16 kHz int16, audible part, at
    SPEECH_RMS. `language` is the one a Kokoro voice speaks (Mandarin or Portuguese); the others speak English."""
    engine, _, name = voice.partition(":")
    if engine == "kokoro":
        return level(_kokoro_speech(text, name, language))
    if engine == "espeak":
        return level(speak(text, voice=name))
    if engine == "flite":
        return level(_flite(text, name))
    if engine == "festival":
        return level(_festival(text, name))
    raise ValueError(f"unknown voice {voice!r} (want espeak:, flite:, festival: or kokoro:)")


def pink_noise(n: int, seed: int) -> np.ndarray:
    """`n` samples of unit-RMS pink (1/f power) noise, 20 Hz to Nyquist, from a seeded Generator.

    Pink rather than white: room, fan and traffic noise fall off with frequency, so at a given SNR
    pink noise masks speech's strong low formants the way real rooms do, where white noise would
    mostly bury the weak high consonants. Shaped in the frequency domain (white Gaussian spectrum
    times 1/sqrt(f)); below 20 Hz is zeroed so inaudible rumble does not count as noise power.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum *= np.where(freqs >= 20.0, 1.0 / np.sqrt(np.maximum(freqs, 20.0)), 0.0)
    noise = np.fft.irfft(spectrum, n)
    return noise / max(float(np.sqrt(np.mean(noise * noise))), 1e-12)


def speech_power(samples: np.ndarray) -> float:
    """Mean power over the voiced span (kit.speech.voiced_bounds), or over all of it if none is voiced."""
    x = np.asarray(samples, dtype=np.float64)
    try:
        first, last = voiced_bounds(samples)
        x = x[int(first * RATE) : int(last * RATE)]
    except ValueError:
        pass
    return float(np.mean(x * x)) if len(x) else 0.0


def add_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`samples` plus seeded pink noise whose power over the whole clip is `snr_db` below the voiced part's, int16 clipped."""
    noise = pink_noise(len(samples), seed) * np.sqrt(speech_power(samples) / 10 ** (snr_db / 10))
    return to_int16(np.asarray(samples, dtype=np.float64) + noise)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def phone_band(x: np.ndarray) -> np.ndarray:
    """300-3400 Hz, as a narrowband phone call passes it."""
    spectrum = np.fft.rfft(x.astype(np.float64))
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    return to_int16(np.fft.irfft(spectrum, len(x)))


def reverb(x: np.ndarray, rt60: float = 0.7, seed: int = 0) -> np.ndarray:
    """A room: exponentially decaying noise as the impulse response, the direct sound first."""
    rng = np.random.default_rng(seed)
    n = int(rt60 * RATE)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    ir[0] = 1.0
    wet = np.fft.irfft(np.fft.rfft(x.astype(np.float64), len(x) + n) * np.fft.rfft(ir, len(x) + n), len(x) + n)
    return level(to_int16(wet / max(np.abs(wet).max(), 1) * 20000))


def faster(x: np.ndarray, factor: float) -> np.ndarray:
    """A faster speaker (pitch rises with it, as a tape played fast)."""
    n = int(len(x) / factor)
    return to_int16(np.interp(np.arange(n) * factor, np.arange(len(x)), x.astype(np.float64)))


def babble(x: np.ndarray, snr_db: float, seed: int, texts: list[str]) -> np.ndarray:
    """`x` under four other talkers (seen voices saying some of `texts`), `snr_db` below it."""
    rng = np.random.default_rng(seed)
    mix = np.zeros(len(x))
    for k in range(4):
        talker = render(texts[int(rng.integers(len(texts)))], SEEN_VOICES[k % len(SEEN_VOICES)]).astype(np.float64)
        mix += np.roll(np.resize(talker, len(x)), int(rng.integers(len(x))))
    mix *= np.sqrt(speech_power(x) / 10 ** (snr_db / 10) / max(float(np.mean(mix * mix)), 1e-9))
    return to_int16(x.astype(np.float64) + mix)


# The groups every evaluation item is spoken in. "noisy" is each synthetic voice in turn, with
# pink noise 15 dB under the speech over the whole clip (lead and tail silence included, as a
# room's noise would be); "seen" = espeak, every other group is held out.
GROUPS = ["espeak", "flite", "festival", "noisy"]
NOISY_SNR_DB = 15.0
LEAD_S, TAIL_S = 0.3, 0.3  # silence around each utterance


def group_voices(group: str) -> list[str]:
    pool = [v for g in VOICES for v in VOICES[g]] if group == "noisy" else VOICES[group]
    return [v for v in pool if available(v)]


def voice_for(group: str, index: int) -> str | None:
    """The voice that speaks item `index` of a group: the group's voices in turn."""
    pool = group_voices(group)
    return pool[index % len(pool)] if pool else None


def spoken(text: str, group: str, index: int, pause_after: str = "", pause_s: float = 1.0) -> tuple[str, np.ndarray] | None:
    """(voice, 16 kHz clip with LEAD_S/TAIL_S of silence) for item `index` of `group`; None if the group
    has no voice here. `pause_after`: a second part spoken after `pause_s` of silence (a thinking pause)."""
    voice = voice_for(group, index)
    if voice is None:
        return None
    parts = [np.zeros(int(LEAD_S * RATE), np.int16), render(text + ("," if pause_after else ""), voice)]
    if pause_after:
        parts += [np.zeros(int(pause_s * RATE), np.int16), render(pause_after, voice)]
    parts.append(np.zeros(int(TAIL_S * RATE), np.int16))
    clip = np.concatenate(parts)
    if group == "noisy":
        clip = add_noise(clip, NOISY_SNR_DB, seed=index)
    return voice, clip


def parse_transcription(text: str) -> dict[str, str]:
    """CMU Sphinx transcription lines `<s> words </s> (fileid)` -> {fileid: "words"}; markers like <sil> dropped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(.*?)\(([^()\s]+)\)\s*$", line.strip())
        if m:
            words = [w for w in m.group(1).split() if not (w.startswith("<") and w.endswith(">"))]
            if words:
                out[m.group(2)] = " ".join(words)
    return out


def _converted(src: Path, *src_format: str) -> np.ndarray:
    stat = src.stat()
    key = hashlib.sha1(f"rec|{src}|{stat.st_size}|{stat.st_mtime_ns}|{RATE}".encode()).hexdigest()[:16]
    path = DATA / f"rec-{key}.wav"
    if not path.exists():
        _sox(src, path, *src_format)
    return read_wav(path)


def pocketsphinx_recordings(root: Path = POCKETSPHINX) -> list[Recording]:
    found: list[Recording] = []
    for folder, listing in [("librivox", "transcription"), ("cards", "cards.transcription")]:
        path = root / folder / listing
        if path.exists():
            for fileid, words in sorted(parse_transcription(path.read_text()).items()):
                wav = root / folder / f"{fileid}.wav"
                if wav.exists():
                    found.append(Recording(f"pocketsphinx:{folder}/{fileid}", "pocketsphinx", words, _converted(wav)))
    raw_format = ("-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1", "-L")
    for name, words in POCKETSPHINX_RAW.items():
        if (root / name).exists():
            found.append(
                Recording(f"pocketsphinx:{Path(name).with_suffix('')}", "pocketsphinx", words, _converted(root / name, *raw_format))
            )
    return found


def asterisk_prompts(listing: str) -> dict[str, str]:
    """`name: text` lines -> {name: text}, keeping only ordinary sentences of four or more words:
    no [sound] / <beep> / (note) markers, no '...' fragments, no digits or keypad symbols."""
    out: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, text = line.partition(":")
        text = " ".join(text.split())
        if not sep or line.startswith(";") or re.search(r"[\[\]<>()0-9*#@]|\.\.\.", text) or len(text.split()) < 4:
            continue
        out[name.strip()] = text
    return out


def asterisk_recordings(root: Path = ASTERISK, listing: Path = ASTERISK_TEXT, count: int = ASTERISK_COUNT) -> list[Recording]:
    """A fixed stride through the sorted eligible prompts of ASTERISK_SECONDS length: no hand-picking."""
    if not listing.exists() or not root.is_dir():
        return []
    eligible: list[tuple[str, str, Path]] = []
    for name, text in sorted(asterisk_prompts(gzip.decompress(listing.read_bytes()).decode("utf-8", "replace")).items()):
        wav = root / f"{name}.wav"
        if wav.exists():
            with wave.open(str(wav), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            if ASTERISK_SECONDS[0] <= seconds <= ASTERISK_SECONDS[1]:
                eligible.append((name, text, wav))
    picked = eligible[:: max(1, len(eligible) // count)][:count]
    return [Recording(f"asterisk:{name}", "asterisk", text, _converted(wav)) for name, text, wav in picked]


MANDARIN = Path(__file__).resolve().parent / "data" / "zh"


def mandarin_recordings(root: Path = MANDARIN) -> list[Recording]:
    """The real Mandarin recordings kept in kit/data/zh (see its README), at 16 kHz."""
    found = []
    for line in (root / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        name, _speaker, text = line.split("\t")
        found.append(Recording(f"aishell:{name.removesuffix('.wav')}", "aishell", text, _converted(root / name)))
    return found


PORTUGUESE = Path(__file__).resolve().parent / "data" / "pt"


def _decoded(path: Path) -> np.ndarray:
    """Any file PyAV reads (the Opus recordings kept here) as 16 kHz mono int16."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        frames = [out for frame in container.decode(stream) for out in resampler.resample(frame)]
        frames += resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def portuguese_recordings(root: Path = PORTUGUESE) -> list[Recording]:
    """The real Brazilian Portuguese recordings kept in kit/data/pt (see its README), at 16 kHz."""
    found = []
    for line in (root / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        name, text = line.split("\t")
        found.append(Recording(f"fleurs:{name.removesuffix('.ogg')}", "fleurs", text, _decoded(root / name)))
    return found


def recordings() -> list[Recording]:
    """Every real recording available here, pocketsphinx's then asterisk's."""
    return pocketsphinx_recordings() + asterisk_recordings()


def main() -> None:
    for group, voices in VOICES.items():
        print(f"{group:9s} " + "  ".join(f"{v}{'' if available(v) else ' (missing)'}" for v in voices))
    recs = recordings()
    for source in ("pocketsphinx", "asterisk"):
        mine = [r for r in recs if r.source == source]
        print(f"{source:13s} {len(mine):3d} recordings, {sum(r.seconds for r in mine):6.1f} s")
    print(f"{'total':13s} {len(recs):3d} recordings, {sum(r.seconds for r in recs):6.1f} s")


if __name__ == "__main__":
    main()
