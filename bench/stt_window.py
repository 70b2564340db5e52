"""Whisper's encoder window: WER and time per utterance, `full` (30 s) vs `fit` (fitted to the utterance).

    .venv/bin/python -m bench.stt_window [--quick] [--variants full,fit,...] [--groups seen,heldout,real]

The embedded STT (LocalSTT, tiny.en, int8, the product's threads) transcribes short spoken
questions with each variant, one clip at a time, all variants on the same clip back to back
(their order rotated from clip to clip so machine load drifts over all of them alike):

- full      STT_WINDOW=full: faster-whisper's transcribe(), 3000 mel frames (30 s)
- fit       STT_WINDOW=fit: the utterance + 1 s margin, in whole seconds (>= 3 s), plus the
            encoder output of padding behind it (the product's fitted path)
- fit-m50 / fit-m200: the same with a 0.5 s / 2 s margin
- raw-m100  research only: the fitted window's encoder output alone, no padding tail behind it
            (whisper.cpp's plain audio_ctx), to show why the product splices the tail
- full-b1 / fit-b1: greedy decoding (beam 1) instead of the product's beam 5

Speech (the "seen" voices are those the STT tests and the fitted path were tried on while it
was written; every other voice is held out):

- seen: espeak-ng en-us, en+f3, en-gb, en+m7 (160 wpm), 30 questions each; en-us + white and
  en+f3 + pink noise at 15 dB SNR
- heldout: flite kal (8 kHz), awb, rms, slt; festival kal_diphone, ked_diphone,
  cmu_us_slt_arctic_hts; flite awb + white and festival HTS slt + pink noise at 15 dB SNR
- real: human recordings shipped in Debian packages: pocketsphinx-testdata (5 LibriVox
  sentences, "go forward ten meters", a TIDIGITS digit string, 5 card names) and
  asterisk-core-sounds-en-wav (30 prompts, Allison Smith, 8 kHz telephone audio, with the
  package's own transcripts)

Every clip gets 0.3 s of silence before and 0.2 s after it, like a VAD-cut utterance, and is
resampled to 16 kHz with sox. WER after normalisation (bench.answers.normalise: lower case, no
punctuation, numbers spelt out; plus ordinals such as 2nd -> second). Time is wall clock per
transcription and the process CPU time it used (both cores' threads together), each variant
warmed up first.

Needs: espeak-ng, sox, flite, festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts,
pocketsphinx-testdata, asterisk-core-sounds-en asterisk-core-sounds-en-wav (Debian packages);
missing sources are skipped with a note. Rendered clips are cached in tests/.data/stt_window/.
Prints tables; writes bench/results/stt_window-<timestamp>.json (every transcript).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.answers import edit_distance, normalise, table  # noqa: E402
from kit.speech import read_wav, speak  # noqa: E402
from pipeline.engines.local_stt import FIT_MARGIN_FRAMES, FULL_FRAMES, LocalSTT, _Fitted, fitted_frames  # noqa: E402
from pipeline.engines.workers import CancelToken, available_cores  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "tests" / ".data" / "stt_window"
RATE = 16000
LEAD_S, TAIL_S = 0.3, 0.2
SNR_DB = 15.0

QUESTIONS = [
    "What is the capital of Italy?",
    "Who painted the Mona Lisa?",
    "How many legs does a spider have?",
    "What is seven times eight?",
    "Is the sun a star?",
    "How many days are in a leap year?",
    "Who wrote Pride and Prejudice?",
    "What is the boiling point of water in Celsius?",
    "Can penguins fly?",
    "What is twelve divided by four?",
    "Which planet is closest to the sun?",
    "How many minutes are in an hour?",
    "Is a tomato a fruit?",
    "What is the largest ocean on Earth?",
    "Who invented the telephone?",
    "What is fifteen plus twenty-seven?",
    "What language do people speak in Mexico?",
    "How far away is the moon?",
    "Do whales breathe air?",
    "What is the square root of eighty-one?",
    "Who was the first person to walk on the moon?",
    "What year did the Second World War end?",
    "How many sides does a hexagon have?",
    "Is Mount Everest the tallest mountain in the world?",
    "What is the chemical symbol for iron?",
    "What is one hundred minus thirty-five?",
    "Which animal is known as the king of the jungle?",
    "How many strings does a violin have?",
    "Are bats blind?",
    "What is the freezing point of water in Fahrenheit?",
]

ESPEAK = ["en-us", "en+f3", "en-gb", "en+m7"]
FLITE = ["kal", "awb", "rms", "slt"]
FESTIVAL = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
# (source voice, noise colour): 15 dB SNR copies
NOISY_SEEN = [("espeak:en-us", "white"), ("espeak:en+f3", "pink")]
NOISY_HELDOUT = [("flite:awb", "white"), ("festival:cmu_us_slt_arctic_hts", "pink")]

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
N_ASTERISK = 30


@dataclass
class Clip:
    group: str  # seen | heldout | real
    voice: str  # e.g. espeak:en-us, flite:slt+white, real:librivox
    text: str  # reference
    samples: np.ndarray  # int16 16 kHz, padded
    noise: str = ""  # white | pink (15 dB SNR) | "" (clean)


@dataclass
class Variant:
    name: str
    window: str
    beam: int
    margin: int = FIT_MARGIN_FRAMES
    splice: bool = True


VARIANTS = {
    v.name: v
    for v in [
        Variant("full", "full", 5),
        Variant("fit", "fit", 5),
        Variant("fit-m50", "fit", 5, margin=50),
        Variant("fit-m200", "fit", 5, margin=200),
        Variant("raw-m100", "fit", 5, splice=False),
        Variant("full-b1", "full", 1),
        Variant("fit-b1", "fit", 1),
    ]
}


def say(text: str = "") -> None:
    print(text, flush=True)


# ---------- speech ----------


def _cached(key: str, render: Callable[[Path], None]) -> np.ndarray:
    """int16 16 kHz mono samples rendered once by `render(path of a wav at any rate)`."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.wav"
    if not path.exists():
        raw = path.with_suffix(".raw.wav")
        render(raw)
        tmp = path.with_suffix(".tmp.wav")
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)], check=True, capture_output=True)
        raw.unlink()
        tmp.rename(path)
    return read_wav(path)


def _flite(voice: str, text: str) -> np.ndarray:
    return _cached(f"flite|{voice}|{text}", lambda p: subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(p)], check=True))


def _festival(voice: str, text: str) -> np.ndarray:
    def render(p: Path) -> None:
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(p)], input=text.encode(), check=True, capture_output=True)

    return _cached(f"festival|{voice}|{text}", render)


def _file(path: Path, raw_rate: int | None = None) -> np.ndarray:
    def render(p: Path) -> None:
        src = ["-t", "raw", "-r", str(raw_rate), "-e", "signed", "-b", "16", "-c", "1", str(path)] if raw_rate else [str(path)]
        subprocess.run(["sox", *src, str(p)], check=True, capture_output=True)

    return _cached(f"file|{path}|{raw_rate}", render)


def pad(speech: np.ndarray) -> np.ndarray:
    lead, tail = np.zeros(int(LEAD_S * RATE), np.int16), np.zeros(int(TAIL_S * RATE), np.int16)
    return np.concatenate([lead, np.asarray(speech, np.int16), tail])


def add_noise(clip: np.ndarray, speech: np.ndarray, colour: str, seed: int) -> np.ndarray:
    """`clip` plus white or pink noise at SNR_DB below the speech's mean power."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(len(clip))
    if colour == "pink":  # 1/f power: scale the spectrum by 1/sqrt(f)
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(len(white))
        f[0] = f[1]
        noise = np.fft.irfft(spectrum / np.sqrt(f), len(white))
    else:
        noise = white
    speech_power = float(np.mean(speech.astype(np.float64) ** 2))
    noise *= np.sqrt(speech_power / 10 ** (SNR_DB / 10) / np.mean(noise**2))
    return np.clip(clip + noise, -32768, 32767).astype(np.int16)


def _have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def synthetic_clips(questions: Sequence[str], notes: list[str], quick: bool) -> list[Clip]:
    clips: list[Clip] = []
    voices: list[tuple[str, str, Callable[[str], np.ndarray]]] = []
    espeak = ESPEAK[:2] if quick else ESPEAK
    voices += [("seen", f"espeak:{v}", lambda t, v=v: speak(t, voice=v)) for v in espeak]
    if _have("flite"):
        voices += [("heldout", f"flite:{v}", lambda t, v=v: _flite(v, t)) for v in (FLITE[1:3] if quick else FLITE)]
    else:
        notes.append("flite not installed: its voices skipped")
    if _have("text2wave"):
        voices += [("heldout", f"festival:{v}", lambda t, v=v: _festival(v, t)) for v in (FESTIVAL[2:] if quick else FESTIVAL)]
    else:
        notes.append("festival not installed: its voices skipped")
    speech: dict[tuple[str, str], np.ndarray] = {}
    for group, voice, render in voices:
        for q in questions:
            try:
                s = render(q)
            except (subprocess.CalledProcessError, OSError) as exc:
                notes.append(f"{voice}: could not render ({exc}); skipped")
                break
            speech[(voice, q)] = s
            clips.append(Clip(group, voice, q, pad(s)))
    for group, noisy in (("seen", NOISY_SEEN), ("heldout", NOISY_HELDOUT)):
        for voice, colour in noisy[:1] if quick else noisy:
            for i, q in enumerate(questions):
                if (voice, q) in speech:
                    s = speech[(voice, q)]
                    clips.append(Clip(group, f"{voice}+{colour}", q, add_noise(pad(s), s, colour, seed=i), colour))
    return clips


def _sphinx_ref(line: str) -> tuple[str, str]:
    m = re.match(r"\s*<s>(.*)</s>\s*\((.*)\)", line)
    assert m, line
    return m.group(2).strip(), m.group(1).strip()


def real_clips(notes: list[str], quick: bool) -> list[Clip]:
    clips: list[Clip] = []
    if POCKETSPHINX.is_dir():
        for sub, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
            for line in (POCKETSPHINX / sub / listing).read_text().splitlines():
                name, ref = _sphinx_ref(line)
                clips.append(Clip("real", f"real:{sub}", ref, pad(_file(POCKETSPHINX / sub / f"{name}.wav"))))
        clips.append(Clip("real", "real:sphinx-misc", "go forward ten meters", pad(_file(POCKETSPHINX / "goforward.raw", 16000))))
        clips.append(
            Clip("real", "real:sphinx-misc", "two nine three four zero", pad(_file(POCKETSPHINX / "tidigits" / "dhd.2934z.raw", 16000)))
        )
    else:
        notes.append("pocketsphinx-testdata not installed: its recordings skipped")
    if ASTERISK.is_dir() and ASTERISK_TEXT.is_file():
        prompts = []
        for line in gzip.open(ASTERISK_TEXT, "rt", encoding="utf-8", errors="replace"):
            name, sep, ref = line.partition(": ")
            ref = ref.strip()
            if not sep or name.startswith(";") or "[" in ref or "/" in name or not 4 <= len(ref.split()) <= 14:
                continue
            if (ASTERISK / f"{name}.wav").is_file():
                prompts.append((name, ref))
        n = 8 if quick else N_ASTERISK
        step = max(1, len(prompts) // n)
        for name, ref in prompts[::step][:n]:  # spread over the alphabet: every kind of prompt
            clips.append(Clip("real", "real:asterisk-allison", ref, pad(_file(ASTERISK / f"{name}.wav"))))
    else:
        notes.append("asterisk-core-sounds-en(-wav) not installed: its recordings skipped")
    return clips


# ---------- scoring ----------

_ORDINALS = dict(enumerate("zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()))


def words(text: str) -> list[str]:
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _ORDINALS.get(int(m.group(1)), m.group(1)), text.lower())
    return normalise(text)


def repeats(ref: list[str], hyp: list[str]) -> bool:
    """A hallucinated loop: far more words than said (the failure of short encoder windows)."""
    return len(hyp) >= max(len(ref) + 4, int(1.5 * len(ref)))


# ---------- the engines ----------


class RawFitSTT(LocalSTT):
    """Research variant: the fitted window's encoder output alone (plain audio_ctx), no padding tail."""

    def _transcribe_fitted(self, token: CancelToken, audio: np.ndarray, fitted: _Fitted) -> str | None:
        assert self._loaded is not None
        model = self._loaded.model
        features = model.feature_extractor(audio)
        content = features.shape[-1] - 1
        frames = fitted_frames(content, self.fit_margin_frames)
        if frames >= FULL_FRAMES:
            return None
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        window[0, :, :content] = features[:, :content]
        return self._decode(token, np.asarray(model.encode(window), dtype=np.float32), fitted)


def make_engine(v: Variant, threads: int) -> LocalSTT:
    cls = LocalSTT if v.splice else RawFitSTT
    return cls(beam_size=v.beam, threads=threads, window=v.window, fit_margin_frames=v.margin)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def transcribe(engine: LocalSTT, samples: np.ndarray) -> tuple[str, float, float]:
    audio = samples.astype(np.float32) / 32768.0
    c0, t0 = cpu_s(), time.perf_counter()
    text = engine._transcribe(CancelToken(), audio)
    return text, (time.perf_counter() - t0) * 1000, (cpu_s() - c0) * 1000


# ---------- run and report ----------


def pct(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarise(rows: list[dict[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in variants:
        errors = sum(r["results"][name]["errors"] for r in rows)
        nwords = sum(r["words"] for r in rows)
        out[name] = {
            "wer": errors / nwords if nwords else 0.0,
            "errors": errors,
            "words": nwords,
            "clips": len(rows),
            "empty": sum(1 for r in rows if not r["results"][name]["text"].strip()),
            "loops": sum(1 for r in rows if r["results"][name]["loop"]),
            "same_as_full": sum(1 for r in rows if r["results"][name]["norm"] == r["results"]["full"]["norm"])
            if "full" in variants
            else None,
        }
    return out


def report(rows: list[dict[str, Any]], variants: Sequence[str], meta: dict[str, Any]) -> list[str]:
    tables = []
    cols = list(variants)

    def wer_row(label: str, sel: list[dict[str, Any]]) -> list[str]:
        s = summarise(sel, cols)
        cells = [label, str(len(sel))]
        for name in cols:
            e = s[name]
            extra = []
            if e["empty"]:
                extra.append(f"{e['empty']}E")
            if e["loops"]:
                extra.append(f"{e['loops']}L")
            cells.append(f"{100 * e['wer']:.1f}" + (f" ({','.join(extra)})" if extra else ""))
        return cells

    voices = list(dict.fromkeys(r["voice"] for r in rows))
    per_voice = [wer_row(v, [r for r in rows if r["voice"] == v]) for v in voices]
    tables.append(table(["voice", "clips", *[f"{c} WER%" for c in cols]], per_voice, "WER % per voice (E: empty transcripts, L: loops)"))

    groups = [
        ("seen: espeak clean", lambda r: r["group"] == "seen" and not r["noise"]),
        ("seen: espeak 15 dB noise", lambda r: r["group"] == "seen" and r["noise"]),
        ("held-out: flite/festival clean", lambda r: r["group"] == "heldout" and not r["noise"]),
        ("held-out: flite/festival 15 dB", lambda r: r["group"] == "heldout" and r["noise"]),
        ("held-out: real human", lambda r: r["group"] == "real"),
        ("held-out: all", lambda r: r["group"] != "seen"),
        ("all", lambda r: True),
    ]
    group_rows = [wer_row(label, sel) for label, f in groups if (sel := [r for r in rows if f(r)])]
    tables.append(table(["set", "clips", *[f"{c} WER%" for c in cols]], group_rows, "WER % by set"))

    if "full" in cols:
        same = []
        for label, f in groups:
            sel = [r for r in rows if f(r)]
            if sel:
                s = summarise(sel, cols)
                same.append([label, str(len(sel)), *[f"{100 * s[c]['same_as_full'] / len(sel):.0f}" for c in cols if c != "full"]])
        tables.append(
            table(
                ["set", "clips", *[f"{c} %" for c in cols if c != "full"]],
                same,
                "Transcript identical to `full` after normalisation, % of clips",
            )
        )

    timing = []
    full_med = statistics.median(r["results"]["full"]["ms"] for r in rows) if "full" in cols else None
    for name in cols:
        ms = [r["results"][name]["ms"] for r in rows]
        cpu = [r["results"][name]["cpu_ms"] for r in rows]
        win = [r["results"][name]["frames"] for r in rows]
        timing.append(
            [
                name,
                f"{statistics.median(ms):.0f}",
                f"{pct(ms, 0.9):.0f}",
                f"{max(ms):.0f}",
                f"{statistics.mean(ms):.0f}",
                f"{statistics.median(cpu):.0f}",
                f"{full_med / statistics.median(ms):.1f}x" if full_med else "-",
                f"{statistics.median(win):.0f}",
            ]
        )
    tables.append(
        table(
            ["variant", "ms p50", "p90", "max", "mean", "CPU ms p50", "speed-up p50", "frames p50"],
            timing,
            f"Time per utterance, all {len(rows)} clips (median clip {meta['clip_s_p50']:.1f} s; {meta['threads']} threads; "
            f"load avg {meta['load_start'][0]:.2f} -> {meta['load_end'][0]:.2f})",
        )
    )
    by_group = []
    for label, f in [
        ("seen", lambda r: r["group"] == "seen"),
        ("heldout", lambda r: r["group"] == "heldout"),
        ("real", lambda r: r["group"] == "real"),
    ]:
        sel = [r for r in rows if f(r)]
        if sel:
            by_group.append([label, str(len(sel)), *[f"{statistics.median(r['results'][c]['ms'] for r in sel):.0f}" for c in cols]])
    tables.append(table(["set", "clips", *[f"{c} ms" for c in cols]], by_group, "Median ms per utterance by set"))
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stt_window", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 questions, fewer voices: a couple of minutes")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--groups", default="seen,heldout,real", help="comma-separated: seen, heldout, real")
    parser.add_argument("--threads", type=int, default=0, help="STT threads (default 0: all available cores, as the product)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "full" not in variants:
        variants.insert(0, "full")  # the reference every other is compared with
    groups = {g.strip() for g in args.groups.split(",")}
    threads = args.threads if args.threads > 0 else available_cores()

    notes: list[str] = []
    questions = QUESTIONS[:8] if args.quick else QUESTIONS
    say("rendering speech ...")
    clips = [c for c in synthetic_clips(questions, notes, args.quick) if c.group in groups]
    if "real" in groups:
        clips += real_clips(notes, args.quick)
    say(f"{len(clips)} clips; loading {len(variants)} engines ({threads} threads) ...")
    engines = {name: make_engine(VARIANTS[name], threads) for name in variants}
    for e in engines.values():
        e._loaded = e._load()
        warm = pad(speak("Hello there, how are you?"))
        transcribe(e, warm)
        transcribe(e, warm)

    meta: dict[str, Any] = {
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "clip_s_p50": statistics.median(len(c.samples) / RATE for c in clips),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    for i, clip in enumerate(clips):
        ref = words(clip.text)
        content = len(clip.samples) // 160
        row: dict[str, Any] = {
            "group": clip.group,
            "voice": clip.voice,
            "noise": clip.noise,
            "ref": clip.text,
            "words": len(ref),
            "seconds": len(clip.samples) / RATE,
        }
        results: dict[str, Any] = {}
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for name in order:
            v = VARIANTS[name]
            text, ms, cpu = transcribe(engines[name], clip.samples)
            hyp = words(text)
            frames = FULL_FRAMES if v.window == "full" else min(FULL_FRAMES, fitted_frames(content, v.margin))
            results[name] = {
                "text": text,
                "norm": " ".join(hyp),
                "errors": edit_distance(ref, hyp),
                "loop": repeats(ref, hyp),
                "ms": round(ms, 1),
                "cpu_ms": round(cpu, 1),
                "frames": frames,
            }
        row["results"] = {name: results[name] for name in variants}
        rows.append(row)
        diffs = [n for n in variants if results[n]["norm"] != results["full"]["norm"]]
        say(
            f"[{i + 1}/{len(clips)}] {clip.voice:<34} {results['full']['ms']:5.0f}/{results.get('fit', results['full'])['ms']:4.0f} ms "
            f"{clip.text[:40]!r} -> {results['full']['text'][:50]!r}" + (f"  differs: {diffs}" if diffs else "")
        )
    meta["load_end"] = os.getloadavg()
    meta["run_s"] = round(time.monotonic() - t_start, 1)

    tables = report(rows, variants, meta)
    say("=" * 100)
    say("\n\n".join(tables))
    for label in [v for v in variants if v != "full"]:
        shown = [r for r in rows if r["results"][label]["norm"] != r["results"]["full"]["norm"]]
        if shown and label == "fit":
            say(f"\n{label} vs full where they differ ({len(shown)}):")
            for r in shown:
                f, x = r["results"]["full"], r["results"][label]
                say(
                    f"  {r['voice']}: {r['ref']!r}\n     full {f['errors']} err {f['text']!r}\n     {label:4} {x['errors']} err {x['text']!r}"
                )
    if notes:
        say("\nNotes:\n" + "\n".join(f"  - {n}" for n in notes))
    say(f"\n{len(rows)} clips in {meta['run_s']:.0f} s; load average {meta['load_start']} -> {meta['load_end']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"stt_window-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "variants": variants, "notes": notes, "tables": tables, "rows": rows}, indent=1))
    say(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
