"""Turn-taking, on the product's defaults: plain questions, thinking pauses, backchannels, coughs, echo.

What it measures and how each figure is defined: bench/README.md, "turns"."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from bench import turn_clips as tc
from bench.bargein import LONG_REPLY, until
from bench.context import Ctx, reason_of
from bench.procs import Server
from bench.stats import fmt, summary, table
from kit.peers import WARMUP, Peer
from kit.rtc_client import FRAME, RATE, SpeakingTrack
from settings import Settings

STANDIN_REPLY = "Here is a short answer to that."
STANDIN_MS_PER_CHAR = 30.0  # short answer ~1 s of audio; the long reply's sentences ~2 s each
LONG_REQUEST = "Tell me a long story about a dragon."
NOISE_RMS = 58.0  # -55 dBFS
ECHO_DB = 25.0  # the echo path's loss: a laptop speaker, no echo cancellation
ECHO_LOUD_DB = 15.0  # a louder speaker or a closer microphone
ECHO_DELAY_S = (0.05, 0.06)  # + up to two frames of the client's own buffering: 50-100 ms in all
BACKCHANNEL_AFTER_S = 1.5
SURVIVE_WINDOW_S = 4.0
STOPPED_GAP_S = 1.5
ECHO_WINDOW_S = 5.0
SILENCE_S = Settings().unfinished_silence_ms / 1000  # the longest silence after which a held reply is still released
GROUPS = {"seen": "espeak-ng", "held-out": "flite, held-out phrasings", "fresh": "festival, fresh phrasings"}


@dataclass
class Plan:
    plain: int  # questions, each in one seen and one held-out voice
    pause_phrases: int  # x 4 pause lengths
    backchannels: int
    coughs: int
    echo: int  # at -ECHO_DB
    echo_loud: int  # at -ECHO_LOUD_DB
    fresh: int = 0  # of tc.FRESH_PAUSE_QUESTIONS, each at every pause, and as many fresh backchannels
    pauses: tuple[float, ...] = tuple(tc.PAUSES_S)


def plan(ctx: Ctx, engines: str) -> Plan:
    if ctx.opts.quick:
        return Plan(plain=1, pause_phrases=1, backchannels=1, coughs=0, echo=1, echo_loud=0, fresh=1, pauses=(1.0,))
    if engines == "standin":
        return Plan(plain=5, pause_phrases=3, backchannels=5, coughs=2, echo=8, echo_loud=4, fresh=6)
    # embedded engines: each trial costs STT + LLM + TTS on 2 shared cores; talk-overs there mostly follow v2v
    return Plan(plain=4, pause_phrases=1, backchannels=3, coughs=1, echo=3, echo_loud=1, fresh=6, pauses=(0.8, 1.0))


def build_clips(p: Plan) -> dict[str, list[tc.TurnClip]]:
    seen, held = tc.voices("seen"), tc.voices("held-out")
    out: dict[str, list[tc.TurnClip]] = {"plain": [], "pause": [], "survive": []}
    for i in range(p.plain):
        q = tc.PLAIN_QUESTIONS[i % len(tc.PLAIN_QUESTIONS)]
        out["plain"].append(tc.plain(q, seen[i % len(seen)]))
        if held:
            out["plain"].append(tc.plain(q, held[i % len(held)]))
    for j in range(p.pause_phrases):
        first, second = tc.PAUSE_QUESTIONS[j % len(tc.PAUSE_QUESTIONS)]
        for k, pause in enumerate(p.pauses):
            out["pause"].append(tc.with_pause(first, second, pause, seen[(j + k) % len(seen)]))
        if held:
            first, second = tc.HELD_OUT_PAUSE_QUESTIONS[j % len(tc.HELD_OUT_PAUSE_QUESTIONS)]
            for k, pause in enumerate(p.pauses):
                out["pause"].append(tc.with_pause(first, second, pause, held[(j + k) % len(held)]))
    fresh = tc.voices("fresh")
    for j in range(p.fresh if fresh else 0):
        first, second = tc.FRESH_PAUSE_QUESTIONS[j % len(tc.FRESH_PAUSE_QUESTIONS)]
        for k, pause in enumerate(p.pauses):
            out["pause"].append(tc.with_pause(first, second, pause, fresh[(j + k) % len(fresh)]))
    survive = [tc.backchannel(tc.BACKCHANNELS[i % len(tc.BACKCHANNELS)], seen[i % len(seen)]) for i in range(p.backchannels)]
    survive += [
        tc.backchannel(tc.FRESH_BACKCHANNELS[i % len(tc.FRESH_BACKCHANNELS)], fresh[i % len(fresh)]) for i in range(p.fresh if fresh else 0)
    ]
    for i in range(p.coughs):  # spread the coughs among the backchannels
        survive.insert(min(len(survive), (i + 1) * 2 + i), tc.cough(seed=i))
    out["survive"] = survive
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


# ---------------------------------------------------------------- one engine set


class Lane:
    """One server and the client peer currently talking to it."""

    def __init__(self, ctx: Ctx, engines: str, server: Server, seed: int) -> None:
        self.ctx, self.engines, self.server = ctx, engines, server
        self.standin = ctx.standin if engines == "standin" else None
        self.rng = random.Random(seed)
        self.peer: Peer | None = None
        self.dirty = False  # a reply may still be playing: the next trial gets a fresh session
        local = engines == "local"
        self.turn_timeout = 90.0 if local else 15.0
        self.reply_timeout = 60.0 if local else 10.0
        self.hold_s = 1.0 if local else 2.0  # after the final reply's `speaking`: enough to measure; longer replies are cut
        self.quiet_s = 3.0 if local else 1.5  # listening, and no event for this long: no reply is coming
        self.label = f"turns/{engines}"

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
        if t_speaking is None and state in (None, "listening") and now > max(last_event, end + SILENCE_S) + lane.quiet_s:
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
        "outcome": outcome,
        "v2v_ms": _ms(first, end),
        "talkover_frames": sum(1 for t in heard if start <= t <= end),
        "server_v2v_ms": metrics[-1].get("voice_to_voice_ms") if metrics else None,
        "released_by": [m.get("released_by") for m in metrics],  # per reply that played, in order
        "metrics": {k: v for k, v in metrics[-1].items() if k != "type"} if metrics else {},
        "transcripts": [ev.get("text") for _, ev in events if ev.get("type") == "transcript"],
        "replies": [{"interrupted": ev.get("interrupted"), "turn": ev.get("turn")} for _, ev in events if ev.get("type") == "reply"],
        "errors": [f"{ev.get('stage')}: {ev.get('message')}" for _, ev in events if ev.get("type") == "error"],
    }
    peer.forget_frames(time.monotonic() - 1.0)
    if not lane.dirty:
        await asyncio.sleep(0.4)
    return out


async def _long_reply(lane: Lane, peer: Peer, index: int) -> tuple[int | None, float, float] | str:
    """Type the long request; (turn, `speaking` arrival, first audible frame) or why not."""
    peer.client.send({"type": "text", "text": LONG_REQUEST})
    speaking = await until(peer, index, lane.reply_timeout, lambda t, ev: ev.get("type") == "state" and ev.get("state") == "speaking")
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
    out: dict[str, Any] = {"text": clip.text, "voice": clip.voice, "kind": clip.kind, "group": clip.group}
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


async def run_engines(ctx: Ctx, engines: str) -> dict[str, Any]:
    p = plan(ctx, engines)
    clips = await asyncio.to_thread(build_clips, p)
    ctx.progress(
        f"turns/{engines}: {len(clips['plain'])} plain, {len(clips['pause'])} pause, {len(clips['survive'])} backchannel/cough, "
        f"{p.echo + p.echo_loud} echo trials"
    )
    if engines == "standin":
        await ctx.standin.reset(stt_text=WARMUP, llm_reply=STANDIN_REPLY, tts_ms_per_char=STANDIN_MS_PER_CHAR)
    result: dict[str, Any] = {"engines": engines, "plan": vars(p)}
    try:
        server = await ctx.server(engines, name="turns")
    except Exception as exc:  # noqa: BLE001
        return result | {"unavailable": reason_of(exc)}
    lane = Lane(ctx, engines, server, seed=ctx.opts.seed)
    t0 = time.monotonic()
    try:
        if not server.warmed:
            result["warmup"] = await spoken_trial(lane, clips["warmup"][0])
            server.warmed = True
        for key, run in (("plain", spoken_trial), ("pause", spoken_trial), ("survive", survive_trial)):
            result[key] = []
            for i, clip in enumerate(clips[key]):
                r = await run(lane, clip)
                result[key].append(r)
                ctx.progress(f"{lane.label} {key} {i + 1}/{len(clips[key])}: {_brief(key, r)}")
        result["echo"] = []
        levels = [ECHO_DB] * p.echo + [ECHO_LOUD_DB] * p.echo_loud
        for i, db in enumerate(levels):
            r = await echo_trial(lane, db)
            result["echo"].append(r)
            ctx.progress(f"{lane.label} echo {i + 1}/{len(levels)}: {_brief('echo', r)}")
    except Exception as exc:  # noqa: BLE001 - report what was measured
        result["error"] = reason_of(exc)
        ctx.progress(f"{lane.label}: FAILED: {result['error']}")
    finally:
        await lane.close_peer()
        ctx.release(server)
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
    return f"-{r['echo_db']:g} dB, delay {r['echo_delay_ms']} ms: speech_started {r['speech_started']}, interrupted replies {r['interrupted_replies']}"


def _count(trials: list[dict[str, Any]], hit: str) -> tuple[int, int]:
    return sum(1 for t in trials if t[hit]), len(trials)


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    plain = [t for t in r.get("plain", []) if t.get("outcome") in ("reply", "cut")]
    for group in ("seen", "held-out"):
        s[f"v2v_{group}"] = summary(t["v2v_ms"] for t in plain if t["group"] == group)
    s["server_v2v"] = summary(t["server_v2v_ms"] for t in plain)
    s["released_by_model"] = (sum(1 for t in plain if t["released_by"][-1:] == ["model"]), len(plain))
    s["plain_talkover"] = _count(r.get("plain", []), "talkover_frames")
    for pause in tc.PAUSES_S:
        for group in GROUPS:
            trials = [t for t in r.get("pause", []) if t["pause_s"] == pause and t["group"] == group]
            s[f"talkover_{pause}_{group}"] = _count(trials, "talkover_frames")
    for kind in ("backchannel", "cough"):
        trials = [t for t in r.get("survive", []) if t["kind"] == kind and not t.get("error")]
        s[f"ended_{kind}"] = _count([t for t in trials if t["group"] != "fresh"], "ended")
    s["ended_backchannel_fresh"] = _count([t for t in r.get("survive", []) if t["group"] == "fresh" and not t.get("error")], "ended")
    for db in (ECHO_DB, ECHO_LOUD_DB):
        s[f"echo_self_{db:g}"] = _count([t for t in r.get("echo", []) if t["echo_db"] == db and not t.get("error")], "self_interrupted")
    s["problems"] = [
        f"{t['text']!r} ({t['voice']}): {t['outcome']} {t['errors'] or ''}".strip()
        for t in r.get("plain", []) + r.get("pause", [])
        if t.get("outcome") not in ("reply", "cut")
    ] + [t["error"] for t in r.get("survive", []) + r.get("echo", []) if t.get("error")]
    return s


def _frac(c: tuple[int, int]) -> str:
    return f"{c[0]}/{c[1]}" if c[1] else "-"


def _pp(x: dict[str, Any]) -> str:
    return f"{x['p50']:.0f} / {x['p95']:.0f} (n={x['n']})" if x.get("n") else "-"


def turns_table(r: dict[str, Any]) -> str:
    s = r["summary"]
    name = "stand-in engines, zero delay" if r["engines"] == "standin" else "embedded engines"
    rows = [
        ["voice-to-voice, seen voices (espeak-ng)", _pp(s["v2v_seen"]), "first audible reply frame - end of last voiced 10 ms"],
        ["voice-to-voice, held-out voices (flite)", _pp(s["v2v_held-out"]), "same, voices no part tunes on"],
        ["  server's voice_to_voice_ms", _pp(s["server_v2v"]), "metrics event; blind to the uplink"],
        ["  released by the end-of-turn model", _frac(s["released_by_model"]), "metrics event released_by; else by silence"],
    ]
    for pause in tc.PAUSES_S:
        for group, voices in GROUPS.items():
            hits, n = s[f"talkover_{pause}_{group}"]
            if n:
                rows.append(
                    [f"talk-overs, {pause:.1f} s thinking pause, {voices}", f"{hits}/{n}", "reply audio heard while the question is spoken"]
                )
    rows += [
        ["talk-overs, plain questions", _frac(s["plain_talkover"]), "same, questions without a pause"],
        [
            "replies ended by a backchannel",
            _frac(s["ended_backchannel"]),
            f"interrupted, or silent > {STOPPED_GAP_S:g} s within {SURVIVE_WINDOW_S:g} s",
        ],
        ["replies ended by a backchannel, fresh", _frac(s["ended_backchannel_fresh"]), "same, drawn-out ones in festival voices"],
        ["replies ended by a cough", _frac(s["ended_cough"]), "same; 250 ms band-passed noise burst"],
        [f"self-interruptions under echo, -{ECHO_DB:g} dB", _frac(s[f"echo_self_{ECHO_DB:g}"]), "client silent, echo 50-100 ms late"],
        [f"self-interruptions under echo, -{ECHO_LOUD_DB:g} dB", _frac(s[f"echo_self_{ECHO_LOUD_DB:g}"]), "same, a louder speaker"],
    ]
    text = table(["figure", "ms p50 / p95 or count", "how (client-side)"], rows, f"Turn-taking - {name}, the product's defaults")
    problems = ([f"part stopped: {r['error']}"] if r.get("error") else []) + s["problems"]
    if problems:
        text += "\n  problems: " + "; ".join(str(p) for p in problems[:6]) + (" ..." if len(problems) > 6 else "")
    if not tc.flite_available():
        text += "\n  held-out voices: none (flite not installed: apt-get install flite)"
    return text


async def run_turns(ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for engines in ctx.opts.engines:
        r = out[engines] = await run_engines(ctx, engines)
        if r.get("unavailable"):
            ctx.emit(f"Turn-taking - {engines} engines: unavailable: {r['unavailable']}")
            continue
        ctx.emit(turns_table(r))
        s = r["summary"]
        for group in ("seen", "held-out"):
            ctx.figure(f"turns/{engines}/v2v_{group}_p50_ms", s[f"v2v_{group}"].get("p50"))
        talkovers = [s[k] for k in s if k.startswith("talkover_")]
        ctx.figure(f"turns/{engines}/talkovers", sum(h for h, _ in talkovers))
        ctx.figure(f"turns/{engines}/replies_ended", s["ended_backchannel"][0] + s["ended_cough"][0] + s["ended_backchannel_fresh"][0])
        ctx.figure(f"turns/{engines}/self_interruptions", s[f"echo_self_{ECHO_DB:g}"][0] + s[f"echo_self_{ECHO_LOUD_DB:g}"][0])
    return out
