"""An Opus decoder with packet-loss concealment and in-band FEC: libopus through ctypes.

aiortc decodes through PyAV's `libopus` decoder, which cannot conceal: FFmpeg's
wrapper opens libopus with FEC off, and an empty packet (the only way to say
"this one is missing") puts the codec context into end-of-stream for good. The
libopus API itself does both: `opus_decode(NULL)` is its packet-loss
concealment, and `decode_fec=1` on the packet after a gap rebuilds the missing
one from that packet's in-band FEC (LBRR) data, or conceals it where there is none.

Which libopus: the copy the pinned PyAV wheel ships in `av.libs` (the library
aiortc already decodes with, so nothing more to install), else the system's
(`libopus0` on Debian). Decoding straight to 16 kHz mono is libopus's own
resampling, so no resampler runs after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

import av

log = logging.getLogger("rtc.opus")

OPUS_OK = 0
MAX_FRAME_MS = 120  # the longest Opus packet


class OpusUnavailable(RuntimeError):
    """No usable libopus was found."""


def _candidates() -> list[str]:
    bundled = Path(av.__file__).resolve().parent.parent / "av.libs"
    paths = [str(p) for p in sorted(bundled.glob("libopus*.so*"))]
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encoder_ctl.restype = ctypes.c_int  # variadic: arguments are passed with explicit ctypes types
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = ctypes.c_char_p
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
        lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
        lib.opus_packet_has_lbrr.restype = ctypes.c_int
    return lib


_LIB: ctypes.CDLL | None = None


def libopus() -> ctypes.CDLL:
    """The loaded library (once per process); OpusUnavailable if there is none."""
    global _LIB
    if _LIB is None:
        for path in _candidates():
            try:
                _LIB = _bind(ctypes.CDLL(path))
            except (OSError, AttributeError) as exc:
                log.debug("libopus at %s unusable: %s", path, exc)
                continue
            log.debug("libopus %s from %s", _LIB.opus_get_version_string().decode(), path)
            break
        else:
            raise OpusUnavailable("no libopus found (neither PyAV's bundled copy nor the system's libopus0)")
    return _LIB


def version() -> str:
    return libopus().opus_get_version_string().decode()


class OpusDecoder:
    """One stream's decoder state, decoding to `rate` Hz mono int16 (bytes)."""

    def __init__(self, rate: int = 16000) -> None:
        self._lib = libopus()
        self.rate = rate
        error = ctypes.c_int(0)
        self._state = self._lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        if not self._state or error.value != OPUS_OK:
            raise OpusUnavailable(f"opus_decoder_create failed ({error.value})")
        self._out = (ctypes.c_int16 * (rate * MAX_FRAME_MS // 1000))()

    def samples_in(self, payload: bytes) -> int:
        """Samples (at this decoder's rate) the packet holds; 0 if it is not a valid Opus packet."""
        n = self._lib.opus_packet_get_nb_samples(payload, len(payload), self.rate)
        return max(0, n)

    def has_fec(self, payload: bytes) -> bool | None:
        """Whether the packet carries FEC for the one before it; None where libopus cannot tell (< 1.5)."""
        if not hasattr(self._lib, "opus_packet_has_lbrr"):
            return None
        return self._lib.opus_packet_has_lbrr(payload, len(payload)) == 1

    def _run(self, payload: bytes | None, samples: int, fec: bool) -> bytes:
        samples = min(samples, len(self._out))
        n = self._lib.opus_decode(self._state, payload, len(payload) if payload else 0, self._out, samples, int(fec))
        if n < 0:
            return b""
        return ctypes.string_at(self._out, n * 2)

    def decode(self, payload: bytes) -> bytes:
        """The packet's audio; b"" if libopus rejects it (the caller conceals instead)."""
        return self._run(payload, len(self._out), fec=False)

    def conceal(self, samples: int) -> bytes:
        """Packet-loss concealment for `samples` missing samples (a multiple of 2.5 ms)."""
        return self._run(None, samples, fec=False)

    def recover(self, next_payload: bytes, samples: int) -> bytes:
        """The `samples` missing right before `next_payload`, from its in-band FEC (concealed if it has none)."""
        return self._run(next_payload, samples, fec=True)

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


OPUS_APPLICATION_VOIP = 2048
OPUS_SET_BITRATE_REQUEST = 4002
MAX_PACKET_BYTES = 1275


class OpusEncoder:
    """One stream's encoder: 48 kHz mono int16 frames in, Opus packets out."""

    def __init__(self, bitrate: int = 32000, rate: int = 48000) -> None:
        self._lib = libopus()
        error = ctypes.c_int(0)
        self._state = self._lib.opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(error))
        if not self._state or error.value != OPUS_OK:
            raise OpusUnavailable(f"opus_encoder_create failed ({error.value})")
        self._lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(OPUS_SET_BITRATE_REQUEST), ctypes.c_int32(bitrate))
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def encode(self, pcm: bytes) -> bytes:
        """One frame (2.5 to 60 ms of samples) as an Opus packet."""
        n = self._lib.opus_encode(self._state, pcm, len(pcm) // 2, self._out, MAX_PACKET_BYTES)
        if n < 0:
            raise OpusUnavailable(f"opus_encode failed ({n})")
        return self._out.raw[:n]

    def close(self) -> None:
        if self._state:
            self._lib.opus_encoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
