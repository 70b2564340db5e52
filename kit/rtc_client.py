"""A real aiortc client peer for tests and benchmarks: speaks a WAV, records what comes back.

`SpeakingTrack` is a synthetic microphone: it paces 20 ms frames in real time
and plays silence between the clips queued on it. `Client` posts the offer to
the real server over HTTP and keeps every received audio frame and event with
its arrival time on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError

RATE = 48000
FRAME = 960
FEC_LOSS_PERCENT = "5"  # the loss the encoder plans FEC for (a browser's, from the receiver's reports, is 0-20)


class FecOpusEncoder(OpusEncoder):
    """aiortc's Opus encoder with in-band FEC on, as a browser's is when the answer says useinbandfec=1."""

    def __init__(self) -> None:
        super().__init__()
        self.codec.options = {**self.codec.options, "fec": "1", "packet_loss": FEC_LOSS_PERCENT}


def send_fec(sender: RTCRtpSender) -> None:
    """Make `sender` (before its first packet) encode with FEC. aiortc makes its encoder on the
    first frame unless one is set; the pinned 1.16 keeps it in `__encoder`."""
    attr = "_RTCRtpSender__encoder"
    if not hasattr(sender, attr):
        raise RuntimeError("this aiortc's RTCRtpSender keeps no __encoder: cannot turn FEC on")
    setattr(sender, attr, FecOpusEncoder())


def to_48k(samples16k: np.ndarray) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(np.asarray(samples16k, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16000
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out)


class SpeakingTrack(MediaStreamTrack):
    """Plays queued 48 kHz clips, silence otherwise; records when each clip's audio left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[tuple[np.ndarray, asyncio.Future[float]]] = []
        self._offset = 0
        self._start: float | None = None
        self._pts = 0

    def say(self, samples48k: np.ndarray) -> asyncio.Future[float]:
        """Queue a clip; the future resolves to the monotonic time its first sample was sent."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append((np.asarray(samples48k, dtype=np.int16), fut))
        return fut

    @property
    def idle(self) -> bool:
        return not self._queue

    async def _paced(self) -> None:
        """Wait until the next 20 ms frame is due (in real time from the first) and count its pts."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME
            wait = self._start + self._pts / RATE - now
            if wait > 0:
                await asyncio.sleep(wait)

    async def recv(self) -> av.AudioFrame:
        await self._paced()
        out = np.zeros(FRAME, dtype=np.int16)
        filled = 0
        t = time.monotonic()
        while filled < FRAME and self._queue:
            clip, fut = self._queue[0]
            if self._offset == 0 and not fut.done():
                fut.set_result(t + filled / RATE)
            take = min(FRAME - filled, len(clip) - self._offset)
            out[filled : filled + take] = clip[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= len(clip):
                self._queue.pop(0)
                self._offset = 0
        frame = av.AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class Received:
    t: float  # monotonic arrival time of the frame at the client
    samples: np.ndarray  # mono int16 at 48 kHz


@dataclass
class Client:
    base_url: str
    mic: SpeakingTrack = field(default_factory=SpeakingTrack)
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    frames: list[Received] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    session: str = ""
    fec: bool = True  # send Opus in-band FEC when the answer asks for it (useinbandfec=1), as browsers do
    worker: int | None = None  # which server worker answered
    ssl: Any = True  # aiohttp's `ssl` for POST /offer (an SSLContext trusting a test certificate)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _event_signal: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, headers: dict[str, str] | None = None, retries: int = 0) -> None:
        """Offer, answer, connect; `retries`: how many more times to POST the offer while it gets 503 (full)."""
        await self._offer("events")
        offer = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
        for attempt in range(retries + 1):
            # a new connection each time: a full worker's 503 closes it, and the kernel may hand
            # the next one to another worker
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{self.base_url}/offer", json=offer, headers=headers or {}, ssl=self.ssl) as resp:
                    body = await resp.json()
                    status = resp.status
            if status != 503 or attempt == retries:
                break
            await asyncio.sleep(0.05 * (attempt + 1))
        if status != 200:
            raise RuntimeError(f"offer refused: {status} {body}")
        self.worker = body.get("worker")
        self.session = body["session"]
        await self._answered(body["sdp"])

    async def call(self, create: Callable[[str], Awaitable[str]]) -> None:
        """Connect as an OpenAI Realtime WebRTC client: its events on `oai-events`, the offer answered by
        `create` (the SDK's `realtime.calls.create`)."""
        await self._offer("oai-events")
        await self._answered(await create(self.pc.localDescription.sdp))

    async def _answered(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        if self.fec and re.search(r"a=fmtp:\d+ .*useinbandfec=1", sdp):
            for sender in self.pc.getSenders():
                if sender.track is self.mic:
                    send_fec(sender)

    async def _offer(self, label: str) -> None:
        channel = self.pc.createDataChannel(label)
        self.channel = channel

        @channel.on("message")
        def on_message(message: str) -> None:
            self.events.append((time.monotonic(), json.loads(message)))
            self._event_signal.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._record(track)))

        self.pc.addTrack(self.mic)
        await self.pc.setLocalDescription(await self.pc.createOffer())

    async def _record(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                pcm = pcm[::2]  # packed interleaved: keep the left channel
            self.frames.append(Received(time.monotonic(), pcm.astype(np.int16)))

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def wait_event(self, type_: str, timeout: float = 10.0, after: float = 0.0, **match: Any) -> tuple[float, dict[str, Any]]:
        """The first event of `type_` received after monotonic time `after` whose fields match."""
        deadline = time.monotonic() + timeout
        while True:
            for t, ev in self.events:
                if t >= after and ev.get("type") == type_ and all(ev.get(k) == v for k, v in match.items()):
                    return t, ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {type_} event {match or ''} within {timeout} s; got {[e['type'] for _, e in self.events]}")
            self._event_signal.clear()
            try:
                await asyncio.wait_for(self._event_signal.wait(), remaining)
            except TimeoutError:
                pass

    def audio(self, start: float = 0.0, end: float = float("inf")) -> np.ndarray:
        chunks = [f.samples for f in self.frames if start <= f.t < end]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def audible_times(self, threshold: float = 500.0) -> list[float]:
        """Arrival times of the received frames whose RMS is above `threshold`."""
        return [f.t for f in self.frames if np.sqrt(np.mean(f.samples.astype(np.float64) ** 2)) > threshold]

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
