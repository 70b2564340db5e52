"""The assistant through real aiortc peers on loopback, with the OpenAI-protocol stand-in as its engines.

The openai client is exercised unpatched over real HTTP; every time asserted
here comes from event and audio-frame timestamps at the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from kit.rtc_client import Client, to_48k
from kit.speech import concat, silence, speak, voiced_bounds
from kit.standin import StandinConfig
from tests.conftest import until

pytestmark = pytest.mark.loopback

QUESTION = "What is the capital of France?"
LONG_REPLY = " ".join(f"This is sentence number {i} of a rather long answer that goes on." for i in range(1, 13))


async def ask(client: Client, text: str = QUESTION) -> tuple[float, float]:
    """Speak `text`; returns (monotonic time the client's speech ended, time the clip was queued)."""
    speech = speak(text)
    _, last = voiced_bounds(speech)
    sent = await client.mic.say(to_48k(concat(silence(0.2), speech, silence(0.1))))
    return sent + 0.2 + last, sent


def events_of(client: Client, type_: str, turn: int | None = None) -> list[dict[str, Any]]:
    return [e for _, e in client.events if e["type"] == type_ and (turn is None or e.get("turn") == turn)]


async def test_spoken_question_gets_a_streamed_spoken_answer(assistant, clients):
    server, standin = await assistant(StandinConfig(stt_text=QUESTION))
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    speech_end, _ = await ask(client)

    _, transcript = await client.wait_event("transcript", timeout=15)
    assert transcript["text"] == QUESTION and transcript["turn"] == 1
    _, reply = await client.wait_event("reply", timeout=20)
    deltas = events_of(client, "reply_delta", 1)
    assert len(deltas) > 3 and "".join(d["text"] for d in deltas).strip() == reply["text"]
    assert (
        reply["text"].startswith("You said: What is the capital of France. This is message 2.")
        and reply["interrupted"] is False
        and reply["heard"] == reply["text"]
    )
    states = [e["state"] for e in events_of(client, "state")]
    # The reply was prepared at the short pause, so it is usually transcribed before it is released.
    assert states in (
        ["listening", "thinking", "speaking", "listening"],
        ["listening", "transcribing", "thinking", "speaking", "listening"],
    )

    # The reply was heard at the client, and the server's figures agree with the client's clock.
    audible = client.audible_times()
    assert audible and audible[0] > speech_end
    _, metrics = await client.wait_event("metrics")
    client_v2v = (audible[0] - speech_end) * 1000
    # The server counts from the end of the last frame its VAD calls voiced; the client from the last
    # 10 ms over RMS 300, and a fading tail can be both (a CI run: 39 ms apart): a frame or so of slack.
    assert 0 < metrics["voice_to_voice_ms"] <= client_v2v + 100
    assert client_v2v - metrics["voice_to_voice_ms"] < 500  # network + jitter buffer on loopback, on a busy machine
    # Released by the end-of-turn model soon after the 200 ms pause, or by the 1.2 s silence.
    if metrics["released_by"] == "model":
        assert 200 <= metrics["endpoint_ms"] < 1200 and metrics["turn_complete"] >= 0.5  # before the long silence
    else:
        assert metrics["released_by"] == "silence" and abs(metrics["endpoint_ms"] - 1200) <= 40
    # The reply was ready when released, so audio starts right at the release. Two clocks meet here:
    # endpoint_ms is in inbound media time, voice_to_voice_ms ends at an outbound frame; they may
    # differ by the receive jitter buffer (RTP_JITTER_FRAMES, 2 frames). A first packet that came late
    # once put media time 91 ms ahead of the wall clock here (a CI run); media time now slews back to
    # the fastest path (rtc/playout.py SLEW) within the first seconds of the call.
    assert metrics["voice_to_voice_ms"] >= metrics["endpoint_ms"] - 40
    for key in ("stt_ms", "llm_first_token_ms", "first_sentence_ms", "tts_first_audio_ms"):
        assert metrics[key] is not None and metrics[key] >= 0
    # ~5 sentences at 60 ms/char arrived as audio
    assert len(audible) * 0.02 > 0.5 * len(reply["text"]) * 0.06
    assert standin.log.transcription_count == 1


async def test_audio_starts_before_the_reply_is_written(assistant, clients):
    server, standin = await assistant(StandinConfig(stt_text=QUESTION, llm_reply=LONG_REPLY, llm_token_delay=0.03, tts_ms_per_char=10))
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "Tell me a long story."})
    await client.wait_event("reply", timeout=60)
    last_delta = max(t for t, e in client.events if e["type"] == "reply_delta")
    first_audio = client.audible_times()[0]
    assert first_audio < last_delta - 2.0, "speech must start while the LLM is still writing"


async def test_barge_in_stops_audio_and_keeps_only_what_was_heard(assistant, clients):
    # One sentence: "Stop. What about Spain?" has a pause after "Stop.", a finished turn of its own
    # that the end-of-turn model may rightly answer before the rest is said.
    # The interruption is transcribed twice: its words so far once it is long enough to end the
    # reply (INTERRUPT_MIN_MS), and the whole at its pause.
    config = StandinConfig(stt_script=[QUESTION, "And what about Spain?", "And what about Spain?"], llm_reply=LONG_REPLY)
    server, standin = await assistant(config)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    # Record, on the server, when each outbound frame left and whether it was audible,
    # and when speech_started was sent.
    session = server.sessions[client.session]
    sent: list[tuple[float, bool]] = []
    started_at: list[float] = []
    recv, send_event = session.outbound.recv, session.send_event

    async def recording_recv():
        frame = await recv()
        sent.append((time.monotonic(), bool(np.abs(frame.to_ndarray()).max() > 300)))
        return frame

    def recording_send(event):
        if event.type == "speech_started":
            started_at.append(time.monotonic())
        send_event(event)

    session.outbound.recv, session.send_event = recording_recv, recording_send
    session.pipeline._emit = recording_send
    await ask(client)
    t_speaking, _ = await client.wait_event("state", state="speaking", timeout=15)
    await until(lambda: len([t for t in client.audible_times() if t > t_speaking]) >= 100)  # 2 s of it played
    config.llm_reply = "You said: {last_user}. Madrid."
    await ask(client, "And what about Spain?")

    t_barge, _ = await client.wait_event("speech_started", after=t_speaking, timeout=10)
    _, reply1 = await client.wait_event("reply", turn=1, timeout=10)
    _, reply2 = await client.wait_event("reply", turn=2, timeout=20)
    t_speaking2, _ = await client.wait_event("state", state="speaking", turn=2)

    # On the server, turn 1's audio stopped within two frames of speech_started (counted, not timed:
    # a busy loop sends the frames due meanwhile at once) ...
    t_barge_server = started_at[1]
    turn2_first = min(t for t, loud in sent if loud and t > t_barge_server + 0.5)
    late = [t - t_barge_server for t, loud in sent if loud and t_barge_server < t < turn2_first]
    assert len(late) <= 2, f"audible frames sent {late} s after speech_started"
    # ... and at the client no audio of it arrived later than 100 ms after the event, plus what
    # was already in flight: aiortc's receive jitter buffer holds 4 frames (80 ms) before playing.
    audible = client.audible_times()
    before = [t for t in audible if t < t_barge]
    stale = [t - t_barge for t in audible if t_barge + 0.1 + 0.08 < t < t_speaking2]
    assert before and stale == [], f"audible frames {stale} s after barge-in"
    assert reply1["interrupted"] is True
    heard = reply1["heard"]
    assert heard and LONG_REPLY.startswith(heard) and len(heard) < len(LONG_REPLY) / 2
    # ~2 s of speech at 60 ms/char is heard: the heard text matches the audio that played
    played_s = t_barge - before[0]
    assert abs(len(heard) * 0.06 - played_s) < 1.0, (len(heard) * 0.06, played_s)

    # The second question is answered, with history holding only the heard part, marked.
    assert reply2["text"] == "You said: And what about Spain. Madrid."
    messages = standin.log.chat_requests[-1]["messages"]
    at = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    assistant_msg, note = messages[at]["content"], messages[at + 1]
    assert assistant_msg.startswith(heard) and LONG_REPLY not in assistant_msg
    assert note["role"] == "system" and "interrupted" in note["content"] and heard in note["content"]


async def test_a_short_noise_does_not_interrupt(assistant, clients):
    server, _ = await assistant(StandinConfig(llm_reply=LONG_REPLY))
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "Talk to me."})
    t_speaking, _ = await client.wait_event("state", state="speaking", timeout=15)
    click = (speak("Hello")[:960] * 1.0).astype("int16")  # 60 ms: below the 100 ms start threshold
    await client.mic.say(to_48k(click))
    await asyncio.sleep(1.5)
    assert events_of(client, "speech_started") == []
    assert events_of(client, "reply") == []  # still talking


async def test_barge_in_can_be_switched_off(assistant, clients):
    server, _ = await assistant(StandinConfig(stt_text="Interrupting.", llm_reply=LONG_REPLY), barge_in=False)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "Talk to me."})
    t_speaking, _ = await client.wait_event("state", state="speaking", timeout=15)
    await ask(client, "Stop talking please.")
    t_stop, _ = await client.wait_event("speech_stopped", after=t_speaking, timeout=10)
    await until(lambda: [t for t in client.audible_times() if t > t_stop + 0.3] != [])  # the reply went on
    assert events_of(client, "reply") == [] and events_of(client, "transcript") == [
        {"type": "transcript", "text": "Talk to me.", "turn": 1, "source": "text", "language": "en"}
    ]


async def test_multi_turn_memory(assistant, clients):
    server, standin = await assistant(StandinConfig(llm_reply="You said: {last_user}. This is message {n_messages}."))
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "My name is Ada."})
    _, first = await client.wait_event("reply", timeout=15)
    client.send({"type": "text", "text": "What is my name?"})
    _, second = await client.wait_event("reply", turn=2, timeout=15)
    assert first["text"] == "You said: My name is Ada. This is message 2."
    assert second["text"] == "You said: What is my name. This is message 4."
    messages = standin.log.chat_requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "My name is Ada." and messages[2]["content"] == first["text"]


async def test_empty_transcript_starts_no_turn(assistant, clients):
    server, standin = await assistant(StandinConfig(stt_script=["[BLANK_AUDIO]", QUESTION]))
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    await ask(client, "Hmm.")
    await client.wait_event("speech_stopped", timeout=15)  # transcribed at the pause already, released now
    assert standin.log.transcription_count == 1
    await ask(client)
    _, reply = await client.wait_event("reply", timeout=20)
    assert reply["text"].startswith("You said: What is the capital of France")
    assert [e["text"] for e in events_of(client, "transcript")] == [QUESTION] and len(standin.log.chat_requests) == 1


@pytest.mark.parametrize(
    ("fault", "stage", "voice"),
    [
        ({"stt_status": 500}, "stt", True),
        ({"llm_cut_after": 6}, "llm", False),
        ({"tts_timeout": True}, "tts", False),
        ({"llm_status": 503}, "llm", False),
        ({"tts_invalid_audio": True}, "tts", False),
    ],
)
async def test_a_failing_stage_is_reported_and_the_next_turn_works(assistant, clients, fault, stage, voice):
    config = StandinConfig(stt_text=QUESTION)
    server, standin = await assistant(config)
    config.update(fault)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    if voice:
        await ask(client)
    else:
        client.send({"type": "text", "text": QUESTION})
    t_err, error = await client.wait_event("error", timeout=20)
    assert error["stage"] == stage and error["turn"] == 1
    assert "sk-test-secret" not in error["message"]
    await client.wait_event("state", state="listening", after=t_err, timeout=5)
    # nothing stale is spoken after the error
    await asyncio.sleep(0.3)
    assert [t for t in client.audible_times() if t > t_err + 0.3] == []

    config.update({k: StandinConfig.__dataclass_fields__[k].default for k in fault})
    client.send({"type": "text", "text": "Try again."})
    _, reply = await client.wait_event("reply", turn=2, timeout=20)
    assert reply["text"].startswith("You said: Try again.") and reply["interrupted"] is False
    assert [t for t in client.audible_times() if t > t_err + 0.3]


def _trimmed(text: str) -> np.ndarray:
    speech = speak(text)
    first, last = voiced_bounds(speech)
    return speech[int(first * 16000) : int(last * 16000)]


async def test_a_question_with_a_thinking_pause_gets_one_answer_and_no_audio_during_the_pause(assistant, clients):
    head, tail = _trimmed("What is the capital of"), _trimmed("Japan?")
    config = StandinConfig(
        stt_reply=lambda r: "What is the capital of" if r.duration_s < len(head) / 16000 + 1.2 else "What is the capital of Japan?"
    )
    server, standin = await assistant(config)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    sent = await client.mic.say(to_48k(concat(silence(0.2), head, silence(1.0), tail, silence(0.1))))
    resumed_at = sent + 0.2 + len(head) / 16000 + 1.0
    _, reply = await client.wait_event("reply", timeout=20)
    assert reply["text"].startswith("You said: What is the capital of Japan") and reply["turn"] == 1
    assert [e["text"] for e in events_of(client, "transcript")] == ["What is the capital of Japan?"]
    assert [t for t in client.audible_times() if t < resumed_at + 0.3] == [], "reply audio during the pause"
    assert len(events_of(client, "reply")) == 1 and len(standin.log.chat_requests) >= 1


async def test_a_backchannel_during_a_reply_leaves_it_uninterrupted(assistant, clients):
    config = StandinConfig(stt_reply=lambda r: "Mm-hmm." if r.duration_s < 1.2 else QUESTION, llm_reply=LONG_REPLY, tts_ms_per_char=20)
    server, _ = await assistant(config)
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    client.send({"type": "text", "text": "Tell me a story."})
    t_speaking, _ = await client.wait_event("state", state="speaking", timeout=15)
    await asyncio.sleep(1.0)
    await client.mic.say(to_48k(concat(_trimmed("Mm-hmm."), silence(0.1))))
    t_bc, _ = await client.wait_event("speech_started", after=t_speaking, timeout=10)
    _, reply = await client.wait_event("reply", timeout=60)
    assert reply["interrupted"] is False and reply["heard"] == reply["text"] == LONG_REPLY
    assert [t for t in client.audible_times() if t > t_bc + 1.5], "the reply went on after the backchannel"
    assert [e["turn"] for e in events_of(client, "transcript")] == [1], "the backchannel started no turn"


REPLY_ZH = "中国的首都是北京。北京是一座历史悠久的城市，有三千多年的历史。你去过北京吗？"


async def test_a_mandarin_question_is_heard_answered_sentence_by_sentence_and_then_english_again(assistant, clients):
    # OpenAI-compatible engines with LANGUAGES=en,zh: the endpoint detects the language (it is not
    # forced to English), the reply streamed a character at a time reaches TTS sentence by sentence.
    config = StandinConfig(stt_text="中国的首都是哪里？", llm_reply=REPLY_ZH, llm_token_delay=0.03)
    server, standin = await assistant(config, languages="en,zh")
    client = await clients(server.url)
    await client.wait_event("state", state="listening")
    await ask(client, "Zhong guo de shou du shi na li?")
    _, transcript = await client.wait_event("transcript", timeout=15)
    assert (transcript["text"], transcript["language"]) == ("中国的首都是哪里？", "zh")
    _, reply = await client.wait_event("reply", timeout=20)
    assert reply["text"] == REPLY_ZH and not reply["interrupted"]
    assert {(t.language, t.response_format) for t in standin.log.transcriptions} == {("", "verbose_json")}
    assert "Simplified Chinese" in standin.log.chat_requests[0]["messages"][0]["content"]
    spoken = [request["input"] for request in standin.log.speech_requests]
    assert spoken == ["中国的首都是北京。", "北京是一座历史悠久的城市，有三千多年的历史。", "你去过北京吗？"]
    assert standin.log.tts_started_at[0] < standin.log.llm_completed_at[0], "the first sentence was voiced while the rest was written"
    _, metrics = await client.wait_event("metrics")
    assert metrics["released_by"] in ("model", "words"), "a question ending in ？ is not left to the long silence"

    config.stt_text, config.llm_reply = QUESTION, "Paris is the capital of France."
    sent = (await ask(client))[1]
    _, transcript = await client.wait_event("transcript", after=sent, timeout=15)
    assert (transcript["text"], transcript["language"]) == (QUESTION, "en")
    await client.wait_event("reply", after=sent, timeout=20)
    assert "answer in English" in standin.log.chat_requests[-1]["messages"][0]["content"]
