"""Bad input, access control, limits, faults and observability: the server keeps talking."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit.rtc_client import Client
from kit.standin import speech_like
from pipeline.engines.base import EngineBusy, Engines, Heard
from rtc.session import SessionLimits
from tests.conftest import Running

pytestmark = pytest.mark.loopback


class ScriptedSTT:
    """An in-process engine whose behaviour a test scripts: text, an exception, or busy."""

    name = "scripted"
    partials = False  # each call takes the next scripted outcome: no passes while the user speaks

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    async def transcribe(self, pcm: bytes, sample_rate: int = 16000, prompt: str = "", language: str = "") -> Heard:
        outcome = self.outcomes.pop(0) if self.outcomes else "Hello."
        if isinstance(outcome, BaseException):
            # Raised on a worker thread, like a local engine's native code failing.
            def fail() -> str:
                raise outcome

            return Heard(await asyncio.to_thread(fail))
        return Heard(outcome)


class EchoLLM:
    name = "echo-llm"

    async def stream(self, messages, tools=None):
        for word in f"You said {messages[-1]['content']}".split():
            yield word + " "


class ToneTTS:
    name = "tone"
    sample_rate = 24000

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    async def stream(self, text, language="en"):
        if self.outcomes:
            raise self.outcomes.pop(0)
        yield speech_like(text).tobytes()


def engines() -> Engines:
    return Engines(stt=ScriptedSTT(), llm=EchoLLM(), tts=ToneTTS())


async def post(url: str, body: Any, headers: dict[str, str] | None = None, raw: bool = False) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        data = body if raw else json.dumps(body)
        async with http.post(f"{url}/offer", data=data, headers=headers or {}) as resp:
            return resp.status, await resp.json(content_type=None)


async def offer_sdp(video: bool = False, audio: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("events")
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        if video:
            pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def good_client_works(server: Running, clients) -> Client:
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "Are you there?"})
    _, reply = await client.wait_event("reply", timeout=15)
    assert reply["text"] == "You said Are you there?"
    return client


async def test_malformed_offers_get_clear_400s_and_the_server_keeps_serving(start_server, clients):
    server = await start_server(engines=engines())
    sdp = await offer_sdp()
    cases: list[tuple[Any, bool, int, str]] = [
        (b"not json", True, 400, "JSON"),
        (b"", True, 400, "JSON"),
        (b"\xff\xfe\x00garbage", True, 400, "JSON"),
        ([1, 2], False, 400, "object"),
        ("a string", False, 400, "object"),
        ({}, False, 400, "sdp"),
        ({"type": "offer"}, False, 400, "sdp"),
        ({"sdp": 42, "type": "offer"}, False, 400, "sdp"),
        ({"sdp": "", "type": "offer"}, False, 400, "sdp"),
        ({"sdp": sdp}, False, 400, "type"),
        ({"sdp": sdp, "type": "answer"}, False, 400, "type"),
        ({"sdp": sdp, "type": ["offer"]}, False, 400, "type"),
        ({"sdp": "v=0\r\ngarbage\r\n", "type": "offer"}, False, 400, ""),
        ({"sdp": "x" * 5000, "type": "offer"}, False, 400, ""),
        ({"sdp": await offer_sdp(audio=False), "type": "offer"}, False, 400, "audio"),
        ({"sdp": await offer_sdp(audio=False, video=True), "type": "offer"}, False, 400, "audio"),
        ({"sdp": sdp, "type": "offer", "session": "abc"}, False, 409, "renegotiat"),
        (json.dumps({"sdp": "v=0 " * 40000, "type": "offer"}).encode(), True, 413, "too large"),
    ]
    # A good client is connected throughout and must be unaffected.
    during = await good_client_works(server, clients)
    for body, raw, status, words in cases:
        got, answer = await post(server.url, body, raw=raw)
        assert got == status, (body if not raw else body[:40], got, answer)
        assert isinstance(answer.get("error"), str) and words.lower() in answer["error"].lower(), answer
    during.send({"type": "text", "text": "Still here?"})
    _, reply = await during.wait_event("reply", turn=2, timeout=15)
    assert reply["text"] == "You said Still here?"
    # extra fields are ignored; audio plus video is answered (the video is left unused)
    status, answer = await post(server.url, {"sdp": await offer_sdp(video=True), "type": "offer", "extra": 1})
    assert status == 200 and answer["type"] == "answer" and answer["session"]
    await good_client_works(server, clients)


async def test_bad_data_channel_messages_get_error_events(start_server, clients):
    server = await start_server(engines=engines())
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    bad = [
        "not json",
        "[1, 2]",
        '{"no_type": 1}',
        '{"type": 5}',
        '{"type": "bogus"}',
        '{"type": "text"}',
        '{"type": "text", "text": ""}',
        '{"type": "text", "text": 12}',
        json.dumps({"type": "text", "text": "a" * 5000}),
        "x" * 60000,
        '{"type": "timezone"}',
        '{"type": "timezone", "timezone": 5}',
        '{"type": "timezone", "timezone": "Mars/Olympus"}',
    ]
    for message in bad:
        client.channel.send(message)
    client.channel.send(b"\x00\x01binary")
    deadline = time.monotonic() + 10
    while len([e for _, e in client.events if e["type"] == "error"]) < len(bad) + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    errors = [e for _, e in client.events if e["type"] == "error"]
    assert len(errors) == len(bad) + 1 and all(e["stage"] == "input" and e["message"] for e in errors)
    client.send({"type": "text", "text": "And now a real question."})
    _, reply = await client.wait_event("reply", timeout=15)
    assert reply["text"] == "You said And now a real question."


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
offer_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"sdp": st.text(max_size=300) | json_values, "type": st.sampled_from(["offer", "answer", "", 1])}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.text(alphabet="v=0oscmatrSDP:\r\n 1234567890-IN IP4", max_size=400).map(
        lambda sdp: json.dumps({"sdp": sdp, "type": "offer"}).encode()
    ),
)
channel_messages = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "ping", "timezone", "bogus", ""]), "text": json_values}).map(json.dumps),
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # aioice's own use of `random`
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies=st.lists(offer_bodies, min_size=1, max_size=4), messages=st.lists(channel_messages, min_size=1, max_size=6))
def test_fuzzed_offers_and_messages_never_crash_the_server(fuzz_target, bodies, messages):
    """Each example posts offer bodies and sends channel messages; no 500, and the server stays healthy."""
    fuzz_target.run(bodies, messages)


@pytest.fixture(scope="module")
def fuzz_target():
    """One server and one connected client for the whole fuzz run, on a loop in a thread."""
    import threading

    from aiohttp.test_utils import TestServer

    from pipeline.wiring import pipeline_factory
    from rtc.http import SESSIONS, HttpConfig, create_app
    from rtc.ice import use_host_addresses
    from tests.conftest import make_settings

    use_host_addresses(["127.0.0.1"])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    class Target:
        async def _start(self):
            settings = make_settings(max_turns_per_minute=100000)
            app = create_app(HttpConfig(make_pipeline=pipeline_factory(settings, engines()), max_sessions=1000))
            self.app = app
            self.server = TestServer(app)
            await self.server.start_server()
            self.url = str(self.server.make_url("")).rstrip("/")
            self.client = Client(self.url)
            await self.client.connect()
            await self.client.wait_event("state", state="listening")
            self.count = 0

        async def _run(self, bodies, messages):
            for body in bodies:
                status, answer = await post(self.url, body, raw=True)
                assert status < 500 and (status == 200 or "error" in answer), (body, status, answer)
                if status == 200:
                    await self.app[SESSIONS][answer["session"]].close()
            for message in messages:
                self.client.channel.send(message)
            self.count += len(bodies) + len(messages)

        def run(self, bodies, messages):
            call(self._run(bodies, messages))

        async def _finish(self):
            self.client.send({"type": "text", "text": "Still alive?"})
            _, reply = await self.client.wait_event("reply", timeout=15, text="You said Still alive?")
            sessions = len(self.app[SESSIONS])
            await self.client.close()
            await self.server.close()
            return sessions

    target = Target()
    call(target._start())
    yield target
    assert call(target._finish()) == 1  # only the fuzzing client's own session is left
    print(f"\nfuzz: {target.count} offer bodies and channel messages, no 5xx, server healthy")
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


async def test_token_origin_and_session_limits(start_server, clients):
    server = await start_server(engines=engines())
    from rtc.http import CONFIG

    config = server.app[CONFIG]
    config.token, config.max_sessions, config.allowed_origins = "let-me-in", 2, ["https://app.example"]
    sdp = await offer_sdp()
    status, answer = await post(server.url, {"sdp": sdp, "type": "offer"})
    assert status == 401 and "token" in answer["error"]
    status, answer = await post(server.url, {"sdp": sdp, "type": "offer"}, {"Authorization": "Bearer wrong"})
    assert status == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/config") as resp:
            assert (await resp.json())["token_required"] is True
    auth = {"Authorization": "Bearer let-me-in"}
    status, answer = await post(server.url, {"sdp": sdp, "type": "offer"}, auth | {"Origin": "https://evil.example"})
    assert status == 403 and "origin" in answer["error"]
    # the page's own origin and an allowed one pass
    host = server.url.split("//", 1)[1]
    first = await clients(server.url, headers=auth | {"Origin": f"http://{host}"})
    second = await clients(server.url, headers=auth | {"Origin": "https://app.example"})
    await first.wait_event("state", state="listening")
    await second.wait_event("state", state="listening")
    status, answer = await post(server.url, {"sdp": sdp, "type": "offer"}, auth)
    assert status == 503 and "full" in answer["error"]
    await first.close()
    deadline = time.monotonic() + 5
    while len(server.sessions) > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    third = await clients(server.url, headers=auth)  # capacity is back
    assert third.session and second.session


async def test_idle_session_says_goodbye_and_closes(start_server, clients):
    server = await start_server(engines=engines(), limits=SessionLimits(idle_timeout_s=1.5))
    client = await clients(server.url)
    t0, _ = await client.wait_event("state", state="listening")
    t_bye, bye = await client.wait_event("goodbye", timeout=6)
    # idle counts from the session's start, a little before its channel opened; the watchdog ticks every 0.5 s
    # (the upper bound is loose: both events reach the client through a loop a busy machine may delay)
    assert "goodbye" in bye["reason"] and 1.0 < t_bye - t0 < 5.0
    deadline = time.monotonic() + 5
    while server.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.sessions == {}


async def test_engine_crash_and_busy_engine_are_reported_and_the_session_goes_on(start_server, clients):
    eng = engines()
    server = await start_server(engines=eng)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    from kit.rtc_client import to_48k
    from kit.speech import concat, silence, speak

    eng.stt.outcomes = [RuntimeError("native code blew up"), EngineBusy("stt", "speech recognition is busy")]
    clip = to_48k(concat(speak("Hello there."), silence(0.7)))
    await client.mic.say(clip)
    _, crash = await client.wait_event("error", timeout=15)
    assert crash["stage"] == "stt" and "blew up" not in crash["message"]  # internals stay in the log
    await client.mic.say(clip)
    t_busy, busy = await client.wait_event("error", timeout=15, message="speech recognition is busy")
    assert busy["stage"] == "stt"
    eng.tts.outcomes = [RuntimeError("synthesis crashed")]
    client.send({"type": "text", "text": "One"})
    _, tts_crash = await client.wait_event("error", timeout=15, stage="tts")
    client.send({"type": "text", "text": "Two"})
    _, reply = await client.wait_event("reply", timeout=15, text="You said Two")
    assert server.sessions


async def test_turn_rate_limit(start_server, clients):
    server = await start_server(engines=engines(), max_turns_per_minute=2)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    for i in range(3):
        client.send({"type": "text", "text": f"Number {i}"})
        await asyncio.sleep(0.2)
    _, error = await client.wait_event("error", timeout=10, stage="rate")
    assert "too many turns" in error["message"]


async def test_metrics_and_health_show_activity_but_no_secrets(start_server, clients, caplog):
    caplog.set_level(logging.DEBUG)
    server = await start_server(engines=engines())
    client = await good_client_works(server, clients)
    client.send({"type": "bogus"})
    await client.wait_event("error", stage="input")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            text = await resp.text()
        async with http.get(f"{server.url}/healthz") as resp:
            health = await resp.json()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["voice_sessions_open"] == 1
    assert values["voice_turns_total"] == 1
    assert sum(v for k, v in values.items() if k.startswith("voice_turns_released_total")) == 1
    assert values['voice_errors_total{stage="input"}'] == 1
    assert values['voice_stage_latency_seconds_count{stage="llm_first_token"}'] == 1
    assert "voice_event_loop_lag_p99_seconds" in values and values["voice_event_loop_lag_seconds_count"] > 10
    assert values["voice_outbound_late_frames"] >= 0
    assert health["sessions"] == 1 and health["status"] == "ok"
    # no user content in the logs by default
    assert "Are you there" not in caplog.text


async def test_shutdown_says_goodbye_to_every_client_and_closes_them(start_server, clients):
    server = await start_server(engines=engines())
    connected = [await clients(server.url) for _ in range(3)]
    for client in connected:
        await client.wait_event("state", state="listening")
    await server.app.shutdown()  # what SIGINT/SIGTERM run before the server stops
    assert server.sessions == {}
    for client in connected:
        _, bye = await client.wait_event("goodbye", timeout=5)
        assert "shutting down" in bye["reason"]
