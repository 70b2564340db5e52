"""The one type of inbound audio the rest of the server sees: 20 ms of 16 kHz mono int16 at a media time."""

from __future__ import annotations

from dataclasses import dataclass

RATE = 16000
FRAME_SAMPLES = 320
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_S = FRAME_SAMPLES / RATE


@dataclass(frozen=True)
class PcmFrame:
    pcm: bytes  # 320 samples, 16 kHz mono int16
    t: float  # media time of the first sample (monotonic clock domain)
