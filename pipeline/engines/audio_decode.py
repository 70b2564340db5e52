"""Incremental decoding of a streamed audio body into int16 mono PCM at one fixed rate.

Bytes are fed as they arrive from the network and PCM comes out as soon as the
container allows, so speech starts playing before the download ends:

* `pcm`: raw s16le passed through (odd bytes carried to the next chunk);
* `wav`: the header is parsed, then samples are streamed (converted if needed);
* `mp3`, `opus` (in Ogg), `aac` (ADTS), `flac`: FFmpeg's demuxer and decoder
  (PyAV) run in a worker thread that reads from a pipe fed by the event loop,
  because a demuxer pulls its input with blocking reads.

Usage: `feed()` each chunk, `end()` after the last one (or `fail(exc)`), and
`await read()` until it returns None. `close()` abandons decoding at any time.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from typing import Any

import av
import numpy as np

FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")

# FFmpeg demuxer per response_format (OpenAI's opus is Ogg-encapsulated, its aac is ADTS).
_DEMUXERS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac"}

# Probe as little as possible: the format is known and every byte probed is latency.
_DEMUX_OPTIONS = {"probesize": "32", "analyzeduration": "0"}


class AudioDecodeError(Exception):
    """The bytes are not audio of the announced format."""


class StreamDecoder:
    """Base: PCM chunks, the end (None) or an exception travel to the reader through one queue."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._done = False
        self.samples_out = 0

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        """The input broke off: the reader gets `exc` after the PCM decoded so far."""
        self._post(exc)

    def close(self) -> None:
        self._done = True

    async def read(self) -> bytes | None:
        """The next PCM chunk, or None after the last; raises what broke the stream."""
        if self._done and self._queue.empty():
            return None
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item is None:
            self._done = True
        return item

    def _post(self, item: bytes | BaseException | None) -> None:
        if isinstance(item, bytes):
            if not item:
                return
            self.samples_out += len(item) // 2
        self._queue.put_nowait(item)

    def _post_threadsafe(self, item: bytes | BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._post, item)
        except RuntimeError:
            pass  # the loop is closed: nobody is reading any more


class _PcmDecoder(StreamDecoder):
    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self._carry = b""

    def feed(self, data: bytes) -> None:
        data = self._carry + data
        even = len(data) // 2 * 2
        self._carry = data[even:]  # never hand out half a sample
        self._post(data[:even])

    def end(self) -> None:
        self._post(None)


class _Converter:
    """int16 (or float) interleaved samples at any rate and channel count -> int16 mono at `rate`."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: Any = None  # one resampler for the whole stream keeps its filter state

    def convert(self, samples: np.ndarray, channels: int, in_rate: int) -> bytes:
        if channels > 1 or samples.dtype != np.int16:
            scale = 32768.0 if samples.dtype == np.int16 else 1.0
            mono = samples.astype(np.float32).reshape(-1, channels).mean(axis=1) / scale
            samples = np.clip(np.round(mono * 32767), -32768, 32767).astype(np.int16)
        if in_rate == self.rate:
            return samples.tobytes()
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = in_rate
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(frame))

    def flush(self) -> bytes:
        if self._resampler is None:
            return b""
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(None))


class _WavDecoder(StreamDecoder):
    """RIFF/WAVE parsed by hand: the header is tiny and the rest is PCM, so no thread is needed."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self._buf = bytearray()
        self._fmt: tuple[int, int, int, int] | None = None  # (tag, channels, rate, bits)
        self._data_left: int | None = None  # None: until the end of the body
        self._in_data = False
        self._converter = _Converter(rate)

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        try:
            if not self._in_data:
                self._parse_header()
            if self._in_data:
                self._emit()
        except AudioDecodeError as exc:
            self._done_with(exc)

    def end(self) -> None:
        if self._done:
            return
        if not self._in_data:
            self._done_with(AudioDecodeError("the WAV body ended before its audio started"))
            return
        self._post(self._converter.flush())
        self._post(None)

    def _done_with(self, exc: BaseException) -> None:
        self._buf.clear()
        self._in_data = False
        self._post(exc)
        self._done = True

    def _parse_header(self) -> None:
        buf = self._buf
        if len(buf) < 12:
            return
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise AudioDecodeError("not a WAV file")
        pos = 12
        while len(buf) >= pos + 8:
            chunk_id, size = buf[pos : pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
            if chunk_id == b"data":
                if self._fmt is None:
                    raise AudioDecodeError("WAV data before its format")
                # Streaming servers write 0 or 0xFFFFFFFF when the length is not known yet.
                self._data_left = None if size in (0, 0xFFFFFFFF) or size >= 0x7FFFF000 else size
                del buf[: pos + 8]
                self._in_data = True
                return
            if len(buf) < pos + 8 + size + (size & 1):
                return  # wait for the rest of this chunk
            if chunk_id == b"fmt ":
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", buf, pos + 8)
                if tag == 0xFFFE and size >= 26:
                    tag = struct.unpack_from("<H", buf, pos + 8 + 24)[0]  # WAVE_FORMAT_EXTENSIBLE subformat
                if not ((tag == 1 and bits == 16) or (tag == 3 and bits == 32)) or channels < 1 or rate < 1:
                    raise AudioDecodeError(f"unsupported WAV encoding (format {tag}, {bits} bits)")
                self._fmt = (tag, channels, rate, bits)
            pos += 8 + size + (size & 1)

    def _emit(self) -> None:
        assert self._fmt is not None
        tag, channels, rate, bits = self._fmt
        frame_bytes = channels * bits // 8
        take = len(self._buf) if self._data_left is None else min(len(self._buf), self._data_left)
        take -= take % frame_bytes  # whole frames only; the rest waits for the next chunk
        if take <= 0:
            return
        raw = bytes(self._buf[:take])
        del self._buf[:take]
        if self._data_left is not None:
            self._data_left -= take
            if self._data_left == 0:
                self._buf.clear()  # trailing chunks (LIST, ...) are not audio
        samples = np.frombuffer(raw, dtype="<i2" if tag == 1 else "<f4")
        self._post(self._converter.convert(samples, channels, rate))


class _Pipe:
    """A blocking file-like object for the demuxer thread, fed without blocking by the event loop."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify()

    def close_input(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self) -> None:
        with self._cond:
            self._buf.clear()
            self._eof = True
            self._cond.notify()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._buf and not self._eof:
                self._cond.wait()
            n = len(self._buf) if n < 0 else n
            out = bytes(self._buf[:n])  # a short read is fine: FFmpeg asks again
            del self._buf[:n]
            return out


class _AvDecoder(StreamDecoder):
    def __init__(self, fmt: str, rate: int) -> None:
        super().__init__(rate)
        self.fmt = fmt
        self._pipe = _Pipe()
        self._aborted = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"decode-{fmt}", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self._pipe.write(data)

    def end(self) -> None:
        self._pipe.close_input()

    def fail(self, exc: BaseException) -> None:
        # Let the thread finish what it has, then the reader gets `exc` instead of the end.
        self._failure = exc
        self._pipe.close_input()

    def close(self) -> None:
        super().close()
        self._aborted = True
        self._pipe.abort()  # the demuxer sees the end of input and the thread returns

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        produced = 0
        try:
            with av.open(self._pipe, mode="r", format=_DEMUXERS[self.fmt], container_options=_DEMUX_OPTIONS) as container:
                if not container.streams.audio:
                    raise AudioDecodeError(f"no audio stream in the {self.fmt} body")
                for frame in container.decode(audio=0):
                    if self._aborted:
                        return
                    for out in resampler.resample(frame):
                        pcm = bytes(out.planes[0])[: out.samples * 2]
                        produced += len(pcm)
                        self._post_threadsafe(pcm)
                for out in resampler.resample(None):
                    pcm = bytes(out.planes[0])[: out.samples * 2]
                    produced += len(pcm)
                    self._post_threadsafe(pcm)
        except Exception as exc:
            if self._aborted:
                return
            # A broken input explains a decoding error better than the error itself.
            reason = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's words, without its "<none>" file name
            error = self._failure or (exc if isinstance(exc, AudioDecodeError) else AudioDecodeError(f"cannot decode it ({reason})"))
            self._post_threadsafe(error)
            return
        if self._aborted:
            return
        if self._failure is not None:
            self._post_threadsafe(self._failure)
        elif produced == 0:
            self._post_threadsafe(AudioDecodeError(f"no audio in the {self.fmt} body"))
        else:
            self._post_threadsafe(None)


def open_decoder(fmt: str, rate: int = 24000) -> StreamDecoder:
    """A decoder of `fmt` (a TTS response_format) to int16 mono at `rate`; call from the event loop."""
    if fmt == "pcm":
        return _PcmDecoder(rate)
    if fmt == "wav":
        return _WavDecoder(rate)
    if fmt in _DEMUXERS:
        return _AvDecoder(fmt, rate)
    raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
