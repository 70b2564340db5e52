"""The conversation's rules in virtual time: fake engines, an in-memory output, real VAD on espeak speech.

Each test feeds microphone audio frame by frame (media time), so every assertion
is about what happened at which frame: no sleeps, no network, milliseconds each.
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from kit.eval_voices import render
from kit.speech import concat, silence, speak, voiced_bounds
from pipeline.engines.base import Heard
from tests.fakes import RATE, FakeLLM, Harness

pytestmark = pytest.mark.fast

QUESTION = "What is the capital of France?"
LONG = " ".join(f"This is sentence number {i} of a long answer." for i in range(1, 9))


def cough(seconds: float = 0.25, seed: int = 1) -> np.ndarray:
    """A band-limited noise burst with a fast attack and decay, at a speech-like level."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = np.convolve(rng.normal(0, 1, n), np.ones(4) / 4, mode="same")
    envelope = np.minimum(1, np.arange(n) / (0.01 * RATE)) * np.exp(-np.arange(n) / (0.08 * RATE))
    return (noise * envelope * 12000).astype(np.int16)


def voiced(text: str) -> np.ndarray:
    """espeak's `text` without its leading and trailing silence, so pauses are exactly what a test adds."""
    speech = speak(text)
    first, last = voiced_bounds(speech)
    return speech[int(first * RATE) : int(last * RATE)]


async def ask(h: Harness, text: str = QUESTION) -> float:
    """Say `text`; returns the media time its last voiced sample ended."""
    speech = speak(text)
    start = h.t
    await h.feed(concat(silence(0.2), speech))
    return start + 0.2 + voiced_bounds(speech)[1]


async def test_answer_released_by_the_end_of_turn_model_at_the_short_pause():
    h = Harness()
    end = await ask(h)
    await h.silence(3.0)
    t_audio = h.audio.audible()[0]
    assert 0.2 <= t_audio - end < 0.45, "released once the pause is 200 ms long, not after the long silence"
    assert [e["state"] for e in h.of("state")] == ["listening", "thinking", "speaking", "listening"]
    metrics, final = h.of("metrics")  # when the reply was first heard, and when the turn ended
    assert metrics["released_by"] == "model" and metrics["turn_complete"] == 0.9
    assert not metrics["final"] and final["final"] and final["ended_at_ms"] is not None and metrics["ended_at_ms"] is None
    assert {k: v for k, v in final.items() if k not in ("final", "ended_at_ms")} == {
        k: v for k, v in metrics.items() if k not in ("final", "ended_at_ms")
    }
    assert h.of("transcript_partial")[0]["text"] == QUESTION
    assert [e["turn"] for e in h.of("speech_stopped")] == [1], "the utterance's own turn, though it was answered first"
    (reply,) = h.of("reply")
    assert reply == {"type": "reply", "text": FakeLLM().reply, "interrupted": False, "heard": FakeLLM().reply, "turn": 1}
    assert [m["role"] for m in h.conversation.history.messages("x")] == ["system", "user", "assistant", "user"]
    await h.close()


async def test_the_metrics_place_each_step_of_the_turn_on_one_timeline_from_the_speech_end():
    h = Harness()
    end = await ask(h)
    await h.silence(3.0)
    m = h.of("metrics")[-1]
    assert m["released_at_ms"] == m["endpoint_ms"] and m["heard_at_ms"] == m["voice_to_voice_ms"], "a spoken turn's own names agree"
    # In order, to a frame: here the output plays a frame over the same 20 ms as the mic frame
    # that released it, so what is heard can be stamped a frame before the step that caused it.
    steps = ["prepared_at_ms", "stt_at_ms", "llm_at_ms", "tts_at_ms", "released_at_ms", "heard_at_ms", "ended_at_ms"]
    at = [m[k] for k in steps]
    assert all(b >= a - 20 for a, b in zip(at, at[1:], strict=False)) and 0 < at[0] < at[-1], m
    assert abs(m["heard_at_ms"] - (h.audio.audible()[0] - end) * 1000) <= 21, "in the media time the audio played at"
    assert m["pauses"] is None and m["interrupted_at_ms"] is None
    await h.close()


async def test_a_typed_turn_is_timed_from_its_arrival():
    h = Harness()
    await h.silence(0.5)
    typed_at = h.t
    h.conversation.on_text("Hello there")
    await h.silence(3.0)
    m = h.of("metrics")[-1]
    assert m["final"] and m["prepared_at_ms"] == m["released_at_ms"] == 0 and m["voice_to_voice_ms"] is None
    at = [m[k] for k in ("llm_at_ms", "tts_at_ms", "heard_at_ms", "ended_at_ms")]
    assert all(b >= a - 20 for a, b in zip(at, at[1:], strict=False)) and m["stt_at_ms"] is None, m
    assert abs(m["heard_at_ms"] - (h.audio.audible()[0] - typed_at) * 1000) <= 21
    await h.close()


async def test_the_reply_is_prepared_at_the_short_pause_and_judged_at_200_ms_of_silence():
    h = Harness(segmenter={"pause_ms": 100})
    await h.feed(concat(silence(0.2), voiced(QUESTION)))
    end = h.t
    await h.silence(0.16)
    assert len(h.llm.requests) == 1, "prepared at the 100 ms pause"
    assert h.detector.calls == [] and h.audio.audible() == [], "not judged yet, nothing heard"
    await h.silence(0.1)
    (seconds,) = h.detector.calls
    # The utterance's audio starts at media time 0 (its 300 ms prefix reaches back past the leading
    # silence), so its length is where it ends: 200 ms after the speech, within a frame.
    assert end + 0.18 <= seconds <= end + 0.24, "the model heard the utterance with 200 ms of silence after it"
    await h.silence(1.0)
    assert 0.2 <= h.audio.audible()[0] - end < 0.35
    await h.close()


async def test_held_reply_waits_for_the_long_silence_when_the_model_says_unfinished():
    h = Harness(turn=lambda s: 0.1)
    end = await ask(h)
    await h.silence(end + 1.1 - h.t)
    assert h.audio.audible() == [] and h.of("transcript") == [] and h.of("reply_delta") == [], "held: nothing shown or heard"
    assert len(h.llm.requests) == 1, "but it was prepared"
    await h.silence(2.5)
    t_audio = h.audio.audible()[0]
    assert 1.15 <= t_audio - end < 1.3, "released by the 1.2 s silence, audio ready at once"
    assert h.of("metrics")[0]["released_by"] == "silence"
    await h.close()


async def test_speculation_thrown_away_when_the_user_goes_on():
    h = Harness(stt=lambda s: "What is the capital of" if s < 2.0 else "What is the capital of Japan?", turn=lambda s: 0.1)
    await h.feed(concat(silence(0.2), voiced("What is the capital of"), silence(1.0)))  # a thinking pause: a held turn is made
    assert len(h.stt.calls) == 1 and h.audio.audible() == []
    speech_ends = h.t + len(voiced("Japan?")) / RATE
    await h.feed(concat(voiced("Japan?"), silence(6.0)))
    # one answer, to the whole question, with nothing of the thrown-away one
    assert [e["text"] for e in h.of("transcript")] == ["What is the capital of Japan?"]
    assert len(h.of("reply")) == 1 and h.of("reply")[0]["turn"] == 1
    assert h.llm.requests[-1][-1]["content"] == "What is the capital of Japan?"
    assert min(h.audio.audible()) > speech_ends, "no audio during the pause"
    assert [e["text"] for e in h.of("transcript_partial")] == ["What is the capital of", "What is the capital of Japan?"]
    await h.close()


async def _talking(h: Harness) -> float:
    """Ask, and return the media time the reply became audible (after 1 s of it)."""
    await ask(h)
    await h.silence(0.6)
    t0 = h.audio.audible()[0]
    await h.silence(1.0)
    return t0


async def test_barge_in_pauses_at_once_and_real_words_cancel_with_heard_only_history():
    words = {0: QUESTION}

    def stt(seconds: float) -> str:
        return words[0]

    h = Harness(stt=stt, llm=FakeLLM(LONG))
    await _talking(h)
    words[0] = "Stop. What about Spain?"
    onset = h.t + 0.2
    await h.feed(concat(silence(0.2), speak("Stop. What about Spain?")))
    speech_started = h.first("speech_started", turn=2)[0]
    last_audible = [t for t in h.audio.audible() if t < onset + 0.5][-1]
    assert last_audible < onset + 0.08, "paused on the first 40 ms of voice, before speech is confirmed"
    assert speech_started - onset <= 0.15
    await h.silence(3.0)
    first = h.of("reply")[0]
    assert first["turn"] == 1 and first["interrupted"] is True and LONG.startswith(first["heard"]) and first["heard"]
    assert len(first["heard"]) < len(LONG) / 2
    history = h.conversation.history.entries
    assert history[1].interrupted and history[1].text == first["heard"]
    (timed,) = [m for m in h.of("metrics") if m["turn"] == 1 and m["final"]]
    ((paused_at, resumed_at),) = timed["pauses"]
    assert resumed_at is None and paused_at <= timed["interrupted_at_ms"] <= timed["ended_at_ms"], timed
    origin = h.audio.audible()[0] - timed["heard_at_ms"] / 1000  # turn 1's speech end
    assert onset <= origin + paused_at / 1000 <= onset + 0.1, "paused at the hint of voice over it"
    assert h.of("reply")[1]["turn"] == 2 and h.llm.requests[-1][-1]["content"] == "Stop. What about Spain?"
    await h.close()


@pytest.mark.parametrize("sound", ["cough", "mm-hmm", "yeah"])
async def test_a_cough_or_backchannel_pauses_the_reply_and_it_resumes(sound):
    said = {"text": QUESTION}
    h = Harness(stt=lambda s: said["text"], llm=FakeLLM(LONG))
    await _talking(h)
    said["text"] = {"cough": "", "mm-hmm": "Mm-hmm.", "yeah": "Yeah."}[sound]
    clip = cough() if sound == "cough" else speak(sound.capitalize() + ".")
    t_sound = h.t
    await h.feed(concat(clip, silence(1.5)))
    audible_after = h.audio.audible(t_sound + 0.3)
    assert audible_after and audible_after[0] - t_sound < 1.2, "the reply resumed within about a second"
    await h.silence(30)
    (reply,) = h.of("reply")
    assert reply["interrupted"] is False and reply["heard"] == LONG
    assert [e["turn"] for e in h.of("transcript")] == [1], "no new turn"
    final = h.of("metrics")[-1]
    assert final["final"] and final["interrupted_at_ms"] is None and final["pauses"], final
    assert all(resumed is not None and paused < resumed < final["ended_at_ms"] for paused, resumed in final["pauses"]), final
    await h.close()


async def test_a_drawn_out_backchannel_longer_than_an_interruption_resumes_the_reply():
    said = {"text": QUESTION}
    h = Harness(stt=lambda s: said["text"], llm=FakeLLM(LONG))
    await _talking(h)
    said["text"] = "Mm hmm."
    hum = render("Mm hmm.", "flite:slt")  # over a second without a pause
    assert len(hum) / RATE > 1.0
    t_hum = h.t
    await h.feed(concat(hum, silence(1.5)))
    assert len(h.stt.calls) == 3, "the question, the words so far at INTERRUPT_MIN_MS, the backchannel at its pause"
    assert h.audio.audible(t_hum + 1.2), "resumed"
    await h.silence(30)
    (reply,) = h.of("reply")
    assert reply["interrupted"] is False and reply["heard"] == LONG
    await h.close()


async def test_speech_long_enough_cancels_before_its_words_are_known():
    h = Harness(stt=lambda s: QUESTION, llm=FakeLLM(LONG), interrupt_min_s=0.8)
    await _talking(h)
    onset = h.t
    await h.feed(concat(voiced("I think that you should stop talking about this now"), silence(1.5)))
    t_reply, reply = h.first("reply")
    t_partial, _ = h.first("transcript_partial", text=QUESTION)
    assert reply["interrupted"] is True and 0.78 <= t_reply - onset < 1.0
    assert len(h.of("transcript_partial")) == 2 and t_reply < h.events[-1][0]
    await h.close()


async def test_own_voice_coming_back_does_not_interrupt():
    h = Harness(llm=FakeLLM(LONG), echo_db=25)
    await ask(h)
    await h.silence(25)
    (reply,) = h.of("reply")
    assert reply["interrupted"] is False and [e["turn"] for e in h.of("speech_started")] == [1]
    assert h.audio.pauses == 0, "not even paused"
    await h.close()


async def test_a_click_pauses_the_reply_for_a_moment_only():
    h = Harness(llm=FakeLLM(LONG))
    await _talking(h)
    click = (speak("Hello")[1600:2560] * 1.5).astype(np.int16)  # 60 ms of voice: a hint, not speech
    t_click = h.t
    await h.feed(concat(click, silence(1.0)))
    assert h.audio.pauses == 1 and h.of("speech_started") == h.of("speech_started")[:1]
    gap = [t for t in h.audio.audible(t_click, t_click + 1.0)]
    assert gap and min(t for t in gap if t > t_click + 0.06) - t_click < 0.4, "resumed within a few frames"
    await h.silence(25)
    assert h.of("reply")[0]["interrupted"] is False


async def test_without_the_echo_gate_the_same_echo_would_interrupt():
    h = Harness(llm=FakeLLM(LONG), echo_db=10, echo_gate_db=0)
    await ask(h)
    await h.silence(8)
    assert h.audio.pauses > 2, "the check above is not vacuous: without the gate this echo stops the reply again and again"
    await h.close()


async def test_without_pauses_speech_cancels_at_onset_and_carries_unheard_words():
    said = {"text": "What is the capital of Japan"}
    slow = FakeLLM(gate=asyncio.Event())
    h = Harness(stt=lambda s: said["text"], turn=None, llm=slow, segmenter={"pause_ms": 0, "silence_ms": 500}, interrupt_min_s=0)
    await h.feed(concat(silence(0.2), voiced("What is the capital of Japan"), silence(0.6)))
    assert len(h.stt.calls) == 1 and h.of("transcript")[0]["text"] == "What is the capital of Japan"
    said["text"] = "and of France?"
    await h.feed(voiced("And of France?"))
    assert h.audio.audible() == [] and h.conversation.state == "listening"
    replies = [(r["turn"], r["text"], r["interrupted"], r["heard"]) for r in h.of("reply")]
    assert replies == [(1, "", True, "")], "turn 1 is closed: an empty interrupted reply"
    slow.gate.set()
    await h.silence(6.0)
    assert h.llm.requests[-1][-1]["content"] == "What is the capital of Japan and of France?"
    assert [r["turn"] for r in h.of("reply") if not r["interrupted"]] == [2]
    assert [r["turn"] for r in h.of("reply")] == [t["turn"] for t in h.of("transcript")], "one reply per transcript"
    assert len(h.conversation.history.entries) == 2, "the unheard reply left no history"
    await h.close()


async def test_words_that_stop_mid_phrase_wait_longer_than_the_long_silence():
    h = Harness(stt=lambda s: "What is the capital of" if s < 2.5 else "What is the capital of Japan?", turn=lambda s: 0.9)
    await h.feed(concat(silence(0.2), voiced("What is the capital of")))
    end = h.t
    await h.silence(2.0)  # past VAD_SILENCE_MS: the utterance is over, its held reply is not released
    assert h.audio.audible() == [] and h.of("transcript") == []
    await h.feed(concat(voiced("Japan?"), silence(5.0)))
    assert [e["text"] for e in h.of("transcript")] == ["What is the capital of Japan?"], "one turn over both utterances"
    assert len(h.of("reply")) == 1 and min(h.audio.audible()) > end + 2.0
    await h.close()


async def test_words_that_stop_mid_phrase_are_answered_after_the_longer_wait():
    h = Harness(stt=lambda s: "Tell me about the", turn=lambda s: 0.9)
    await h.feed(concat(silence(0.2), voiced("Tell me about the")))
    end = h.t
    await h.silence(10.0)
    (reply,) = h.of("reply")
    assert reply["interrupted"] is False and h.of("metrics")[0]["released_by"] == "silence"
    assert 3.0 <= h.audio.audible()[0] - end < 3.3, "released by UNFINISHED_SILENCE_MS, not before"
    await h.close()


async def test_a_failing_stage_is_an_error_event_and_the_next_turn_works():
    h = Harness()
    h.stt.fail = True
    await ask(h)
    await h.silence(2.0)
    assert h.of("error")[0]["stage"] == "stt" and h.audio.audible() == []
    h.stt.fail = False
    h.llm.fail_after = 3
    await ask(h)
    await h.silence(2.0)
    assert h.of("error")[1]["stage"] == "llm"
    h.llm.fail_after = None
    await ask(h)
    await h.silence(4.0)
    assert h.of("reply")[-1]["interrupted"] is False and h.audio.audible()
    await h.close()


async def test_a_turn_that_fails_after_its_transcript_was_out_still_ends_with_a_reply_event():
    h = Harness()
    h.llm.fail_after = 1
    h.conversation.on_text("What is the capital of France?")
    await h.silence(1.0)
    assert [e["type"] for _, e in h.events if e["type"] in ("transcript", "error", "reply")] == ["transcript", "error", "reply"]
    assert h.of("reply")[0]["interrupted"] is True and h.of("reply")[0]["heard"] == ""
    assert h.conversation.history.entries == []  # nothing was heard: nothing to remember
    await h.close()


async def test_typed_text_interrupts_and_is_answered():
    h = Harness(llm=FakeLLM(LONG))
    await _talking(h)
    h.conversation.on_text("Never mind. Tell me a joke.")
    await h.silence(0.5)
    assert h.of("reply")[0]["interrupted"] is True
    assert h.of("transcript")[-1] == {
        "type": "transcript",
        "text": "Never mind. Tell me a joke.",
        "turn": 2,
        "source": "text",
        "language": "en",
    }
    await h.close()


async def test_close_frees_every_turn():
    h = Harness(llm=FakeLLM(LONG))
    await _talking(h)
    await h.close()
    assert not h.audio.busy and h.conversation.turns == {}


async def test_words_that_stop_mid_phrase_veto_the_end_of_turn_model():
    h = Harness(stt=lambda s: "What is the capital of" if s < 2.0 else "What is the capital of Japan?", turn=lambda s: 0.9)
    await h.feed(concat(silence(0.2), voiced("What is the capital of"), silence(1.0)))
    assert h.audio.audible() == [] and h.of("transcript") == [], "the model said finished; the words did not"
    await h.feed(concat(voiced("Japan?"), silence(0.5)))
    assert h.of("metrics")[0]["released_by"] == "model"
    await h.silence(5)
    assert [e["text"] for e in h.of("transcript")] == ["What is the capital of Japan?"]
    await h.close()


async def test_carried_words_are_answered_even_if_the_rest_is_lost_in_noise():
    said = {"text": "What is the capital of Japan"}
    slow = FakeLLM(gate=asyncio.Event())
    h = Harness(stt=lambda s: said["text"], turn=None, llm=slow, segmenter={"pause_ms": 0, "silence_ms": 500}, interrupt_min_s=0)
    await h.feed(concat(silence(0.2), voiced("What is the capital of Japan"), silence(0.6)))
    said["text"] = ""
    await h.feed(voiced("Please?"))
    slow.gate.set()
    await h.silence(6.0)
    assert h.llm.requests[-1][-1]["content"] == "What is the capital of Japan"
    assert [r["turn"] for r in h.of("reply") if not r["interrupted"]] == [2]
    await h.close()


async def test_stt_hears_each_utterance_with_the_users_earlier_words_as_its_prompt():
    said = iter(["I have three apples.", "If I buy two more, how many do I have?"])
    heard: dict[float, str] = {}
    h = Harness(stt=lambda s: heard.setdefault(round(s, 1), next(said)))
    await ask(h, "I have three apples.")
    await h.silence(3.0)
    await ask(h, "If I buy two more, how many do I have?")
    await h.silence(3.0)
    assert len(h.of("reply")) == 2
    first_turn = [p for p, s in zip(h.stt.prompts, h.stt.calls, strict=True) if heard[round(s, 1)] == "I have three apples."]
    second_turn = [p for p, s in zip(h.stt.prompts, h.stt.calls, strict=True) if heard[round(s, 1)] != "I have three apples."]
    assert set(first_turn) == {""}, "nothing came before the first utterance"
    assert set(second_turn) == {"I have three apples."}
    await h.close()


STORY = "Tell me about the history of the Roman empire and its first emperors."


async def test_words_are_shown_while_the_user_speaks():
    h = Harness(stt=lambda s: "Tell me about the history" if s < 2.0 else STORY, partial_every_ms=1000)
    end = await ask(h, STORY)
    await h.silence(3.0)
    partials = [(t, e["text"]) for t, e in h.events if e["type"] == "transcript_partial"]
    during = [text for t, text in partials if t < end]
    assert len(during) >= 2, f"a pass after each second of speech: {partials}"
    assert during[0] == "Tell me about the history"
    assert partials[-1][1] == STORY, "the turn's own pass has the last word"
    t_transcript, transcript = h.first("transcript")
    assert t_transcript > end and transcript == {"type": "transcript", "text": STORY, "turn": 1, "source": "voice", "language": "en"}
    assert len(h.llm.requests) == 1 and len(h.of("reply")) == 1, "a pass is no turn"
    await h.close()


async def test_no_passes_while_the_user_speaks_with_a_remote_stt():
    # A remote API would bill every pass: only the turn's own pass at the pause.
    h = Harness(stt=lambda s: STORY, partial_every_ms=1000, stt_partials=False)
    end = await ask(h, STORY)
    await h.silence(3.0)
    assert all(t > end for t, e in h.events if e["type"] == "transcript_partial")
    assert len(h.stt.calls) == 1
    await h.close()


async def test_each_turn_is_answered_and_voiced_in_the_language_it_was_spoken_in():
    said = {"heard": Heard(QUESTION, "en")}
    h = Harness(stt=lambda s: said["heard"], llm=FakeLLM("北京。北京很大。"), languages=("en", "zh"))
    script = [Heard("中国的首都是哪里？", "zh"), Heard("嗯。", "zh"), Heard(QUESTION, "en")]
    for heard in [said["heard"], *script]:
        said["heard"] = heard
        await ask(h)
        await h.silence(6.0)
    transcripts = [(e["text"], e["language"]) for e in h.of("transcript")]
    # "嗯" is a syllable: heard as Chinese, it changes nothing (and, alone, it is answered in the current one).
    assert transcripts == [(QUESTION, "en"), ("中国的首都是哪里？", "zh"), ("嗯。", "zh"), (QUESTION, "en")]
    systems = [request[0]["content"] for request in h.llm.requests]
    assert [("Simplified Chinese" in s, "answer in English" in s) for s in systems] == [
        (False, True),
        (True, False),
        (True, False),
        (False, True),
    ]
    assert [language for language, text in h.tts.spoken if text == "北京。"] == ["en", "zh", "zh", "en"]
    # The STT is told the conversation's language so far (EnglishFirst skips tiny.en in Chinese).
    assert [language for language, _ in itertools.groupby(h.stt.hints)] == ["en", "zh"], h.stt.hints
    await h.close()


async def test_one_language_adds_nothing_to_the_prompt():
    h = Harness()
    await ask(h)
    await h.silence(6.0)
    assert h.llm.requests[0][0]["content"] == h.conversation.config.system_prompt
    assert h.of("transcript")[0]["language"] == "en" and {language for language, _ in h.tts.spoken} == {"en"}
    await h.close()


async def test_words_it_most_likely_misheard_are_asked_again_in_the_users_language_not_answered():
    said = {"heard": Heard("Selfies are the best way to the moon.", "en", avg_logprob=-1.4)}
    h = Harness(stt=lambda s: said["heard"], languages=("en", "zh"), repeat_below_logprob=-0.9)
    await ask(h)
    await h.silence(6.0)
    said["heard"] = Heard("中国的首都是哪里？", "zh", avg_logprob=-1.2)
    await ask(h)
    await h.silence(6.0)
    said["heard"] = Heard(QUESTION, "en", avg_logprob=-0.3)
    await ask(h)
    await h.silence(6.0)
    replies = [e["text"] for e in h.of("reply")]
    assert replies[:2] == ["Sorry, I didn't catch that. Could you say it again?", "抱歉，我没听清楚。您能再说一遍吗？"]
    assert len(h.llm.requests) == 1 and h.llm.requests[0][-1]["content"] == QUESTION, "only the clear question was answered"
    assert [entry.text for entry in h.conversation.history.entries] == [QUESTION, replies[2]], [
        (e.role, e.text, e.interrupted) for e in h.conversation.history.entries
    ]
    await h.close()


async def test_a_client_that_played_less_than_was_sent_truncates_the_history_to_that():
    h = Harness()
    h.conversation.on_text("What is the capital of France?")
    await h.silence(6.0)
    reply = h.of("reply")[0]
    assert reply["interrupted"] is False and h.conversation.history.entries[-1].text == reply["text"]
    # The client played 1 s of the first sentence's audio, then its user stopped it (a Realtime truncate).
    assert h.conversation.on_truncate(1, 1.0)
    kept = h.conversation.history.entries[-1]
    assert kept.interrupted and 0 < len(kept.text.split()) < len("Paris is the capital of France.".split())
    assert reply["text"].startswith(kept.text)
    assert not h.conversation.on_truncate(7, 1.0)  # no such turn
    await h.close()


async def test_a_committed_utterance_is_transcribed_and_answered_and_a_cancel_stops_the_reply():
    h = Harness(llm=FakeLLM(LONG))
    h.conversation.on_commit(speak("What is the capital of France?").tobytes())
    await h.silence(3.0)
    assert h.of("transcript")[0]["source"] == "voice" and h.of("metrics")[0]["released_by"] == "commit"
    assert h.audio.audible()
    h.conversation.on_cancel()
    await h.silence(0.5)
    assert h.of("reply")[0]["interrupted"] is True
    assert h.conversation.history.entries[-1].interrupted
    await h.close()
