"""Client side: real aiortc peers (kit.rtc_client.Client) and what they measure, for the bench and the tests.

Every time here is the client's own: the monotonic time a clip's first sample
left the synthetic microphone, the arrival time of each event on the data
channel and of each decoded audio frame. CLOCK_MONOTONIC is shared by every
process on the machine, so server-side probe samples line up with them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fractions
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import numpy as np

from rtc.ice import use_host_addresses

use_host_addresses(["127.0.0.1"])  # before any peer gathers candidates: loopback only

from kit.rtc_client import FRAME, RATE, Client, SpeakingTrack, to_48k  # noqa: E402
from kit.speech import concat, silence, speak, voiced_bounds  # noqa: E402
from pipeline.sentences import SentenceSplitter  # noqa: E402
from rtc.opus import OpusEncoder  # noqa: E402

AUDIBLE_RMS = 500.0  # a received frame louder than this is reply audio (silence decodes to ~0)
# A light peer never decodes: an RTP payload this long is reply audio. The server's mono 32 kbps
# VBR Opus (rtc/opus.py) sends 32-46 bytes for silence and 59-112 for espeak speech.
AUDIBLE_PAYLOAD_BYTES = 55
FRAME_S = 0.020

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Who wrote Romeo and Juliet?",
    "How many legs does a spider have?",
    "What is the boiling point of water?",
    "Why is the sky blue?",
    "What is the largest ocean on Earth?",
    "How do I make a cup of tea?",
    "What color is a ripe banana?",
    "What is two plus two?",
    "Which planet is closest to the sun?",
    "How many days are in a leap year?",
]
INTERRUPTION = "Wait, stop."
WARMUP = "Hello, can you hear me?"


@dataclass
class Clip:
    text: str
    samples16k: np.ndarray  # what the client speaks, padded
    samples48k: np.ndarray
    first_voiced: float  # s from the clip's first sample to the first / last voiced 10 ms
    last_voiced: float

    @property
    def duration(self) -> float:
        return len(self.samples16k) / 16000


def make_clip(text: str, pre: float = 0.2, post: float = 0.1) -> Clip:
    speech = speak(text)
    first, last = voiced_bounds(speech)
    padded = concat(silence(pre), speech, silence(post))
    return Clip(text, padded, to_48k(padded), pre + first, pre + last)


@dataclass
class Turn:
    """One spoken (or typed) question and everything the client saw of its answer."""

    question: str
    sent: float = 0.0  # monotonic: the clip's first sample left the microphone
    speech_start: float | None = None  # first / last voiced sample, client media time
    speech_end: float | None = None
    asked: float = 0.0  # when the question was queued (typed: sent)
    turn: int | None = None
    utterances: int = 0  # speech_stopped events seen (1 unless the VAD split the clip)
    t_started: float | None = None  # event arrivals at the client
    t_stopped: float | None = None
    t_transcript: float | None = None
    t_first_delta: float | None = None
    t_first_sentence: float | None = None  # the delta that completed the first sentence (client-side split)
    t_last_delta: float | None = None
    t_speaking: float | None = None
    t_reply: float | None = None
    t_first_audible: float | None = None  # first reply frame louder than AUDIBLE_RMS
    transcript: str = ""
    language: str = ""  # what the server heard it as (its transcript event)
    reply: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    done: bool = False
    empty: bool = False  # noise-only transcript: no reply

    @property
    def ok(self) -> bool:
        return self.done and not self.error and not self.empty and self.t_first_audible is not None

    def client_ms(self) -> dict[str, float | None]:
        """Stages as measured at the client, from event and frame arrival times (ms)."""

        def d(a: float | None, b: float | None) -> float | None:
            return round((a - b) * 1000, 1) if a is not None and b is not None else None

        return {
            "endpoint": d(self.t_stopped, self.speech_end),
            "stt": d(self.t_transcript, self.t_stopped),
            "llm_first_token": d(self.t_first_delta, self.t_transcript),
            "first_sentence": d(self.t_first_sentence, self.t_transcript),
            "tts_first_chunk": d(self.t_speaking, self.t_first_sentence),
            "first_audio_leaving": d(self.t_speaking, self.speech_end),
            "voice_to_voice": d(self.t_first_audible, self.speech_end),
            "delivery": d(self.t_first_audible, self.t_speaking),
            "llm_full": d(self.t_last_delta, self.t_transcript),
            "after_endpoint": d(self.t_speaking, self.t_stopped),
        }

    def server_ms(self) -> dict[str, float | None]:
        m = self.metrics
        out = {k: m.get(k + "_ms") for k in ("endpoint", "stt", "llm_first_token", "first_sentence", "tts_first_audio", "voice_to_voice")}
        if m.get("voice_to_voice_ms") is not None and m.get("endpoint_ms") is not None:
            out["after_endpoint"] = round(m["voice_to_voice_ms"] - m["endpoint_ms"], 1)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["client_ms"] = self.client_ms()
        out["server_ms"] = self.server_ms()
        return out


_ENCODED: dict[int, tuple[np.ndarray, list[bytes]]] = {}  # id(clip) -> (clip, its packets): every PacketMic's


class PacketMic(SpeakingTrack):
    """A light peer's microphone: SpeakingTrack's clips, each encoded to Opus once and then handed to
    aiortc as packets (its path for pre-encoded media), so a session's mic costs the bench no encoder
    thread. A clip starts on the next 20 ms frame; silence is one cached packet. Clips are encoded
    once for all peers (about 7 ms of the loop for a 2 s clip), at their first `say`."""

    def __init__(self) -> None:
        super().__init__()
        self._packets_queue: list[tuple[list[bytes], asyncio.Future[float]]] = []
        self._index = 0
        self._silence = OpusEncoder(rate=RATE).encode(np.zeros(FRAME, dtype=np.int16).tobytes())

    @staticmethod
    def _packets(samples48k: np.ndarray) -> list[bytes]:
        cached = _ENCODED.get(id(samples48k))
        if cached is None or cached[0] is not samples48k:
            encoder = OpusEncoder(rate=RATE)
            pcm = np.asarray(samples48k, dtype=np.int16)
            pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME, dtype=np.int16)])
            cached = (samples48k, [encoder.encode(pcm[i : i + FRAME].tobytes()) for i in range(0, len(pcm), FRAME)])
            _ENCODED[id(samples48k)] = cached
        return cached[1]

    def say(self, samples48k: np.ndarray) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._packets_queue.append((self._packets(samples48k), fut))
        return fut

    @property
    def idle(self) -> bool:
        return not self._packets_queue

    async def recv(self) -> av.Packet:  # type: ignore[override]
        await self._paced()
        payload = self._silence
        if self._packets_queue:
            packets, fut = self._packets_queue[0]
            if self._index == 0 and not fut.done():
                fut.set_result(time.monotonic())
            payload = packets[self._index]
            self._index += 1
            if self._index >= len(packets):
                self._packets_queue.pop(0)
                self._index = 0
        packet = av.Packet(payload)
        packet.pts = self._pts
        packet.time_base = fractions.Fraction(1, RATE)
        return packet


class Peer:
    """A connected Client plus compact bookkeeping of what it received (arrival time and RMS per frame)."""

    def __init__(self, base_url: str, fec: bool = True, light: bool = False) -> None:
        # light: the bench's cost per session down to DTLS, SRTP and UDP (as if the client were on
        # another machine): the mic sends pre-encoded packets and what arrives is never decoded, only
        # timed and sized (AUDIBLE_PAYLOAD_BYTES); no decoded frames, so no "decoded" jitter.
        self.light = light
        self.client = Client(base_url, mic=PacketMic(), fec=False) if light else Client(base_url, fec=fec)
        self.ft: list[float] = []  # frame arrival times
        self.frms: list[float] = []  # frame RMS
        self.connected_at = 0.0
        self.rtp_t: list[float] = []  # arrival of each RTP packet at the client, before jitter buffer and decoder
        self.rtp_audible: list[float] = []  # light peers: arrivals of the packets long enough to be speech

    def _watch_rtp(self) -> None:
        for receiver in self.client.pc.getReceivers():
            handle = receiver._handle_rtp_packet

            async def watched(packet: Any, arrival_time_ms: int, handle: Any = handle) -> None:
                t = time.monotonic()
                self.rtp_t.append(t)
                if not self.light:
                    await handle(packet, arrival_time_ms=arrival_time_ms)
                elif len(packet.payload) >= AUDIBLE_PAYLOAD_BYTES:
                    self.rtp_audible.append(t)

            receiver._handle_rtp_packet = watched  # type: ignore[method-assign]

    async def connect(self, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            await self.client.connect()
            self._watch_rtp()
            await self.client.wait_event("state", timeout=timeout, state="listening")
            while not (self.rtp_t if self.light else self.client.frames):  # media flows both ways
                await asyncio.sleep(0.02)
        self.connected_at = time.monotonic()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 10)

    def drain(self) -> None:
        """Move received frames into (time, RMS) lists; the samples themselves are dropped."""
        frames = self.client.frames
        n = len(frames)
        for f in frames[:n]:
            s = f.samples.astype(np.float32)
            self.ft.append(f.t)
            self.frms.append(float(np.sqrt(np.mean(s * s))) if len(s) else 0.0)
        del frames[:n]

    def audible(self, t0: float = 0.0, t1: float = float("inf")) -> list[float]:
        if self.light:
            return [t for t in self.rtp_audible if t0 <= t < t1]
        self.drain()
        return [t for t, r in zip(self.ft, self.frms, strict=True) if t0 <= t < t1 and r > AUDIBLE_RMS]

    def frame_times(self, t0: float, t1: float) -> list[float]:
        self.drain()
        return [t for t in self.ft if t0 <= t < t1]

    def local_ports(self) -> set[int]:
        """The UDP ports this peer's ICE transports gathered (its media arrives on one of them)."""
        ports: set[int] = set()
        for transceiver in self.client.pc.getTransceivers():
            ice = transceiver.receiver.transport.transport
            ports.update(c.port for c in ice.iceGatherer.getLocalCandidates())
        return ports

    def rtp_times(self, t0: float, t1: float) -> list[float]:
        return [t for t in self.rtp_t if t0 <= t < t1]

    def forget_frames(self, before: float) -> None:
        self.drain()
        # Every list is in arrival order: cut each at its first time >= before.
        keep = bisect.bisect_left(self.ft, before)
        del self.ft[:keep], self.frms[:keep]
        for times in (self.rtp_t, self.rtp_audible):
            del times[: bisect.bisect_left(times, before)]

    def events_since(self, index: int) -> list[tuple[float, dict[str, Any]]]:
        return self.client.events[index:]

    async def ask(self, clip: Clip, timeout: float = 30.0) -> Turn:
        """Speak `clip`, follow its turn to the end (reply, error or empty transcript) or `timeout`."""
        index = len(self.client.events)
        turn = Turn(question=clip.text, asked=time.monotonic())
        sent = await asyncio.wait_for(self.client.mic.say(clip.samples48k), 10)
        turn.sent = sent
        turn.speech_start, turn.speech_end = sent + clip.first_voiced, sent + clip.last_voiced
        await self._follow(turn, index, timeout)
        return turn

    async def type(self, text: str, timeout: float = 30.0) -> Turn:
        index = len(self.client.events)
        turn = Turn(question=text, asked=time.monotonic())
        turn.sent = turn.asked
        self.client.send({"type": "text", "text": text})
        await self._follow(turn, index, timeout, typed=True)
        return turn

    async def _follow(self, turn: Turn, index: int, timeout: float, typed: bool = False) -> None:
        deadline = time.monotonic() + timeout
        splitter = SentenceSplitter()
        transcribing = False
        while not turn.done and time.monotonic() < deadline:
            events = self.client.events
            while index < len(events) and not turn.done:
                t, ev = events[index]
                index += 1
                kind, n = ev.get("type"), ev.get("turn")
                if turn.turn is None:
                    if kind == "speech_started" and turn.t_started is None:
                        turn.t_started = t
                    elif kind == "speech_stopped" and not typed:
                        turn.turn, turn.t_stopped, turn.utterances = n, t, 1
                    elif kind == "transcript":
                        # A reply released at a short pause (the end-of-turn model) comes before
                        # the VAD's speech_stopped: its transcript marks the end of the user's turn.
                        turn.turn = n
                        if not typed:
                            turn.t_stopped, turn.utterances = t, 1
                    else:
                        continue
                if n != turn.turn:
                    if kind == "speech_stopped":
                        turn.utterances += 1
                    continue
                if kind == "state" and ev.get("state") == "transcribing":
                    transcribing = True
                elif kind == "transcript":
                    turn.t_transcript, turn.transcript, turn.language = t, ev.get("text", ""), ev.get("language", "")
                elif kind == "reply_delta":
                    text = ev.get("text", "")
                    turn.reply += text
                    if turn.t_first_delta is None:
                        turn.t_first_delta = t
                    turn.t_last_delta = t
                    if turn.t_first_sentence is None and splitter.feed(text):
                        turn.t_first_sentence = t
                elif kind == "state" and ev.get("state") == "speaking":
                    turn.t_speaking = t
                elif kind == "metrics":
                    turn.metrics = {k: v for k, v in ev.items() if k not in ("type", "turn")}
                elif kind == "reply":
                    turn.t_reply, turn.reply, turn.done = t, ev.get("text", turn.reply), True
                elif kind == "error":
                    turn.error, turn.done = f"{ev.get('stage')}: {ev.get('message')}", True
                elif kind == "state" and ev.get("state") == "listening" and transcribing and turn.t_transcript is None:
                    turn.empty = turn.done = True
            if not turn.done:
                await asyncio.sleep(0.03)
        if turn.t_first_sentence is None and turn.t_last_delta is not None:
            turn.t_first_sentence = turn.t_last_delta  # a one-sentence reply is cut when the stream ends
        start = turn.speech_end if turn.speech_end is not None else turn.asked
        heard = self.audible(start)
        turn.t_first_audible = heard[0] if heard and turn.t_transcript is not None else None
        if not turn.done and not turn.error:
            turn.error = f"timeout after {timeout:g} s"

    async def inbound_stats(self) -> dict[str, Any]:
        """aiortc's own receive counters (RTCP-style): packets received / lost, jitter."""
        with contextlib.suppress(Exception):
            report = await asyncio.wait_for(self.client.pc.getStats(), 5)
            for stat in report.values():
                if getattr(stat, "type", "") == "inbound-rtp":
                    return {
                        "packets_received": stat.packetsReceived,
                        "packets_lost": stat.packetsLost,
                        "jitter_ms": round(stat.jitter * 1000, 2),
                    }
        return {}


async def warm_up(peer: Peer, timeout: float = 30.0) -> list[Turn]:
    """One spoken turn, not measured: the first use of each engine in a fresh server process does
    one-off work (connections, lazy imports, cold model pages) that is not the steady state."""
    spoken = await peer.ask(make_clip(WARMUP), timeout=timeout)
    await asyncio.sleep(0.3)
    return [spoken]


async def connect_all(base_url: str, n: int, parallel: int = 4, timeout: float = 30.0, light: bool = False) -> tuple[list[Peer], list[str]]:
    """n connected peers (at most `parallel` handshakes at a time); errors for the ones that failed."""
    gate = asyncio.Semaphore(parallel)
    peers: list[Peer] = []
    errors: list[str] = []

    async def one() -> None:
        peer = Peer(base_url, light=light)
        async with gate:
            try:
                await peer.connect(timeout)
                peers.append(peer)
            except Exception as exc:  # noqa: BLE001 - a failed peer is a result, not a crash
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await peer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return peers, errors


async def close_all(peers: list[Peer]) -> None:
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
