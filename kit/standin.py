"""A local stand-in for the paid speech and language APIs, speaking the OpenAI wire protocol over real HTTP.

    POST /v1/audio/transcriptions   multipart (file, model, language) -> {"text": ...}
    POST /v1/chat/completions       SSE stream of chat.completion.chunk ... [DONE] (or one JSON when stream is false)
    POST /v1/audio/speech           chunked audio: pcm (24 kHz s16 mono), wav, mp3, opus (Ogg), aac (ADTS), flac
    GET  /v1/models
    GET/POST /_standin/config       read / update the config (for a stand-in in another process)
    GET  /_standin/log              what was received (counts, last messages)

Scriptable: the server reads one mutable `StandinConfig` on every request, so a
test changes delays, replies and faults between (or during) requests; what it
received is recorded in `config.log`.

    async with run_standin(config) as base_url:   # "http://127.0.0.1:PORT/v1"
        ...

    python -m kit.standin --port 8123 --llm-token-delay 0.03
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import re
import socket
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp import web

RATE = 24000  # OpenAI's raw PCM rate

DEFAULT_LLM_REPLY = (
    "You said: {last_user}. This is message {n_messages}. I am the stand-in model. I answer in a few short sentences. That is all for now."
)


@dataclass
class Transcription:
    """One received transcription request."""

    model: str
    language: str
    filename: str
    content_type: str
    sample_rate: int  # 0 when the file was not a valid WAV
    channels: int
    sample_width: int
    duration_s: float
    pcm: bytes
    text: str = ""
    response_format: str = "json"


@dataclass
class StandinLog:
    """What the stand-in received and did; tests read it, `config.reset_log()` clears it."""

    transcriptions: list[Transcription] = field(default_factory=list)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)  # request bodies, in order
    speech_requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    llm_streams_started: int = 0
    llm_streams_completed: int = 0  # reached [DONE]
    llm_disconnects: int = 0  # the client went away before the end
    llm_tokens_sent: int = 0  # content chunks written by the latest stream
    tts_streams_started: int = 0
    tts_streams_completed: int = 0
    tts_disconnects: int = 0
    tts_bytes_sent: int = 0  # by the latest speech response
    tts_finished_at: list[float] = field(default_factory=list)  # time.monotonic() when each body's last byte was written
    tts_started_at: list[float] = field(default_factory=list)  # when each speech request arrived
    llm_completed_at: list[float] = field(default_factory=list)  # when each stream reached [DONE]

    @property
    def transcription_count(self) -> int:
        return len(self.transcriptions)

    @property
    def last_messages(self) -> list[dict[str, Any]]:
        return self.chat_requests[-1].get("messages", []) if self.chat_requests else []

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, int | float)}
        out.update(
            transcription_count=self.transcription_count,
            chat_count=len(self.chat_requests),
            speech_count=len(self.speech_requests),
            last_messages=self.last_messages,
            last_transcript=self.transcriptions[-1].text if self.transcriptions else None,
        )
        return out


@dataclass
class StandinConfig:
    """Everything scriptable. Delays in seconds; a status other than 200 answers that HTTP error."""

    api_key: str = ""  # when set, requests without `Authorization: Bearer <api_key>` get a 401 that echoes the key they sent
    # speech to text
    stt_text: str = "Hello there."  # the transcript, unless stt_script or stt_reply says otherwise
    stt_script: list[str] = field(default_factory=list)  # transcripts handed out in order (popped) before stt_text
    stt_reply: Callable[[Transcription], str] | None = None  # computes the transcript from the received audio
    # [max_seconds, text] pairs: the first whose max covers the upload's duration gives the transcript
    # (over HTTP, what stt_reply does in process: partial passes over an utterance get partial text)
    stt_by_duration: list[list[Any]] = field(default_factory=list)
    stt_delay: float = 0.0
    stt_status: int = 200
    stt_malformed: bool = False  # answer 200 with a body that is not JSON
    # verbose_json's `language`, as OpenAI names it ("chinese"); empty: by the transcript's script
    stt_language_name: str = ""
    # language model
    llm_reply: str | Callable[[list[dict[str, Any]]], str] = (
        DEFAULT_LLM_REPLY  # template ({last_user}, {n_messages}, {n_user}) or callable(messages)
    )
    llm_first_token_delay: float = 0.0
    llm_token_delay: float = 0.0
    llm_status: int = 200
    llm_cut_after: int | None = None  # drop the connection after this many content tokens, without [DONE]
    llm_malformed: bool = False  # send an SSE event whose data is not JSON
    # Calls ({"name", "arguments"}) streamed instead of words when the request offers tools and its
    # last message is not a tool's result, in fragments as OpenAI sends them
    llm_tool_calls: list[dict[str, str]] = field(default_factory=list)
    # text to speech
    tts_first_chunk_delay: float = 0.0  # after the headers, before the first audio byte
    tts_chunk_delay: float = 0.0  # between chunks
    tts_last_chunk_delay: float = 0.0  # before the last chunk (shows whether a client decodes incrementally)
    tts_chunk_bytes: int = 4096
    tts_status: int = 200
    tts_timeout: bool = False  # send the headers, then never any audio
    tts_invalid_audio: bool = False  # send bytes that are not audio of the requested format
    tts_cut_after: int | None = None  # drop the connection after this many chunks
    tts_ms_per_char: float = 60.0  # speech length per character of input, at speed 1
    tts_max_s: float = 12.0
    log: StandinLog = field(default_factory=StandinLog)

    def reset_log(self) -> None:
        self.log = StandinLog()

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(self) if f.name != "log"}
        for key, value in changes.items():
            if key not in names:
                raise KeyError(key)
            setattr(self, key, value)

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "log" and not callable(getattr(self, f.name))}


# ---------------------------------------------------------------- audio


def speech_like(text: str, speed: float = 1.0, ms_per_char: float = 60.0, max_s: float = 12.0, rate: int = RATE) -> np.ndarray:
    """Deterministic audible "speech": a voiced harmonic tone with syllable-rate loudness, length from the text."""
    seconds = min(max(len(text), 1) * ms_per_char / 1000.0, max_s) / max(speed, 0.25)
    n = max(int(seconds * rate), 1)
    t = np.arange(n) / rate
    pitch = 140.0 + 20.0 * np.sin(2 * np.pi * 0.7 * t)  # a little intonation
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms ramps, no clicks
    return (voice * syllables * fade * 6000).astype(np.int16)


_ENCODERS = {
    "wav": ("wav", "pcm_s16le", RATE),
    "mp3": ("mp3", "libmp3lame", RATE),
    "opus": ("ogg", "libopus", 48000),
    "aac": ("adts", "aac", RATE),
    "flac": ("flac", "flac", RATE),
}


def encode(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """int16 mono samples at `rate` -> a whole `fmt` file (pcm: raw s16le)."""
    if fmt == "pcm":
        return samples.astype("<i2").tobytes()
    container_format, codec, codec_rate = _ENCODERS[fmt]
    buf = io.BytesIO()
    # Short Ogg pages so opus streams in pieces like a live server's would.
    options = {"page_duration": "100000"} if container_format == "ogg" else {}
    with av.open(buf, "w", format=container_format, options=options) as out:
        stream = out.add_stream(codec, rate=codec_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=codec_rate)
        for converted in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return buf.getvalue()


_CONTENT_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}


def _invalid_audio(fmt: str, n: int = 6000) -> bytes:
    # Deterministic junk with no sync words or magic numbers; for pcm an odd, tiny body is the only "invalid".
    if fmt == "pcm":
        return b"\x01"
    junk = bytes((i * 7 + 3) % 0x7F for i in range(n))
    return b"RIFX" + junk if fmt == "wav" else junk


# ---------------------------------------------------------------- server


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status)


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class _Server:
    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self._ids = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_standin/config", self.get_config)
        app.router.add_post("/_standin/config", self.set_config)
        app.router.add_get("/_standin/log", self.get_log)
        return app

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        self.config.log.auth_headers.append(header)
        if self.config.api_key and header != f"Bearer {self.config.api_key}":
            # Like some real servers, echo the rejected key: clients must not pass it on.
            return _error(401, f"Incorrect API key provided: {header.removeprefix('Bearer ')}")
        return None

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "standin", "object": "model", "owned_by": "standin"}]})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.public())

    async def set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        if changes.pop("reset_log", False):
            self.config.reset_log()
        try:
            self.config.update(changes)
        except KeyError as exc:
            return _error(400, f"unknown setting {exc}")
        return web.json_response(self.config.public())

    async def get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.log.summary())

    # -- speech to text

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if (denied := self._unauthorized(request)) is not None:
            return denied
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "file is required")
        record = _read_upload(upload, str(form.get("model", "")), str(form.get("language", "")))
        record.response_format = str(form.get("response_format", "json"))
        cfg.log.transcriptions.append(record)
        if cfg.stt_delay:
            await asyncio.sleep(cfg.stt_delay)
        if cfg.stt_status != 200:
            return _error(cfg.stt_status, "stand-in transcription failure")
        if record.sample_rate == 0:
            return _error(400, "could not decode the audio file")
        if cfg.stt_malformed:
            return web.Response(text="{this is not json", content_type="application/json")
        if cfg.stt_script:
            record.text = cfg.stt_script.pop(0)
        elif cfg.stt_reply is not None:
            record.text = cfg.stt_reply(record)
        elif cfg.stt_by_duration:
            record.text = next((str(text) for limit, text in cfg.stt_by_duration if record.duration_s <= float(limit)), cfg.stt_text)
        else:
            record.text = cfg.stt_text
        if record.response_format == "verbose_json":
            han = any("\u4e00" <= char <= "\u9fff" for char in record.text)
            language = cfg.stt_language_name or ("chinese" if han else "english")
            return web.json_response({"task": "transcribe", "language": language, "duration": record.duration_s, "text": record.text})
        if record.response_format not in ("json", ""):
            return _error(400, f"unsupported response_format {record.response_format!r}")
        return web.json_response({"text": record.text})

    # -- language model

    async def chat(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await request.json()
        cfg.log.chat_requests.append(body)
        if cfg.llm_status != 200:
            return _error(cfg.llm_status, "stand-in model failure")
        messages = body.get("messages") or []
        reply = _reply_text(cfg.llm_reply, messages)
        # Words with their leading space; Chinese and Japanese, written without spaces, a character at a time.
        tokens = re.findall(
            r"\s*[\u3040-\u30ff\u3400-\u9fff\uff00-\uffef\u3000-\u303f]|\s*[^\s\u3040-\u30ff\u3400-\u9fff\uff00-\uffef\u3000-\u303f]+",
            reply,
        )
        finish = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
            tokens, finish = tokens[:max_tokens], "length"
        self._ids += 1
        ident, model, created = f"chatcmpl-standin-{self._ids}", body.get("model", "standin"), int(time.time())
        if not body.get("stream"):
            await asyncio.sleep(cfg.llm_first_token_delay + cfg.llm_token_delay * len(tokens))
            message = {"role": "assistant", "content": "".join(tokens)}
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)},
                }
            )

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        cfg.log.llm_streams_started += 1
        cfg.log.llm_tokens_sent = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            await asyncio.sleep(cfg.llm_first_token_delay)
            if body.get("tools") and cfg.llm_tool_calls and (messages[-1:] or [{}])[0].get("role") != "tool":
                for index, call in enumerate(cfg.llm_tool_calls):
                    start = {"index": index, "id": f"call_{self._ids}_{index}", "type": "function"}
                    await resp.write(chunk({"tool_calls": [start | {"function": {"name": call["name"], "arguments": ""}}]}))
                    half = len(call["arguments"]) // 2
                    for part in (call["arguments"][:half], call["arguments"][half:]):
                        await resp.write(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
                tokens, finish = [], "tool_calls"
            for i, token in enumerate(tokens):
                if i:
                    await asyncio.sleep(cfg.llm_token_delay)
                if cfg.llm_cut_after is not None and i >= cfg.llm_cut_after:
                    _drop(request)
                    return resp
                if cfg.llm_malformed and i == 1:
                    await resp.write(b"data: {not json\n\n")
                if _disconnected(request):
                    raise ConnectionResetError("client left")
                await resp.write(chunk({"content": token}))
                cfg.log.llm_tokens_sent += 1
            await resp.write(chunk({}, finish))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            cfg.log.llm_streams_completed += 1
            cfg.log.llm_completed_at.append(time.monotonic())
        except ConnectionResetError:
            cfg.log.llm_disconnects += 1
        except asyncio.CancelledError:
            cfg.log.llm_disconnects += 1
            raise
        return resp

    # -- text to speech

    async def speech(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await request.json()
        cfg.log.speech_requests.append(body)
        if cfg.tts_status != 200:
            return _error(cfg.tts_status, "stand-in speech failure")
        fmt = body.get("response_format") or "mp3"  # OpenAI's default
        if fmt not in _CONTENT_TYPES:
            return _error(400, f"unsupported response_format {fmt!r}")
        text = str(body.get("input", ""))
        if cfg.tts_invalid_audio:
            audio = _invalid_audio(fmt)
        else:
            samples = speech_like(text, float(body.get("speed") or 1.0), cfg.tts_ms_per_char, cfg.tts_max_s)
            audio = await asyncio.to_thread(encode, samples, fmt)
        cfg.log.tts_streams_started += 1
        cfg.log.tts_started_at.append(time.monotonic())
        cfg.log.tts_bytes_sent = 0
        resp = web.StreamResponse(headers={"Content-Type": _CONTENT_TYPES[fmt]})
        await resp.prepare(request)
        step = max(1, cfg.tts_chunk_bytes)
        pieces = [audio[i : i + step] for i in range(0, len(audio), step)]
        try:
            if cfg.tts_timeout:
                while not _disconnected(request):
                    await asyncio.sleep(0.05)
                raise ConnectionResetError("client left")
            await asyncio.sleep(cfg.tts_first_chunk_delay)
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(cfg.tts_last_chunk_delay if i == len(pieces) - 1 else cfg.tts_chunk_delay)
                if cfg.tts_cut_after is not None and i >= cfg.tts_cut_after:
                    _drop(request)
                    return resp
                if _disconnected(request):
                    raise ConnectionResetError("client left")
                await resp.write(piece)
                cfg.log.tts_bytes_sent += len(piece)
            cfg.log.tts_finished_at.append(time.monotonic())
            await resp.write_eof()
            cfg.log.tts_streams_completed += 1
        except ConnectionResetError:
            cfg.log.tts_disconnects += 1
        except asyncio.CancelledError:
            cfg.log.tts_disconnects += 1
            raise
        return resp


def _reply_text(reply: str | Callable[[list[dict[str, Any]]], str], messages: list[dict[str, Any]]) -> str:
    if callable(reply):
        return reply(messages)
    users = [m for m in messages if m.get("role") == "user"]
    last_user = str(users[-1].get("content", "")).strip().rstrip(".!?") if users else ""
    return reply.format(last_user=last_user, n_messages=len(messages), n_user=len(users))


def _read_upload(upload: web.FileField, model: str, language: str) -> Transcription:
    with upload.file:
        data = upload.file.read()
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return Transcription(model, language, upload.filename, upload.content_type, 0, 0, 0, 0.0, b"")
    duration = len(frames) / (rate * channels * width) if rate and channels and width else 0.0
    return Transcription(model, language, upload.filename, upload.content_type, rate, channels, width, duration, frames)


def _drop(request: web.Request) -> None:
    """End the connection mid-body, as a crashed or overloaded server does."""
    if request.transport is not None:
        request.transport.close()


# ---------------------------------------------------------------- running it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def run_standin(config: StandinConfig | None = None, port: int = 0) -> AsyncIterator[str]:
    """Serve the stand-in on 127.0.0.1 (a free port unless given); yields the base URL, e.g. `http://127.0.0.1:PORT/v1`."""
    server = _Server(config if config is not None else StandinConfig())
    # Handlers are cancelled when their client leaves, which is how a stream notices a closed connection.
    runner = web.AppRunner(server.app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{bound}/v1"
    finally:
        await runner.cleanup()


def _cli_config(argv: list[str] | None) -> tuple[int, StandinConfig]:
    parser = argparse.ArgumentParser(description="OpenAI-protocol stand-in server (127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8123)
    config = StandinConfig()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true", default=value)
        elif isinstance(value, int | float | str) or f.name.endswith("_cut_after"):
            kind = int if f.name.endswith("_cut_after") else type(value)
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=value)
    args = vars(parser.parse_args(argv))
    port = args.pop("port")
    config.update(args)
    return port, config


async def _serve(port: int, config: StandinConfig) -> None:
    async with run_standin(config, port) as base_url:
        print(f"standin listening on {base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    port, config = _cli_config(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port, config))


if __name__ == "__main__":
    main()
