"""`/v1/realtime` driven by the official `openai` SDK's WebSocket client (and a raw socket for what
the SDK would never send), with the OpenAI-protocol stand-in as the engines.

Every server event is checked against the SDK's own types, strictly.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pydantic
import pytest
from aiohttp import ClientSession, WSMsgType
from openai.types.realtime import RealtimeServerEvent

from kit.realtime_client import RATE, Received, realtime, stream
from kit.speech import concat, silence, speak
from kit.standin import StandinConfig
from rtc.http import REALTIME
from tests.conftest import until

pytestmark = pytest.mark.loopback

QUESTION = "What is the capital of France?"
LONG_REPLY = " ".join(f"This is sentence number {i} of a rather long answer that goes on." for i in range(1, 13))
SERVER_EVENT: pydantic.TypeAdapter[object] = pydantic.TypeAdapter(RealtimeServerEvent)


def valid(received: Received) -> None:
    """Every event the server sent is one the SDK's types define, field for field."""
    for _, event in received.events:
        SERVER_EVENT.validate_python(event.to_dict())


def question(text: str = QUESTION) -> np.ndarray:
    return concat(silence(0.3, RATE), speak(text, rate=RATE), silence(1.5, RATE))


async def test_a_spoken_question_gets_a_spoken_answer_over_the_sdk_websocket_client(assistant):
    server, standin = await assistant(StandinConfig(stt_text=QUESTION))
    async with realtime(server.url) as (connection, received):
        _, created = await received.wait("session.created")
        assert created.session.audio.input.format.rate == RATE
        session = {"type": "realtime", "instructions": "Answer briefly.", "audio": {"output": {"voice": "verse"}}}
        await connection.session.update(session=session)
        _, updated = await received.wait("session.updated")
        assert updated.session.instructions == "Answer briefly." and updated.session.audio.output.voice == "verse"

        await stream(connection, question())
        _, heard = await received.wait("conversation.item.input_audio_transcription.completed")
        assert heard.transcript == QUESTION
        t_done, done = await received.wait("response.done", timeout=20)
        assert done.response.status == "completed"
        transcript = "".join(e.delta for _, e in received.of("response.output_audio_transcript.delta"))
        assert transcript.startswith("You said: What is the capital of France.")
        assert done.response.output[0].content[0].transcript == transcript.strip()

        order = [e.type for _, e in received.events]
        first = order.index
        assert first("input_audio_buffer.speech_started") < first("input_audio_buffer.speech_stopped") < first("response.created")
        assert first("response.created") < first("response.output_audio.delta") < first("response.done")
        audio = received.audio(done.response.id)
        assert len(audio) > RATE // 2 and np.abs(audio).max() > 1000  # speech, at 24 kHz
    assert standin.log.speech_requests and {r["voice"] for r in standin.log.speech_requests} == {"verse"}
    assert standin.log.last_messages[0] == {"role": "system", "content": "Answer briefly."}
    valid(received)
    await until(lambda: server.app[REALTIME] == {})  # closed and freed when the client went


async def test_barge_in_stops_the_audio_at_once_and_a_truncate_keeps_only_what_was_played(assistant):
    config = StandinConfig(stt_script=[QUESTION, "And what about Spain?", "And what about Spain?"], llm_reply=LONG_REPLY)
    server, standin = await assistant(config)
    async with realtime(server.url) as (connection, received):
        await received.wait("session.created")
        await stream(connection, question())
        t_audio, first = await received.wait("response.output_audio.delta", timeout=20)
        await until(lambda: len(received.of("response.output_audio.delta")) >= 75)  # 1.5 s of it
        config.llm_reply = "You said: {last_user}. Madrid."
        await stream(connection, question("And what about Spain?"))
        t_barge, _ = await received.wait("input_audio_buffer.speech_started", after=t_audio)
        _, cut = await received.wait("response.done", where=lambda e: e.response.id == first.response_id)
        assert cut.response.status == "cancelled"
        # Not one delta of the interrupted response after the server said the user started speaking.
        order = [(e.type, getattr(e, "response_id", None)) for _, e in received.events]
        barge = next(i for i, (t, e) in enumerate(received.events) if t >= t_barge and e.type == "input_audio_buffer.speech_started")
        assert ("response.output_audio.delta", first.response_id) not in order[barge:]

        # The client played only half of what it got: the history keeps that half.
        played_ms = len(received.audio(first.response_id)) * 1000 // RATE // 2
        await connection.conversation.item.truncate(item_id=first.item_id, content_index=0, audio_end_ms=played_ms)
        _, truncated = await received.wait("conversation.item.truncated")
        assert truncated.audio_end_ms == played_ms
        server_heard = cut.response.output[0].content[0].transcript
        await received.wait(
            "response.done", where=lambda e: e.response.id != first.response_id and e.response.status == "completed", timeout=20
        )
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go on."}]}
        )
        await connection.response.create()
        await until(lambda: any(m["content"] == "Go on." for m in standin.log.last_messages))
        kept = next(m["content"] for m in standin.log.last_messages if m["role"] == "assistant" and m["content"].startswith("This is"))
        kept = kept.removesuffix(" —")
        assert LONG_REPLY.startswith(kept) and 0 < len(kept) < len(server_heard)
    valid(received)


async def test_typed_items_and_push_to_talk_commits_are_answered_on_response_create(assistant):
    server, _ = await assistant(StandinConfig(stt_text=QUESTION))
    async with realtime(server.url) as (connection, received):
        await received.wait("session.created")
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there."}]}
        )
        await received.wait("conversation.item.done")
        await connection.response.create()
        _, done = await received.wait("response.done", timeout=20)
        assert done.response.output[0].content[0].transcript.startswith("You said: Hello there.")

        # The client's own turn detection: nothing is answered until it commits and asks.
        await connection.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        _, updated = await received.wait("session.updated")
        assert updated.session.audio.input.turn_detection is None
        clip = question()
        await connection.input_audio_buffer.append(audio=base64.b64encode(clip.astype("<i2").tobytes()).decode())
        await connection.input_audio_buffer.commit()
        t_commit, _ = await received.wait("input_audio_buffer.committed")
        assert received.of("input_audio_buffer.speech_started") == []
        await connection.response.create()
        _, heard = await received.wait("conversation.item.input_audio_transcription.completed", after=t_commit)
        assert heard.transcript == QUESTION
        _, done = await received.wait("response.done", after=t_commit, timeout=20)
        assert done.response.status == "completed"
        await connection.response.create()  # nothing left to answer
        _, error = await received.wait("error", after=t_commit)
        assert error.error.code == "nothing_to_respond_to"
    valid(received)


@pytest.mark.parametrize("fmt, decode", [("audio/pcmu", "ulaw"), ("audio/pcma", "alaw")])
async def test_telephony_g711_in_and_out(assistant, fmt, decode):
    from rtc.realtime_audio import g711_encode

    server, _ = await assistant(StandinConfig(stt_text=QUESTION))
    async with realtime(server.url) as (connection, received):
        await received.wait("session.created")
        audio = {"input": {"format": {"type": fmt}}, "output": {"format": {"type": fmt}}}
        await connection.session.update(session={"type": "realtime", "audio": audio})
        _, updated = await received.wait("session.updated")
        assert updated.session.audio.output.format.type == fmt
        clip = concat(silence(0.3, 8000), speak(QUESTION, rate=8000), silence(1.5, 8000))
        for at in range(0, len(clip), 800):  # 100 ms chunks, faster than real time: media time follows the samples
            await connection.input_audio_buffer.append(audio=base64.b64encode(g711_encode(clip[at : at + 800], fmt)).decode())
        _, heard = await received.wait("conversation.item.input_audio_transcription.completed", timeout=20)
        assert heard.transcript == QUESTION
        await received.wait("response.done", timeout=20)
        sizes = [len(base64.b64decode(e.delta)) for _, e in received.of("response.output_audio.delta")]
        assert len(sizes) > 10 and set(sizes[1:]) == {160}  # 20 ms of 8 kHz, a byte a sample (the first: less the resampler's delay)
    valid(received)


BAD_EVENTS: list[str | bytes] = [
    "not json",
    "[1, 2]",
    '{"no": "type"}',
    '{"type": 7}',
    '{"type": "no.such.event"}',
    '{"type": "input_audio_buffer.append"}',
    '{"type": "input_audio_buffer.append", "audio": "%%% not base64"}',
    '{"type": "input_audio_buffer.append", "audio": "AAEC"}',  # three bytes: not whole int16 samples
    '{"type": "input_audio_buffer.commit"}',  # turn detection is on
    '{"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": []}}',
    '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ""}]}}',
    '{"type": "conversation.item.truncate", "item_id": "item_99", "content_index": 0, "audio_end_ms": 10}',
    '{"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": -1}',
    '{"type": "conversation.item.delete", "item_id": "item_1"}',
    '{"type": "session.update", "session": {"type": "transcription"}}',
    '{"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/ogg"}}}}}',
    '{"type": "response.create"}',  # nothing to respond to
    json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (5 * 1024 * 1024)}),
    b"\x00\x01binary",
]


async def test_malformed_events_each_get_an_error_event_and_the_session_goes_on(assistant, caplog):
    server, _ = await assistant(StandinConfig())
    ws_url = server.url.replace("http", "ws", 1) + "/v1/realtime"
    async with ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        assert (await ws.receive_json())["type"] == "session.created"
        for bad in BAD_EVENTS:
            await (ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_str(bad))
            reply = await ws.receive_json(timeout=10)
            assert reply["type"] == "error" and reply["error"]["message"], (bad[:80], reply)
            SERVER_EVENT.validate_python(reply)
        await ws.send_str(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Still there?"}]},
                }
            )
        )
        await ws.send_str('{"type": "response.create"}')
        kinds: list[str] = []
        while "response.done" not in kinds:
            message = await ws.receive(timeout=20)
            assert message.type == WSMsgType.TEXT
            event = json.loads(message.data)
            SERVER_EVENT.validate_python(event)
            kinds.append(event["type"])
        assert "error" not in kinds
    await until(lambda: server.app[REALTIME] == {})
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []  # no server error


async def test_the_token_and_the_session_limit_hold_for_realtime_too(assistant):
    import websockets

    server, _ = await assistant(StandinConfig(), voice_token="s3cret", max_sessions=1)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with realtime(server.url, token="wrong"):
            pass
    assert refused.value.response.status_code == 401
    async with realtime(server.url, token="s3cret") as (_, received):
        await received.wait("session.created")
        with pytest.raises(websockets.exceptions.InvalidStatus) as full:
            async with realtime(server.url, token="s3cret"):
                pass
        assert full.value.response.status_code == 503


async def test_a_webrtc_call_through_the_sdks_calls_create_with_events_on_oai_events(assistant, clients):
    from openai import AsyncOpenAI

    from kit.rtc_client import Client, to_48k

    server, _ = await assistant(StandinConfig(stt_text=QUESTION))
    sdk = AsyncOpenAI(api_key="no-key", base_url=f"{server.url}/v1")

    async def create(offer: str) -> str:
        answer = await sdk.realtime.calls.create(sdp=offer, session={"type": "realtime", "instructions": "Be brief."})
        return answer.text

    client = Client(server.url)
    try:
        await client.call(create)
        _, created = await client.wait_event("session.created")
        _, updated = await client.wait_event("session.updated")
        assert updated["session"]["instructions"] == "Be brief."
        await client.mic.say(to_48k(concat(silence(0.3), speak(QUESTION), silence(0.1))))
        _, heard = await client.wait_event("conversation.item.input_audio_transcription.completed", timeout=15)
        assert heard["transcript"] == QUESTION
        t_done, done = await client.wait_event("response.done", timeout=20)
        assert done["response"]["status"] == "completed"
        assert client.audible_times() and client.audible_times()[0] < t_done  # the reply came over the track
        assert not [e for _, e in client.events if e["type"] == "response.output_audio.delta"]
        client.send({"type": "input_audio_buffer.append", "audio": "AAAA"})  # audio comes over the track on a call
        _, error = await client.wait_event("error")
        assert error["error"]["code"] == "unsupported_event"
        for _, event in client.events:
            SERVER_EVENT.validate_python(event)
    finally:
        await client.close()
    await until(lambda: server.sessions == {})
