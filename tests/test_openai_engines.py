"""The OpenAI-protocol engines, unpatched, over real HTTP against the local stand-in (kit/standin.py)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest

from kit.standin import StandinConfig, run_standin, speech_like
from pipeline.engines.audio_decode import open_decoder
from pipeline.engines.base import EngineError
from pipeline.engines.factory import build_engines
from pipeline.engines.openai_common import GROQ_BASE_URL, NO_KEY, OPENAI_BASE_URL, Endpoint, resolve_endpoint
from pipeline.engines.openai_llm import OpenAILLM
from pipeline.engines.openai_stt import OpenAISTT
from pipeline.engines.openai_tts import OpenAITTS
from settings import Settings, SettingsError

KEY = "sk-standin-secret-0123456789abcdef"
TIMEOUT = 0.4  # engine timeout in the fault tests
# How long the stand-in holds a reply there: an engine that waited for it instead of timing out takes
# this long, while how much over TIMEOUT a timed-out one takes depends on the machine's load.
HELD_S = 5.0
_E = TypeVar("_E", OpenAISTT, OpenAILLM, OpenAITTS)


@dataclass
class Standin:
    config: StandinConfig
    url: str
    engines: list[OpenAISTT | OpenAILLM | OpenAITTS] = field(default_factory=list)

    def endpoint(self, model: str = "standin-model", key: str = KEY) -> Endpoint:
        return Endpoint(base_url=self.url, api_key=key, model=model)

    def stt(self, model: str = "standin-model", key: str = KEY, **kwargs: Any) -> OpenAISTT:
        return self._keep(OpenAISTT(self.endpoint(model, key), **kwargs))

    def llm(self, model: str = "standin-model", key: str = KEY, **kwargs: Any) -> OpenAILLM:
        return self._keep(OpenAILLM(self.endpoint(model, key), **kwargs))

    def tts(self, model: str = "standin-model", key: str = KEY, **kwargs: Any) -> OpenAITTS:
        return self._keep(OpenAITTS(self.endpoint(model, key), **kwargs))

    def _keep(self, engine: _E) -> _E:
        self.engines.append(engine)
        return engine


@pytest.fixture
async def standin() -> AsyncIterator[Standin]:
    config = StandinConfig(api_key=KEY)
    async with run_standin(config) as url:
        s = Standin(config, url)
        yield s
        for engine in s.engines:  # an unclosed SDK client would close itself on a dead loop
            await engine.close()
        await until(lambda: not any(t.name.startswith("decode-") for t in threading.enumerate()))  # no decoder thread left behind


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def collect(gen: AsyncIterator, into: list) -> None:
    async for item in gen:
        into.append(item)


def check_error(exc: pytest.ExceptionInfo[EngineError], stage: str, *secrets: str) -> None:
    assert exc.value.stage == stage
    for secret in (KEY, *secrets):
        assert secret not in str(exc.value) and secret not in exc.value.message


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16).tobytes()


# ---------------------------------------------------------------- STT


async def test_transcribe_sends_a_wav_and_returns_the_text(standin: Standin) -> None:
    standin.config.stt_text = "  What time is it?  "
    stt = standin.stt("whisper-x", languages=("en",))
    pcm = tone(1.5)
    assert (await stt.transcribe(pcm)).text == "What time is it?"
    (got,) = standin.config.log.transcriptions
    assert (got.model, got.language, got.content_type) == ("whisper-x", "en", "audio/wav")
    assert (got.sample_rate, got.channels, got.sample_width) == (16000, 1, 2)
    assert got.duration_s == pytest.approx(1.5) and got.pcm == pcm
    assert standin.config.log.auth_headers == [f"Bearer {KEY}"]
    assert stt.name == "openai:whisper-x"


@pytest.mark.parametrize(
    ("languages", "text", "sent", "heard"),
    [
        (("en",), "What time is it?", ("en", "json"), "en"),  # the request as before: no response_format
        (("zh",), "中国的首都是哪里？", ("zh", "json"), "zh"),  # one language: Whisper is told it, never forced to English
        (("en", "zh"), "中国的首都是哪里？", ("", "verbose_json"), "zh"),  # several: the endpoint detects it
        (("en", "zh"), "What time is it?", ("", "verbose_json"), "en"),
        (("en", "pt"), "Qual é a capital do Brasil?", ("", "verbose_json"), "pt"),
    ],
)
async def test_the_request_names_the_language_only_when_one_is_accepted(
    standin: Standin, languages: tuple[str, ...], text: str, sent: tuple[str, str], heard: str
) -> None:
    standin.config.stt_text = text
    standin.config.stt_language_name = "portuguese" if heard == "pt" else ""
    got = await standin.stt(languages=languages).transcribe(tone(1.0))
    (request,) = standin.config.log.transcriptions
    assert (request.language, request.response_format) == sent
    assert (got.text, got.language) == (text, heard)


async def test_a_detected_language_outside_the_accepted_ones_is_taken_by_its_script(standin: Standin) -> None:
    standin.config.stt_text, standin.config.stt_language_name = "北京。", "japanese"
    assert (await standin.stt(languages=("en", "zh")).transcribe(tone(1.0))).language == "zh"


async def test_transcript_script_then_callable(standin: Standin) -> None:
    standin.config.stt_script = ["first"]
    standin.config.stt_reply = lambda t: f"{t.duration_s:.1f} seconds"
    stt = standin.stt()
    assert (await stt.transcribe(tone(0.5))).text == "first"
    assert (await stt.transcribe(tone(0.8, rate=8000), sample_rate=8000)).text == "0.8 seconds"


async def test_stt_http_500_is_an_engine_error(standin: Standin) -> None:
    standin.config.stt_status = 500
    stt = standin.stt(max_retries=0)
    with pytest.raises(EngineError) as exc:
        await stt.transcribe(tone(0.3))
    check_error(exc, "stt")
    assert "500" in exc.value.message


async def test_stt_timeout_and_malformed_reply(standin: Standin) -> None:
    stt = standin.stt(timeout_s=TIMEOUT, max_retries=0)
    standin.config.stt_delay = HELD_S
    start = time.monotonic()
    with pytest.raises(EngineError) as exc:
        await stt.transcribe(tone(0.3))
    assert time.monotonic() - start < HELD_S
    check_error(exc, "stt")
    standin.config.stt_delay, standin.config.stt_malformed = 0, True
    with pytest.raises(EngineError) as exc:
        await stt.transcribe(tone(0.3))
    check_error(exc, "stt")


async def test_rejected_key_echoed_by_the_server_is_not_repeated(standin: Standin) -> None:
    wrong = "sk-wrong-key-that-must-not-leak-42"
    stt = standin.stt(key=wrong, max_retries=0)
    with pytest.raises(EngineError) as exc:
        await stt.transcribe(tone(0.3))
    check_error(exc, "stt", wrong)
    assert "401" in exc.value.message
    llm = standin.llm(key=wrong, max_retries=0)
    with pytest.raises(EngineError) as exc:
        await collect(llm.stream([{"role": "user", "content": "hi"}]), [])
    check_error(exc, "llm", wrong)
    tts = standin.tts(key=wrong, max_retries=0)
    with pytest.raises(EngineError) as exc:
        await collect(tts.stream("hi"), [])
    check_error(exc, "tts", wrong)


# ---------------------------------------------------------------- LLM


async def test_llm_streams_several_deltas_with_the_history(standin: Standin) -> None:
    llm = standin.llm("chat-model", max_tokens=150)
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    deltas: list[str] = []
    await collect(llm.stream(history), deltas)
    assert len(deltas) > 5 and all(deltas)
    text = "".join(deltas)
    assert text.startswith("You said: What is my name. This is message 4.")
    assert text.count(".") >= 4
    body = standin.config.log.chat_requests[-1]
    assert body["messages"] == history and body["stream"] is True and body["max_tokens"] == 150 and body["model"] == "chat-model"
    assert standin.config.log.llm_streams_completed == 1


async def test_llm_streams_tool_calls_and_answers_with_their_results(standin: Standin) -> None:
    from pipeline.engines.base import ToolCall
    from pipeline.tools import Act, Toolbox, built_in

    standin.config.llm_tool_calls = [
        {"name": "calculate", "arguments": '{"expression": "47 * 23"}'},
        {"name": "current_time", "arguments": "{}"},
    ]
    llm = standin.llm()
    tools = Toolbox(built_in(["clock", "arithmetic"])).specs
    question: list[Any] = [{"role": "user", "content": "What is 47 times 23, and what time is it?"}]
    items: list[Any] = []
    async for item in llm.stream(question, tools):
        items.append(item)
    assert items == [
        ToolCall("call_1_0", "calculate", '{"expression": "47 * 23"}'),
        ToolCall("call_1_1", "current_time", "{}"),
    ], "fragments joined into whole calls, in order"
    assert standin.config.log.chat_requests[-1]["tools"] == tools
    acts = [Act(items[0], "47 * 23 = 1081", ok=True), Act(items[1], "Wednesday, 02 December 2026, 12:00 (UTC)", ok=True)]
    answer: list[Any] = []
    async for item in llm.stream([*question, *Act.messages(acts)], tools):
        answer.append(item)
    assert answer and all(isinstance(a, str) for a in answer), "with the results, it answers in words"
    sent = standin.config.log.chat_requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "calculate", "arguments": '{"expression": "47 * 23"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1_0", "content": "47 * 23 = 1081"}
    async for _ in llm.stream(question):
        pass
    assert "tools" not in standin.config.log.chat_requests[-1], "no tools: none offered"


async def test_tool_router_on_calls_the_built_ins_itself_and_offers_the_model_only_the_others(standin: Standin) -> None:
    """TOOL_ROUTER=on (the embedded LLM behind the supervisor's server, or any small model): the
    built-ins never reach the endpoint; an MCP tool still does."""
    from pipeline.engines.factory import build_llm
    from pipeline.engines.tool_router import RoutedLLM
    from pipeline.tools import Act, Toolbox, built_in
    from tests.conftest import make_settings

    endpoint = {"llm_engine": "openai", "llm_base_url": standin.url, "llm_api_key": KEY, "llm_model": "m"}
    llm = build_llm(make_settings(**endpoint, tool_router="on"))
    assert isinstance(llm, RoutedLLM) and isinstance(llm.llm, OpenAILLM) and standin._keep(llm.llm)
    assert isinstance(standin._keep(build_llm(make_settings(**endpoint))), OpenAILLM), "auto: off for the openai engine"
    other = {"type": "function", "function": {"name": "count_words", "description": "", "parameters": {"type": "object"}}}
    tools = [*Toolbox(built_in(["clock", "arithmetic", "timers"])).specs, other]
    question: list[Any] = [{"role": "user", "content": "What is 47 times 23?"}]
    (call,) = [item async for item in llm.stream(question, tools)]
    assert call.name == "calculate" and standin.config.log.chat_requests == [], "routed: no request"
    said = [item async for item in llm.stream([*question, *Act.messages([Act(call, "47 * 23 = 1081", ok=True)])], tools)]
    assert said == ["47 times 23 is 1081."] and standin.config.log.chat_requests == []
    async for _ in llm.stream([{"role": "user", "content": "What is the capital of France?"}], tools):
        pass
    assert [t["function"]["name"] for t in standin.config.log.chat_requests[-1]["tools"]] == ["count_words"]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_llm_stopping_early_stops_the_server(standin: Standin, how: str) -> None:
    standin.config.llm_reply = lambda messages: " ".join(f"word{i}" for i in range(200))
    standin.config.llm_token_delay = 0.01
    llm = standin.llm()
    got: list[str] = []
    gen = llm.stream([{"role": "user", "content": "talk"}])
    if how == "aclose":
        async for delta in gen:
            got.append(delta)
            if len(got) == 3:
                break
        await gen.aclose()  # type: ignore[attr-defined]
    else:
        task = asyncio.create_task(collect(gen, got))
        await until(lambda: len(got) >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await until(lambda: standin.config.log.llm_disconnects == 1)
    assert standin.config.log.llm_streams_completed == 0
    assert standin.config.log.llm_tokens_sent < 100


async def test_llm_cut_mid_stream_yields_the_partial_text_then_fails(standin: Standin) -> None:
    standin.config.llm_cut_after = 3
    llm = standin.llm(max_retries=0)
    got: list[str] = []
    with pytest.raises(EngineError) as exc:
        await collect(llm.stream([{"role": "user", "content": "Hi"}]), got)
    check_error(exc, "llm")
    assert "".join(got) == "You said: Hi."


@pytest.mark.parametrize("delay", ["llm_first_token_delay", "llm_token_delay"])
async def test_llm_timeout_first_and_between_tokens(standin: Standin, delay: str) -> None:
    setattr(standin.config, delay, HELD_S)
    llm = standin.llm(timeout_s=TIMEOUT, max_retries=0)
    got: list[str] = []
    start = time.monotonic()
    with pytest.raises(EngineError) as exc:
        await collect(llm.stream([{"role": "user", "content": "Hi"}]), got)
    assert time.monotonic() - start < HELD_S
    check_error(exc, "llm")
    assert len(got) == (0 if delay == "llm_first_token_delay" else 1)
    await until(lambda: standin.config.log.llm_disconnects == 1)  # the request really stopped


@pytest.mark.parametrize("fault", ["llm_malformed", "llm_status"])
async def test_llm_malformed_stream_and_http_errors(standin: Standin, fault: str) -> None:
    if fault == "llm_malformed":
        standin.config.llm_malformed = True
    else:
        standin.config.llm_status = 429
    llm = standin.llm(max_retries=0)
    with pytest.raises(EngineError) as exc:
        await collect(llm.stream([{"role": "user", "content": "Hi"}]), [])
    check_error(exc, "llm")
    if fault == "llm_status":
        assert "429" in exc.value.message


# ---------------------------------------------------------------- TTS


async def test_tts_pcm_is_24khz_int16_in_whole_samples(standin: Standin) -> None:
    standin.config.tts_chunk_bytes = 1001  # odd: samples straddle network chunks
    standin.config.tts_chunk_delay = 0.002
    tts = standin.tts("tts-x", voice="nova", response_format="pcm")
    text = "Hello there, how are you?"
    chunks: list[bytes] = []
    await collect(tts.stream(text), chunks)
    assert tts.sample_rate == 24000
    assert all(len(c) % 2 == 0 for c in chunks) and len(chunks) > 5
    expected = speech_like(text)
    assert b"".join(chunks) == expected.tobytes()
    assert len(expected) / 24000 == pytest.approx(len(text) * 0.06, abs=0.01)
    body = standin.config.log.speech_requests[-1]
    assert (body["model"], body["voice"], body["input"], body["response_format"]) == ("tts-x", "nova", text, "pcm")


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
async def test_tts_compressed_audio_is_decoded_as_it_arrives(standin: Standin, fmt: str) -> None:
    standin.config.tts_last_chunk_delay = 0.3
    standin.config.tts_chunk_bytes = 2048
    text = "The quick brown fox jumps over the lazy dog."  # 44 chars: 2.64 s
    tts = standin.tts(response_format=fmt)
    first_at = None
    chunks: list[bytes] = []
    async for chunk in tts.stream(text):
        first_at = first_at or time.monotonic()
        assert len(chunk) % 2 == 0
        chunks.append(chunk)
    (finished_at,) = standin.config.log.tts_finished_at
    assert first_at is not None and first_at < finished_at, "no audio before the body ended"
    samples = np.frombuffer(b"".join(chunks), np.int16)
    assert len(samples) / 24000 == pytest.approx(len(text) * 0.06, abs=0.12)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000  # audible, not silence


async def test_tts_hang_times_out_and_drops_the_request(standin: Standin) -> None:
    standin.config.tts_timeout = True
    tts = standin.tts(timeout_s=TIMEOUT, max_retries=0)
    start = time.monotonic()
    with pytest.raises(EngineError) as exc:
        await collect(tts.stream("Hello"), [])
    assert time.monotonic() - start < HELD_S
    check_error(exc, "tts")
    await until(lambda: standin.config.log.tts_disconnects == 1)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "wav", "pcm"])
async def test_tts_invalid_audio_is_an_engine_error(standin: Standin, fmt: str) -> None:
    standin.config.tts_invalid_audio = True
    tts = standin.tts(response_format=fmt, timeout_s=2)
    with pytest.raises(EngineError) as exc:
        await collect(tts.stream("Hello"), [])
    check_error(exc, "tts")


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
async def test_tts_cut_mid_body_yields_the_audio_so_far_then_fails(standin: Standin, fmt: str) -> None:
    standin.config.tts_cut_after = 2
    standin.config.tts_chunk_bytes = 4000
    standin.config.tts_chunk_delay = 0.01
    tts = standin.tts(response_format=fmt, max_retries=0)
    got: list[bytes] = []
    with pytest.raises(EngineError) as exc:
        await collect(tts.stream("A sentence long enough to need several chunks of audio."), got)
    check_error(exc, "tts")
    assert "interrupted" in exc.value.message
    if fmt == "pcm":
        assert sum(map(len, got)) == 8000


async def test_tts_http_error_and_early_close(standin: Standin) -> None:
    standin.config.tts_status = 500
    tts = standin.tts(response_format="mp3", max_retries=0)
    with pytest.raises(EngineError) as exc:
        await collect(tts.stream("Hello"), [])
    check_error(exc, "tts")
    standin.config.tts_status = 200
    standin.config.tts_chunk_delay = 0.02
    gen = tts.stream("A long sentence that takes a while to stream to the client.")
    async for _ in gen:
        break
    await gen.aclose()  # type: ignore[attr-defined]
    await until(lambda: standin.config.log.tts_disconnects == 1)
    assert standin.config.log.tts_streams_completed == 0


async def test_pcm_decoder_carries_odd_bytes() -> None:
    decoder = open_decoder("pcm")
    for piece in (b"\x01", b"\x02\x03", b"\x04\x05\x06", b"\x07"):
        decoder.feed(piece)
    decoder.end()
    out = []
    while (chunk := await decoder.read()) is not None:
        out.append(chunk)
    assert all(len(c) % 2 == 0 for c in out) and b"".join(out) == b"\x01\x02\x03\x04\x05\x06"


# ---------------------------------------------------------------- factory


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="LLM_ENGINE=openai needs LLM_API_KEY \\(or GROQ_API_KEY / OPENAI_API_KEY\\)"):
        build_engines(Settings(stt_engine="openai", llm_engine="openai", tts_engine="openai", stt_api_key="k", tts_api_key="k"))
    with pytest.raises(SettingsError, match="TTS_API_KEY"):
        resolve_endpoint(Settings(tts_engine="openai", groq_api_key="gsk_x"), "tts")  # Groq has no speech
    with pytest.raises(SettingsError, match="STT_API_KEY"):
        resolve_endpoint(Settings(stt_base_url="https://speech.example.com/v1", stt_model="m"), "stt")


def test_groq_and_openai_conveniences() -> None:
    settings = Settings(stt_engine="openai", llm_engine="openai", tts_engine="openai", groq_api_key="gsk_groq", openai_api_key="sk-oa")
    engines = build_engines(settings)
    assert isinstance(engines.stt, OpenAISTT) and isinstance(engines.llm, OpenAILLM) and isinstance(engines.tts, OpenAITTS)
    assert engines.stt.endpoint == Endpoint(GROQ_BASE_URL, "gsk_groq", "whisper-large-v3-turbo")
    assert engines.llm.endpoint == Endpoint(GROQ_BASE_URL, "gsk_groq", "llama-3.1-8b-instant")
    assert engines.tts.endpoint == Endpoint(OPENAI_BASE_URL, "sk-oa", "tts-1") and engines.tts.voice == "alloy"
    assert engines.readiness()["llm"] == {"engine": "openai:llama-3.1-8b-instant", "ready": True}
    assert engines.stt._client is None  # building does no I/O
    only_openai = Settings(llm_engine="openai", openai_api_key="sk-oa")
    assert resolve_endpoint(only_openai, "llm") == Endpoint(OPENAI_BASE_URL, "sk-oa", "gpt-4o-mini")
    assert resolve_endpoint(only_openai, "stt").model == "whisper-1"
    own = Settings(llm_base_url="https://llm.example.com/v1/", llm_api_key="own", llm_model="big", groq_api_key="gsk_groq")
    assert resolve_endpoint(own, "llm") == Endpoint("https://llm.example.com/v1", "own", "big")


def test_local_server_needs_no_key_but_a_model() -> None:
    local = Settings(llm_base_url="http://localhost:11434/v1", llm_model="llama3.2")
    assert resolve_endpoint(local, "llm") == Endpoint("http://localhost:11434/v1", NO_KEY, "llama3.2")
    assert resolve_endpoint(Settings(stt_base_url="http://127.0.0.1:8000/v1", stt_model="w"), "stt").api_key == NO_KEY
    with pytest.raises(SettingsError, match="LLM_MODEL"):
        resolve_endpoint(Settings(llm_base_url="http://[::1]:8000/v1"), "llm")


def test_local_engines_are_imported_only_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    def fake(module: str, cls: str) -> None:
        engine = type(cls, (), {"name": cls, "from_settings": classmethod(lambda c, s: made.append(cls) or c())})
        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**{cls: engine}))

    fake("pipeline.engines.local_stt", "LocalSTT")
    fake("pipeline.engines.local_llm", "LocalLLM")
    monkeypatch.setitem(sys.modules, "pipeline.engines.local_tts", types.SimpleNamespace())
    fake("pipeline.engines.local_tts", "EspeakTTS")
    engines = build_engines(Settings(stt_engine="local", llm_engine="local", tts_engine="espeak"))
    assert made == ["LocalSTT", "LocalLLM", "EspeakTTS"]
    assert type(engines.tts).__name__ == "EspeakTTS"
