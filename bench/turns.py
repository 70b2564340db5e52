"""Part: turn-taking. The old silence-only design against the new one, on the same engines, in one run.

    OLD  --turn-pause-ms 0 --turn-detector none --vad-silence-ms 500 --interrupt-min-ms 0 --interrupt-pause-ms 0
         --echo-gate-db 0 --stt-window full --partial-every-ms 0 (the product before this work; the STT window
         and the passes while the user speaks only matter locally)
    NEW  the server's defaults (hold a prepared reply at a 100 ms pause, Smart Turn asked at 200 ms releases it, else
         VAD_SILENCE_MS; speech over a reply pauses it and a backchannel/cough resumes it; echo gate).
         If the NEW server cannot start (e.g. the end-of-turn model is missing), it is started again
         with `--turn-detector none` and the table says so (NEW*).

On the stand-in (zero delays; OLD and NEW each on its own stand-in and server, side by side, same
clips in the same order) and on the embedded engines (OLD, then NEW). Every figure comes from the
client: the time each clip's first sample left the microphone plus the offsets of its first/last
voiced 10 ms (RMS > 300), and the arrival times of events and decoded audio frames (audible: RMS > 500).
The client's microphone adds a -55 dBFS noise floor to everything it sends (below the server's
-50 dBFS VAD floor).

    v2v          plain questions: first audible reply frame received - end of the client's last voiced
                 audio (counted from the `state speaking` of the reply if that arrives later). Seen
                 voices (espeak-ng) and held-out voices (flite) apart.
    talk-over    questions with a thinking pause (0.4 / 0.8 / 1.0 s; 1.2 s = NEW's VAD_SILENCE_MS, apart):
                 any audible frame received between the question's first and last voiced sample.
    ended        a long reply; 1.5 s after its first audible frame the client says a backchannel
                 ("mm-hmm" ...) or coughs (synthetic). Ended = that reply's `reply` event says
                 interrupted, or its audio stops for > 1.5 s within 4 s of the onset.
    echo         a long reply while the client mixes what it receives into what it sends, 25 dB down
                 (and, fewer trials, 15 dB down: a louder speaker; on the stand-in's voice OLD's VAD
                 ignores -25 dB and takes -15 dB for speech about half the time) and 50-100 ms late;
                 5 s from the first audible frame.
                 Self-interruption = any `speech_started`, or a `reply` with interrupted: true (the
                 client said nothing).
    barge-in     a real question over a long reply, 0.8-1.6 s after `speaking`. Stop = last audible
                 frame of that reply - speech onset; stale = its audible frames arriving more than
                 120 ms after `speech_started`, resumed = frames after a >= 100 ms silent gap that
                 began after `speech_started`. The question's own reply is told apart by its `state
                 speaking` (the stand-in delays its first token 1.5 s; frames are counted for at most
                 3 s after the question).

Spoken questions are followed without relying on turn ids: to the first `reply` (not interrupted)
or `error` after the end of speech, or `hold_s` past the first `state speaking` after it (a longer
reply is then cut by closing the session), or "no reply" once the server has been listening with no
event for a while. Every long-reply trial gets a fresh session.

The stand-in transcribes by a fixed text per trial (`stt_text`, trials are sequential), not by call
order: NEW may transcribe one question several times (at each pause).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from bench import turn_clips as tc
from bench.bargein import GAP_S, LONG_REPLY, STALE_AFTER_S
from bench.context import Ctx, reason_of
from bench.procs import Server, Standin
from bench.stats import fmt, summary, table
from kit.peers import WARMUP, Peer
from kit.rtc_client import FRAME, RATE, SpeakingTrack

# The product as it was before the turn-taking work: silence-only turns, cancel at once, no echo
# gate, and Whisper over its full 30 s window (STT_WINDOW=fit came with the same work).
OLD_FLAGS = [
    *("--turn-pause-ms", "0", "--turn-detector", "none", "--vad-silence-ms", "500"),
    *("--interrupt-min-ms", "0", "--interrupt-pause-ms", "0", "--echo-gate-db", "0", "--stt-window", "full"),
    *("--partial-every-ms", "0"),
]
NEW_FALLBACK = ["--turn-detector", "none"]

STANDIN_REPLY = "Here is a short answer to that."
STANDIN_MS_PER_CHAR = 30.0  # short answer ~1 s of audio; the long reply's sentences ~2 s each
STANDIN_QUESTION_REPLY_DELAY = 1.5  # barge-in: the question's own reply starts late, so it cannot be confused with the old one
LONG_REQUEST = "Tell me a long story about a dragon."
NOISE_RMS = 58.0  # -55 dBFS
ECHO_DB = 25.0  # the echo path's loss: a laptop speaker, no echo cancellation
ECHO_LOUD_DB = 15.0  # a louder speaker or a closer microphone
ECHO_DELAY_S = (0.05, 0.06)  # + up to two frames of the client's own buffering: 50-100 ms in all
BACKCHANNEL_AFTER_S = 1.5
SURVIVE_WINDOW_S = 4.0
STOPPED_GAP_S = 1.5
ECHO_WINDOW_S = 5.0
NEW_SILENCE_S = 1.2  # NEW's VAD_SILENCE_MS: a held reply may be released this late
BARGE_IN_OBSERVE_S = 3.0  # after the question: how long its own reply may take to start before the old reply's frames are counted


@dataclass
class Plan:
    plain: int  # questions, each in one seen and one held-out voice
    pause_phrases: int  # x 4 pause lengths
    backchannels: int
    coughs: int
    echo: int  # at -ECHO_DB
    echo_loud: int  # at -ECHO_LOUD_DB
    bargein: int


def plan(ctx: Ctx, engines: str) -> Plan:
    if ctx.opts.quick:
        return Plan(plain=2, pause_phrases=1, backchannels=2, coughs=1, echo=2, echo_loud=1, bargein=2)
    if engines == "standin":
        return Plan(plain=5, pause_phrases=3, backchannels=5, coughs=2, echo=8, echo_loud=4, bargein=6)
    # embedded engines: each trial costs STT + LLM + TTS on 2 shared cores; talk-overs there mostly follow v2v
    return Plan(plain=4, pause_phrases=1, backchannels=3, coughs=1, echo=3, echo_loud=1, bargein=3)


def build_clips(p: Plan) -> dict[str, list[tc.TurnClip]]:
    seen, held = tc.voices("seen"), tc.voices("held-out")
    out: dict[str, list[tc.TurnClip]] = {"plain": [], "pause": [], "survive": [], "bargein": []}
    for i in range(p.plain):
        q = tc.PLAIN_QUESTIONS[i % len(tc.PLAIN_QUESTIONS)]
        out["plain"].append(tc.plain(q, seen[i % len(seen)]))
        if held:
            out["plain"].append(tc.plain(q, held[i % len(held)]))
    for j in range(p.pause_phrases):
        first, second = tc.PAUSE_QUESTIONS[j % len(tc.PAUSE_QUESTIONS)]
        for k, pause in enumerate(tc.PAUSES_S):
            out["pause"].append(tc.with_pause(first, second, pause, seen[(j + k) % len(seen)]))
        if held:
            first, second = tc.HELD_OUT_PAUSE_QUESTIONS[j % len(tc.HELD_OUT_PAUSE_QUESTIONS)]
            for k, pause in enumerate(tc.PAUSES_S):
                out["pause"].append(tc.with_pause(first, second, pause, held[(j + k) % len(held)]))
    survive = [tc.backchannel(tc.BACKCHANNELS[i % len(tc.BACKCHANNELS)], seen[i % len(seen)]) for i in range(p.backchannels)]
    for i in range(p.coughs):  # spread the coughs among the backchannels
        survive.insert(min(len(survive), (i + 1) * 2 + i), tc.cough(seed=i))
    out["survive"] = survive
    out["bargein"] = [tc.bargein(tc.BARGE_IN_QUESTIONS[i % len(tc.BARGE_IN_QUESTIONS)], seen[i % len(seen)]) for i in range(p.bargein)]
    out["warmup"] = [tc.plain(WARMUP, seen[0])]
    return out


# ---------------------------------------------------------------- the client's microphone


class TurnMic(SpeakingTrack):
    """The synthetic microphone plus a noise floor and, optionally, the loudspeaker's echo: what the
    client receives, `echo_db` down, at least `delay_s` late (a FIFO refilled by received frames)."""

    def __init__(self, seed: int, noise_rms: float = NOISE_RMS, echo_db: float | None = None, delay_s: float = 0.0) -> None:
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self.noise_rms = noise_rms
        self.echo_gain = 0.0 if echo_db is None else 10 ** (-echo_db / 20)
        self._delay = int(round(delay_s * RATE))
        self._echo = np.zeros(self._delay, dtype=np.float32)

    def hear(self, samples: np.ndarray) -> None:
        if not self.echo_gain:
            return
        self._echo = np.concatenate([self._echo, samples.astype(np.float32) * self.echo_gain])
        excess = len(self._echo) - (self._delay + 5 * FRAME)
        if excess > 0:  # a burst of arrivals: keep the delay bounded
            self._echo = self._echo[excess:]

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        if not self.noise_rms and not self.echo_gain:
            return frame
        pcm = frame.to_ndarray().reshape(-1).astype(np.float32)
        if self.echo_gain and len(self._echo) >= self._delay + len(pcm):
            pcm += self._echo[: len(pcm)]
            self._echo = self._echo[len(pcm) :]
        if self.noise_rms:
            pcm += self._rng.normal(0.0, self.noise_rms, len(pcm)).astype(np.float32)
        out = av.AudioFrame.from_ndarray(np.clip(np.round(pcm), -32768, 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


class _Tap(list):  # type: ignore[type-arg]
    """Client.frames that also hands every received frame to the microphone (the echo path)."""

    def __init__(self, mic: TurnMic) -> None:
        super().__init__()
        self.mic = mic

    def append(self, item: Any) -> None:
        super().append(item)
        self.mic.hear(item.samples)


# ---------------------------------------------------------------- one design on one engine set


class Lane:
    """One server (OLD or NEW) with its stand-in, and the client peer currently talking to it."""

    def __init__(self, ctx: Ctx, engines: str, design: str, server: Server, standin: Standin | None, seed: int) -> None:
        self.ctx, self.engines, self.design, self.server, self.standin = ctx, engines, design, server, standin
        self.rng = random.Random(seed)
        self.peer: Peer | None = None
        self.dirty = False  # a reply may still be playing: the next trial gets a fresh session
        local = engines == "local"
        self.turn_timeout = 90.0 if local else 15.0
        self.reply_timeout = 60.0 if local else 10.0
        self.hold_s = 1.0 if local else 2.0  # after the final reply's `speaking`: enough to measure; longer replies are cut
        self.quiet_s = 3.0 if local else 1.5  # listening, and no event for this long: no reply is coming
        self.label = f"turns/{engines}/{design}"

    async def script(self, **changes: Any) -> None:
        if self.standin is not None:
            await self.standin.configure(**changes)

    async def fresh(self, echo_db: float | None = None) -> Peer:
        await self.close_peer()
        peer = Peer(self.server.url)
        delay = self.rng.uniform(*ECHO_DELAY_S)
        mic = TurnMic(self.rng.randrange(1 << 30), echo_db=echo_db, delay_s=delay if echo_db is not None else 0.0)
        peer.client.mic = mic
        peer.client.frames = _Tap(mic)
        await peer.connect()
        self.peer, self.dirty = peer, False
        return peer

    async def ready(self) -> Peer:
        if self.peer is None or self.dirty:
            return await self.fresh()
        return self.peer

    async def close_peer(self) -> None:
        if self.peer is not None:
            await self.peer.close()
            self.peer = None


async def _until(peer: Peer, index: int, timeout: float, pred: Any) -> tuple[float, dict[str, Any]] | None:
    """The first event from `index` on for which pred(t, event) holds, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        for t, ev in peer.client.events[index:]:
            if pred(t, ev):
                return t, ev
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.01)


def _ms(a: float | None, b: float | None) -> float | None:
    return round((a - b) * 1000, 1) if a is not None and b is not None else None


def _max_gap(start: float, times: list[float], end: float) -> float:
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in zip(points, points[1:], strict=False)) if end > start else 0.0


async def spoken_trial(lane: Lane, clip: tc.TurnClip) -> dict[str, Any]:
    """Speak a question; follow it to its final reply (or `hold_s` into it). Turn ids are not relied on."""
    peer = await lane.ready()
    # A pass over the words before a thinking pause gets just those words, as a real STT would
    # (the upload starts at the VAD's 300 ms prefix and ends TURN_PAUSE_MS into the pause).
    partial = [[clip.pause_at - clip.first_voiced + 0.9, clip.head_text]] if clip.kind == "pause" and clip.pause_at else []
    await lane.script(stt_text=clip.text, stt_by_duration=partial, llm_reply=STANDIN_REPLY, llm_first_token_delay=0.0)
    index = len(peer.client.events)
    sent = await asyncio.wait_for(peer.client.mic.say(clip.samples48k), 15)
    start, end = sent + clip.first_voiced, sent + clip.last_voiced
    deadline = end + lane.turn_timeout
    t_speaking = t_final = None
    outcome = "timeout"
    while time.monotonic() < deadline:
        last_event, state = end, None
        for t, ev in peer.client.events[index:]:
            kind = ev.get("type")
            last_event = max(last_event, t)
            if kind == "state":
                state = ev.get("state")
            if t_speaking is None and t > end and kind == "state" and ev.get("state") == "speaking":
                t_speaking = t
            if t_final is None and t > end and (kind == "error" or (kind == "reply" and not ev.get("interrupted"))):
                t_final, outcome = t, "error" if kind == "error" else "reply"
        if t_final is not None:
            break
        now = time.monotonic()
        if t_speaking is not None and now > t_speaking + lane.hold_s:
            outcome = "cut"  # measured; the rest of the reply is not waited for
            break
        if t_speaking is None and state in (None, "listening") and now > max(last_event, end + NEW_SILENCE_S) + lane.quiet_s:
            outcome = "no reply"  # e.g. an empty transcript: the server is listening and nothing is pending
            break
        await asyncio.sleep(0.03)
    if outcome != "reply":
        lane.dirty = True  # a reply still playing, or what the server carries over from an unanswered utterance
    events = [(t, ev) for t, ev in peer.client.events[index:]]
    heard = peer.audible(sent)
    first = next((t for t in heard if t >= max(end, (t_speaking or end) - 0.02)), None)
    metrics = [ev for _, ev in events if ev.get("type") == "metrics"]
    out = {
        "text": clip.text,
        "voice": clip.voice,
        "group": clip.group,
        "kind": clip.kind,
        "pause_s": clip.pause_s,
        "sent": sent,
        "speech_start": start,
        "speech_end": end,
        "outcome": outcome,
        "v2v_ms": _ms(first, end),
        "talkover_frames": sum(1 for t in heard if start <= t <= end),
        "talkover_first_ms": _ms(next((t for t in heard if start <= t <= end), None), start),
        "server_v2v_ms": metrics[-1].get("voice_to_voice_ms") if metrics else None,
        "server_endpoint_ms": metrics[-1].get("endpoint_ms") if metrics else None,
        "released_by": [m.get("released_by") for m in metrics],  # per reply that played, in order
        "metrics": {k: v for k, v in metrics[-1].items() if k != "type"} if metrics else {},
        "turn_complete": metrics[-1].get("turn_complete") if metrics else None,
        "speech_started": sum(1 for _, ev in events if ev.get("type") == "speech_started"),
        "speech_stopped": sum(1 for _, ev in events if ev.get("type") == "speech_stopped"),
        "partials": sum(1 for _, ev in events if ev.get("type") == "transcript_partial"),
        "transcripts": [ev.get("text") for _, ev in events if ev.get("type") == "transcript"],
        "replies": [
            {"interrupted": ev.get("interrupted"), "turn": ev.get("turn"), "chars": len(ev.get("text") or "")}
            for _, ev in events
            if ev.get("type") == "reply"
        ],
        "errors": [f"{ev.get('stage')}: {ev.get('message')}" for _, ev in events if ev.get("type") == "error"],
    }
    peer.forget_frames(time.monotonic() - 1.0)
    if not lane.dirty:
        await asyncio.sleep(0.4)
    return out


async def _long_reply(lane: Lane, peer: Peer, index: int) -> tuple[int | None, float, float] | str:
    """Type the long request; (turn, `speaking` arrival, first audible frame) or why not."""
    peer.client.send({"type": "text", "text": LONG_REQUEST})
    speaking = await _until(peer, index, lane.reply_timeout, lambda t, ev: ev.get("type") == "state" and ev.get("state") == "speaking")
    if speaking is None:
        return "the long reply never started"
    t_sp, ev = speaking
    deadline = time.monotonic() + 3.0
    while not (heard := peer.audible(t_sp)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if not heard:
        return "no audible frame of the long reply"
    return ev.get("turn"), t_sp, heard[0]


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def survive_trial(lane: Lane, clip: tc.TurnClip) -> dict[str, Any]:
    """A backchannel or cough 1.5 s into a long reply: does the reply survive?"""
    peer = await lane.fresh()
    lane.dirty = True
    await lane.script(
        stt_text=clip.text if clip.kind == "backchannel" else "(coughs)",
        stt_by_duration=[],
        llm_reply=LONG_REPLY,
        llm_first_token_delay=0.0,
    )
    index = len(peer.client.events)
    started = await _long_reply(lane, peer, index)
    out: dict[str, Any] = {"text": clip.text, "voice": clip.voice, "kind": clip.kind}
    if isinstance(started, str):
        return out | {"error": started}
    turn, t_sp, t_first = started
    await _sleep_until(t_first + BACKCHANNEL_AFTER_S)
    sent = await asyncio.wait_for(peer.client.mic.say(clip.samples48k), 10)
    onset = sent + clip.first_voiced
    window_end = onset + SURVIVE_WINDOW_S
    await _sleep_until(window_end + 0.2)
    events = [(t, ev) for t, ev in peer.client.events[index:]]
    reply = next(((t, ev) for t, ev in events if ev.get("type") == "reply" and ev.get("turn") == turn and t <= window_end + 0.2), None)
    if reply is not None and not reply[1].get("interrupted") and reply[0] < onset:
        return out | {"error": "the reply ended before the backchannel"}
    interrupted = bool(reply and reply[1].get("interrupted"))
    end = window_end if reply is None or interrupted else min(window_end, reply[0])
    heard = peer.audible(t_sp)
    gap = _max_gap(onset, heard, end)
    return out | {
        "turn": turn,
        "onset": onset,
        "interrupted": interrupted,
        "max_gap_ms": round(gap * 1000, 1),
        "ended": interrupted or gap > STOPPED_GAP_S,
        "speech_started": sum(1 for t, ev in events if ev.get("type") == "speech_started" and t >= onset - 0.05),
        "transcripts": [ev.get("text") for t, ev in events if ev.get("type") == "transcript" and t >= onset],
    }


async def echo_trial(lane: Lane, echo_db: float) -> dict[str, Any]:
    """A long reply with the client's loudspeaker leaking into its microphone; the client says nothing."""
    peer = await lane.fresh(echo_db=echo_db)
    lane.dirty = True
    mic = peer.client.mic
    assert isinstance(mic, TurnMic)
    await lane.script(stt_text="[BLANK_AUDIO]", stt_by_duration=[], llm_reply=LONG_REPLY, llm_first_token_delay=0.0)
    index = len(peer.client.events)
    started = await _long_reply(lane, peer, index)
    out: dict[str, Any] = {"echo_delay_ms": round(mic._delay / RATE * 1000, 1), "echo_db": echo_db}
    if isinstance(started, str):
        return out | {"error": started}
    turn, t_sp, t_first = started
    window_end = t_first + ECHO_WINDOW_S
    await _sleep_until(window_end)
    events = [(t, ev) for t, ev in peer.client.events[index:]]
    heard = peer.audible(t_first)
    n_started = sum(1 for _, ev in events if ev.get("type") == "speech_started")
    n_interrupted = sum(1 for _, ev in events if ev.get("type") == "reply" and ev.get("interrupted"))
    reply = next((t for t, ev in events if ev.get("type") == "reply" and ev.get("turn") == turn and not ev.get("interrupted")), None)
    return out | {
        "turn": turn,
        "speech_started": n_started,
        "interrupted_replies": n_interrupted,
        "self_interrupted": n_started > 0 or n_interrupted > 0,
        "max_gap_ms": round(_max_gap(t_first, heard, min(window_end, reply or window_end)) * 1000, 1),
        "transcripts": [ev.get("text") for _, ev in events if ev.get("type") == "transcript"][1:],
    }


async def bargein_trial(lane: Lane, clip: tc.TurnClip) -> dict[str, Any]:
    """A real question over a long reply: how soon is the reply silent, and does any of it come back?"""
    peer = await lane.fresh()
    lane.dirty = True
    await lane.script(stt_text=clip.text, stt_by_duration=[], llm_reply=LONG_REPLY, llm_first_token_delay=0.0)
    index = len(peer.client.events)
    started_reply = await _long_reply(lane, peer, index)
    out: dict[str, Any] = {"text": clip.text, "voice": clip.voice}
    if isinstance(started_reply, str):
        return out | {"error": started_reply}
    turn, t_sp, t_first = started_reply
    await _sleep_until(t_sp + lane.rng.uniform(0.8, 1.6))
    # the long reply's text has been generated by now (zero delay); the question's own reply starts late
    await lane.script(llm_reply=STANDIN_REPLY, llm_first_token_delay=STANDIN_QUESTION_REPLY_DELAY)
    sent = await asyncio.wait_for(peer.client.mic.say(clip.samples48k), 10)
    onset = sent + clip.first_voiced
    started = await _until(peer, index, 5.0, lambda t, ev: ev.get("type") == "speech_started" and t >= onset - 0.05)
    old = await _until(peer, index, 10.0, lambda t, ev: ev.get("type") == "reply" and ev.get("turn") == turn)
    cap = sent + clip.last_voiced + BARGE_IN_OBSERVE_S

    def new_speaking(t: float, ev: dict[str, Any]) -> bool:
        return t > onset and ev.get("type") == "state" and ev.get("state") == "speaking" and ev.get("turn") != turn

    await _until(peer, index, max(0.0, cap - time.monotonic()), new_speaking)
    await asyncio.sleep(0.3)
    await lane.script(llm_first_token_delay=0.0)
    new = await _until(peer, index, 0.0, new_speaking)
    t_new = min(new[0], cap) if new is not None else cap  # frames before it are the old reply's
    audible = peer.audible(t_sp - 0.5, t_new)
    out |= {
        "turn": turn,
        "onset": onset,
        "new_reply_started": new is not None,
        "old_reply_interrupted": bool(old and old[1].get("interrupted")),
    }
    if not [t for t in audible if t < onset]:
        return out | {"error": "no reply audio before the question"}
    out["stop_ms"] = _ms(max(audible), onset)
    if started is None:
        return out | {"error": "no speech_started for the question"}
    out["detect_ms"] = _ms(started[0], onset)
    out["stale_frames"] = sum(1 for t in audible if t > started[0] + STALE_AFTER_S)
    # audio that comes back after a silent gap once the server knew (a word gap before that is the voice's own)
    resumed, prev = 0, started[0]
    for t in (t for t in audible if t >= started[0]):
        if t - prev >= GAP_S + 0.02:
            resumed += 1
        prev = t
    out["resumed_frames"] = resumed
    return out


async def run_design(
    ctx: Ctx, engines: str, design: str, standin: Standin | None, clips: dict[str, list[tc.TurnClip]], p: Plan
) -> dict[str, Any]:
    if standin is not None:
        await standin.reset(stt_text=WARMUP, llm_reply=STANDIN_REPLY, tts_ms_per_char=STANDIN_MS_PER_CHAR)
    flags = OLD_FLAGS if design == "old" else []
    result: dict[str, Any] = {"design": design, "engines": engines, "flags": flags}
    name = f"turns-{design}-{engines}"
    try:
        server = await ctx.server(engines, flags, name, standin=standin)
    except Exception as exc:  # noqa: BLE001
        if design != "new":
            return result | {"unavailable": reason_of(exc)}
        result["fallback"] = reason_of(exc)
        result["flags"] = flags = NEW_FALLBACK
        ctx.progress(f"turns/{engines}/new: the default server did not start; again with {' '.join(flags)}")
        try:
            server = await ctx.server(engines, flags, name + "-fallback", standin=standin)
        except Exception as exc2:  # noqa: BLE001
            return result | {"unavailable": reason_of(exc2)}
    result |= {"server_ready_s": server.ready_s, "health": server.health}
    lane = Lane(ctx, engines, design, server, standin, seed=ctx.opts.seed)
    t0 = time.monotonic()
    try:
        result["warmup"] = await spoken_trial(lane, clips["warmup"][0])
        for key, run in (("plain", spoken_trial), ("pause", spoken_trial), ("survive", survive_trial), ("bargein", bargein_trial)):
            result[key] = []
            for i, clip in enumerate(clips[key]):
                r = await run(lane, clip)
                result[key].append(r)
                ctx.progress(f"{lane.label} {key} {i + 1}/{len(clips[key])}: {_brief(key, r)}")
            if key == "survive":  # echo between the long-reply kinds
                result["echo"] = []
                levels = [ECHO_DB] * p.echo + [ECHO_LOUD_DB] * p.echo_loud
                for i, db in enumerate(levels):
                    r = await echo_trial(lane, db)
                    result["echo"].append(r)
                    ctx.progress(f"{lane.label} echo {i + 1}/{len(levels)}: {_brief('echo', r)}")
        await lane.close_peer()
    except Exception as exc:  # noqa: BLE001 - report what was measured
        result["error"] = reason_of(exc)
        ctx.progress(f"{lane.label}: FAILED: {result['error']}")
        await lane.close_peer()
    finally:
        server.close()
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["summary"] = summarise(result)
    return result


def _brief(key: str, r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"[{r['error']}]"
    if key == "plain":
        return f"{r['group']} {r['voice']}: v2v {fmt(r['v2v_ms'])} ms (server {fmt(r['server_v2v_ms'])}) {r['outcome']}"
    if key == "pause":
        return f"pause {r['pause_s']} s {r['voice']}: talk-over {r['talkover_frames']} frames, v2v {fmt(r['v2v_ms'])} ms {r['outcome']}"
    if key == "survive":
        return f"{r['kind']} {r['text']!r}: {'ENDED' if r['ended'] else 'survived'} (interrupted {r['interrupted']}, longest gap {fmt(r['max_gap_ms'])} ms)"
    if key == "echo":
        return f"-{r['echo_db']:g} dB, delay {r['echo_delay_ms']} ms: speech_started {r['speech_started']}, interrupted replies {r['interrupted_replies']}"
    return f"stop {fmt(r.get('stop_ms'))} ms, detect {fmt(r.get('detect_ms'))} ms, stale {r.get('stale_frames')}, resumed {r.get('resumed_frames')}"


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    plain = [t for t in r.get("plain", []) if t.get("outcome") in ("reply", "cut")]
    for group in ("seen", "held-out"):
        s[f"v2v_{group}"] = summary(t["v2v_ms"] for t in plain if t["group"] == group)
        s[f"v2v_{group}_voices"] = sorted({t["voice"] for t in plain if t["group"] == group})
    s["server_v2v"] = summary(t["server_v2v_ms"] for t in plain)
    s["released_by_model"] = (sum(1 for t in plain if t["released_by"][-1:] == ["model"]), len(plain))
    s["plain_failed"] = [
        f"{t['text']!r} ({t['voice']}): {t['outcome']} {t['errors'] or ''}".strip() for t in r.get("plain", []) if t not in plain
    ]
    s["pause_failed"] = [
        f"{t['text']!r} pause {t['pause_s']} s: {t['outcome']}" for t in r.get("pause", []) if t["outcome"] not in ("reply", "cut")
    ]
    s["plain_talkover"] = (sum(1 for t in r.get("plain", []) if t["talkover_frames"]), len(r.get("plain", [])))
    for pause in tc.PAUSES_S:
        trials = [t for t in r.get("pause", []) if t["pause_s"] == pause]
        for group in ("seen", "held-out"):
            mine = [t for t in trials if t["group"] == group]
            s[f"talkover_{pause}_{group}"] = (sum(1 for t in mine if t["talkover_frames"]), len(mine))
    s["pause_v2v"] = summary(t["v2v_ms"] for t in r.get("pause", []) if t.get("outcome") in ("reply", "cut"))
    for kind in ("backchannel", "cough"):
        trials = [t for t in r.get("survive", []) if t["kind"] == kind and not t.get("error")]
        s[f"ended_{kind}"] = (sum(1 for t in trials if t["ended"]), len(trials))
        s[f"gap_{kind}"] = summary(t["max_gap_ms"] for t in trials)
    s["survive_errors"] = [t["error"] for t in r.get("survive", []) if t.get("error")]
    echo = [t for t in r.get("echo", []) if not t.get("error")]
    for db in (ECHO_DB, ECHO_LOUD_DB):
        level = [t for t in echo if t["echo_db"] == db]
        s[f"echo_self_{db:g}"] = (sum(1 for t in level if t["self_interrupted"]), len(level))
    s["echo_errors"] = [t["error"] for t in r.get("echo", []) if t.get("error")]
    barge = [t for t in r.get("bargein", []) if t.get("stop_ms") is not None]
    s["bargein_stop"] = summary(t["stop_ms"] for t in barge)
    s["bargein_detect"] = summary(t.get("detect_ms") for t in barge)
    s["bargein_stale"] = sum(t.get("stale_frames") or 0 for t in barge)
    s["bargein_resumed"] = sum(t.get("resumed_frames") or 0 for t in barge)
    s["bargein_n"] = len(barge)
    s["bargein_errors"] = [t["error"] for t in r.get("bargein", []) if t.get("error")]
    s["partials"] = sum(t.get("partials", 0) for t in r.get("plain", []) + r.get("pause", []))
    return s


# ---------------------------------------------------------------- the table


def _pp(x: dict[str, Any]) -> str:
    return f"{x['p50']:.0f} / {x['p95']:.0f} (n={x['n']})" if x.get("n") else "-"


def _ratio_ms(old: dict[str, Any], new: dict[str, Any]) -> str:
    if not old.get("n") or not new.get("n") or not old["p50"] or not old["p95"]:
        return "-"
    return f"{new['p50'] / old['p50']:.2f} / {new['p95'] / old['p95']:.2f}"


def _count(c: tuple[int, int]) -> str:
    return f"{c[0]}/{c[1]}" if c[1] else "-"


def _ratio_count(old: tuple[int, int], new: tuple[int, int]) -> str:
    if not old[1] or not new[1]:
        return "-"
    if not old[0]:
        return "- (OLD 0)"
    return f"{(new[0] / new[1]) / (old[0] / old[1]):.2f}"


def turns_table(engines: str, old: dict[str, Any], new: dict[str, Any], side_by_side: bool) -> str:
    so, sn = old.get("summary", {}), new.get("summary", {})
    name = "stand-in engines, zero delay" if engines == "standin" else "embedded engines"
    rows: list[list[str]] = []

    def ms_row(label: str, key: str, how: str) -> None:
        rows.append([label, _pp(so.get(key, {})), _pp(sn.get(key, {})), _ratio_ms(so.get(key, {}), sn.get(key, {})), how])

    def count_row(label: str, key: str, how: str) -> None:
        o, n = tuple(so.get(key, (0, 0))), tuple(sn.get(key, (0, 0)))
        rows.append([label, _count(o), _count(n), _ratio_count(o, n), how])  # type: ignore[arg-type]

    ms_row("voice-to-voice, seen voices (espeak-ng)", "v2v_seen", "first audible reply frame - end of last voiced 10 ms")
    ms_row("voice-to-voice, held-out voices (flite)", "v2v_held-out", "same, voices no part tunes on")
    ms_row("  server's voice_to_voice_ms (plain)", "server_v2v", "metrics event; blind to the uplink")
    count_row("  released by the end-of-turn model (plain)", "released_by_model", "metrics event released_by; else by silence")
    for pause in tc.PAUSES_S:
        apart = " (= NEW's VAD_SILENCE_MS)" if pause == 1.2 else ""
        for group, voices in (("seen", "espeak-ng"), ("held-out", "flite, held-out phrasings")):
            count_row(
                f"talk-overs, {pause:.1f} s thinking pause{apart}, {voices}",
                f"talkover_{pause}_{group}",
                "reply audio heard between the question's first and last voiced sample",
            )
    count_row("talk-overs, plain questions", "plain_talkover", "same, questions without a pause")
    count_row(
        "replies ended by a backchannel", "ended_backchannel", f"interrupted, or silent > {STOPPED_GAP_S:g} s within {SURVIVE_WINDOW_S:g} s"
    )
    count_row("replies ended by a cough", "ended_cough", "same; 250 ms band-passed noise burst")
    ms_row("  longest reply gap after a backchannel", "gap_backchannel", "onset -> reply audio again (or window end)")
    count_row(
        f"self-interruptions under echo, -{ECHO_DB:g} dB",
        f"echo_self_{ECHO_DB:g}",
        "speech_started or interrupted reply; client silent, echo 50-100 ms late",
    )
    count_row(f"self-interruptions under echo, -{ECHO_LOUD_DB:g} dB", f"echo_self_{ECHO_LOUD_DB:g}", "same, a louder speaker")
    ms_row("barge-in: onset -> reply's last audible frame", "bargein_stop", "a real question over a long reply")
    ms_row("  onset -> speech_started (server)", "bargein_detect", "event arrival")
    rows.append(
        [
            "  stale frames / resumed after a gap",
            f"{so.get('bargein_stale', '-')} / {so.get('bargein_resumed', '-')}",
            f"{sn.get('bargein_stale', '-')} / {sn.get('bargein_resumed', '-')}",
            "",
            f"> {STALE_AFTER_S * 1000:.0f} ms after speech_started / after a >= {GAP_S * 1000:.0f} ms gap",
        ]
    )
    new_label = "NEW*" if new.get("fallback") else "NEW"
    title = f"Turn-taking - {name}: OLD (500 ms silence, cancel at once, no echo gate) vs {new_label} (defaults); ms p50 / p95"
    if side_by_side:
        title += "\n  OLD and NEW ran side by side (each its own stand-in and server), same clips in the same order"
    text = table(["figure", "OLD", new_label, "NEW/OLD", "how (client-side)"], rows, title)
    if new.get("fallback"):
        text += f"\n  NEW*: the default server did not start ({new['fallback']}); measured with {' '.join(new['flags'])}"
    for label, r in (("OLD", old), (new_label, new)):
        s = r.get("summary", {})
        problems = (
            s.get("plain_failed", [])
            + s.get("pause_failed", [])
            + s.get("survive_errors", [])
            + s.get("echo_errors", [])
            + s.get("bargein_errors", [])
        )
        if r.get("error"):
            problems.insert(0, f"part stopped: {r['error']}")
        if problems:
            text += f"\n  {label} problems: " + "; ".join(str(p) for p in problems[:6]) + (" ..." if len(problems) > 6 else "")
        if s.get("partials"):
            text += f"\n  {label}: {s['partials']} transcript_partial events"
    held = sn.get("v2v_held-out_voices") or so.get("v2v_held-out_voices")
    if not held:
        text += "\n  held-out voices: none (flite not installed: apt-get install flite)"
    return text


async def run_engines(ctx: Ctx, engines: str) -> dict[str, Any]:
    p = plan(ctx, engines)
    clips = await asyncio.to_thread(build_clips, p)
    ctx.progress(
        f"turns/{engines}: {len(clips['plain'])} plain, {len(clips['pause'])} pause, {len(clips['survive'])} backchannel/cough, "
        f"{p.echo} echo, {len(clips['bargein'])} barge-in trials per design"
    )
    if engines == "standin":
        second = Standin()
        try:
            await second.wait_ready()
            old, new = await asyncio.gather(
                run_design(ctx, engines, "old", ctx.standin, clips, p), run_design(ctx, engines, "new", second, clips, p)
            )
        finally:
            second.close()
    else:
        old = await run_design(ctx, engines, "old", None, clips, p)
        new = await run_design(ctx, engines, "new", None, clips, p)
    return {"old": old, "new": new, "plan": vars(p)}


async def run_turns(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not tc.flite_available():
        ctx.note("turns: flite is not installed, so there are no held-out voices (apt-get install flite)")
    for engines in ctx.opts.engines:
        r = await run_engines(ctx, engines)
        out[engines] = r
        old, new = r["old"], r["new"]
        if old.get("unavailable") and new.get("unavailable"):
            ctx.emit(f"Turn-taking - {engines} engines: unavailable: OLD {old['unavailable']}; NEW {new['unavailable']}")
            continue
        for label, d in (("OLD", old), ("NEW", new)):
            if d.get("unavailable"):
                ctx.note(f"turns/{engines}: {label} server unavailable: {d['unavailable']}")
        ctx.emit(turns_table(engines, old, new, side_by_side=engines == "standin"))
    return out
