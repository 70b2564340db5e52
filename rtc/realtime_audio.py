"""A Realtime client's audio: its formats in and out, and its chunks as frames in media time.

The OpenAI Realtime protocol carries audio as base64 chunks of any length and no timestamps:
`audio/pcm` (int16 at 24 kHz) or G.711 `audio/pcmu` / `audio/pcma` (8 kHz, telephony). The
pipeline wants 20 ms 16 kHz frames in media time on the monotonic clock, like the WebRTC path
gives it. `ChunkFramer` is that clock: pure, with the time passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

from rtc.pcm import FRAME_BYTES, FRAME_S, RATE, PcmFrame

AudioFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
RATES: dict[str, int] = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}

LAG_S = 0.2  # a client this far behind the wall clock has gone quiet: the gap is silence
MAX_GAP_S = 5.0  # a longer gap is not filled, the timeline jumps (as RTP's resync does)


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.uint8)
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.uint8) ^ 0x55
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, (codes & 0x0F).astype(np.int32)
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


ULAW, ALAW = _ulaw_table(), _alaw_table()
# Encoding is a lookup by the sample's top 14 bits: the code whose decoded value is nearest.
_GRID = np.arange(-(1 << 15), 1 << 15, 4, dtype=np.int32)


def _encoder(table: np.ndarray) -> np.ndarray:
    order = np.argsort(table)
    values = table[order].astype(np.int32)
    i = np.clip(np.searchsorted(values, _GRID), 1, len(values) - 1)
    nearer = np.where(_GRID - values[i - 1] <= values[i] - _GRID, i - 1, i)
    return order[nearer].astype(np.uint8)


_ULAW_ENC, _ALAW_ENC = _encoder(ULAW), _encoder(ALAW)


def g711_decode(data: bytes, fmt: AudioFormat) -> np.ndarray:
    return (ULAW if fmt == "audio/pcmu" else ALAW)[np.frombuffer(data, dtype=np.uint8)]


def g711_encode(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    index = (samples.astype(np.int32) + (1 << 15)) >> 2
    return (_ULAW_ENC if fmt == "audio/pcmu" else _ALAW_ENC)[index].tobytes()


class Converter:
    """Bytes of one format to int16 samples at another rate (or back): stateful, so chunks join cleanly."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate_out) if rate_in != rate_out else None
        self._rate_in = rate_in

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or len(samples) == 0:
            return samples
        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate_in
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


class Decoder:
    """A client's input chunks (bytes in its format) to 16 kHz int16 bytes."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._convert = Converter(RATES[fmt], RATE)

    def __call__(self, data: bytes) -> bytes:
        if self.format == "audio/pcm":
            if len(data) % 2:
                raise ValueError("audio/pcm must be whole int16 samples")
            samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
        else:
            samples = g711_decode(data, self.format)
        return self._convert(samples).astype("<i2").tobytes()


class Encoder:
    """The reply's frames (int16 at 24 kHz, the output's rate) to bytes of the client's format."""

    def __init__(self, fmt: AudioFormat, rate_in: int) -> None:
        self.format = fmt
        self._convert = Converter(rate_in, RATES[fmt])

    def __call__(self, samples: np.ndarray) -> bytes:
        out = self._convert(samples)
        return out.astype("<i2").tobytes() if self.format == "audio/pcm" else g711_encode(out, self.format)


@dataclass
class ChunkFramer:
    """16 kHz audio in chunks of any size, out as 20 ms frames in media time.

    A chunk is taken as just recorded: the first one anchors media time at its arrival less
    its duration, and later ones follow on sample by sample, so a client that streams in real
    time gets a contiguous timeline whatever its chunk size or jitter. When the client falls
    silent (it sends only while the user talks, or only text), `tick` fills the time with
    silence, LAG_S behind the clock, so turn-taking and timers still see time pass.
    """

    t_next: float | None = None  # media time of the next frame
    _pending: bytes = b""

    def push(self, pcm: bytes, now: float) -> list[PcmFrame]:
        start = now - len(pcm) / 2 / RATE
        quiet = self.t_next is not None and start - self.t_next > LAG_S  # a gap, filled with silence; less is jitter
        frames = self._fill(start) if quiet else []
        if self.t_next is None or start - self.t_next > MAX_GAP_S:
            self.t_next, self._pending = start, b""
        self._pending += pcm
        while len(self._pending) >= FRAME_BYTES:
            frames.append(self._frame(self._pending[:FRAME_BYTES]))
            self._pending = self._pending[FRAME_BYTES:]
        return frames

    def tick(self, now: float) -> list[PcmFrame]:
        """Silence up to LAG_S before `now`, if the client has sent nothing since."""
        if self.t_next is None:
            self.t_next = now - LAG_S
        return self._fill(now - LAG_S)

    def _fill(self, until: float) -> list[PcmFrame]:
        assert self.t_next is not None
        if until - self.t_next > MAX_GAP_S:
            return []  # the next chunk starts a new timeline
        frames: list[PcmFrame] = []
        while self.t_next + FRAME_S <= until:
            pad = FRAME_BYTES - len(self._pending)
            frames.append(self._frame(self._pending + b"\x00" * pad))
            self._pending = b""
        return frames

    def _frame(self, pcm: bytes) -> PcmFrame:
        assert self.t_next is not None
        frame = PcmFrame(pcm, self.t_next)
        self.t_next += FRAME_S
        return frame
