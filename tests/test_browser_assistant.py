"""The page in a real browser against the real server in assistant mode, on the embedded engines.

The product's default: `server.py` with no engine flags (faster-whisper, llama.cpp,
piper; every model from an installed package). Chromium's fake microphone plays an
espeak-ng question; the page must show the transcript and the spoken reply in the
chat, receive the assistant's events, and play the reply audio on its remote track.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kit.speech import concat, silence, speak, write_wav
from tests.browser import CHROMIUM, REMOTE_SAMPLE_JS, ServerProcess, launch_chromium, mean_square, new_page, poll

if not Path(CHROMIUM).exists():
    pytest.skip(f"needs Chromium at {CHROMIUM}", allow_module_level=True)

from playwright import sync_api  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.models, pytest.mark.timeout(240)]

RATE = 48000
QUESTION = "What is the capital of France?"
# Chromium loops the fake-mic file: the silence after the question is long enough that
# the question is not asked a second time before the reply has been heard and checked.
LEAD_S, TRAIL_S = 1.0, 25.0
SCREENSHOT = Path("/tmp/assistant.png")
STARTUP_S = 120.0  # the engines load before the server binds its port; a busy machine is slower


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = concat(silence(LEAD_S, RATE), speak(QUESTION, rate=RATE), silence(TRAIL_S, RATE))
    return write_wav(tmp_path_factory.mktemp("mic") / "question.wav", samples, RATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with ServerProcess(["--ice-hosts", "127.0.0.1", "--llm-temperature", "0"], log, startup_timeout=STARTUP_S) as srv:
        poll(lambda: srv.healthz()["status"] == "ok", 60, 0.2, "healthz status ok (engines loaded)")
        yield srv


@pytest.fixture
def page(fake_mic):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p, fake_audio=fake_mic)
        try:
            yield new_page(browser)
        finally:
            browser.close()


def event_types(page) -> list[str]:
    return page.evaluate("voice.events.map(e => e.type)")


def test_spoken_question_gets_spoken_answer_in_the_page(page, server):
    started = time.monotonic()
    health = server.healthz()
    assert health["pipeline"] == "assistant" and all(e["ready"] for e in health["engines"].values()), health
    assert health["engines"]["llm"]["engine"].startswith("local:"), health

    page.goto(server.base + "/")
    page.click("#start")
    try:
        page.wait_for_function("document.body.dataset.status === 'listening'", timeout=15000)
    except sync_api.TimeoutError:
        raise AssertionError(f"never listening: {page.evaluate('[voice.status, voice.message]')}\n{page.console_lines}") from None

    def dump() -> str:
        return f"events: {json.dumps(page.evaluate('voice.events'))}\nconsole: {page.console_lines}\nserver log:\n{server.log()}"

    # Sample the remote track from before the question until the turn's metrics arrive.
    samples: list[dict] = []
    deadline = time.monotonic() + 75
    while True:
        samples.append(page.evaluate(REMOTE_SAMPLE_JS))
        types = event_types(page)
        if "metrics" in types and "reply" in types:
            break
        if time.monotonic() >= deadline:
            raise AssertionError("no reply and metrics within 75 s of listening; " + dump())
        time.sleep(0.2)
    # A little more: the tail of the reply may still be playing.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        time.sleep(0.2)
        samples.append(page.evaluate(REMOTE_SAMPLE_JS))

    page.screenshot(path=str(SCREENSHOT))

    types = event_types(page)
    for expected in ("speech_started", "speech_stopped", "transcript_partial", "transcript", "reply_delta", "reply", "metrics"):
        assert expected in types, f"no {expected!r} event; " + dump()
    assert types.count("transcript") == 1, "the question was heard more than once before the reply; " + dump()

    users = page.locator(".msg.user .text").all_inner_texts()
    assert len(users) == 1, users  # the live partial bubble became the transcript's
    assert page.locator(".msg.user.partial").count() == 0
    heard = users[0].lower()
    assert "capital" in heard and "france" in heard, f"user bubble {users[0]!r}; " + dump()
    replies = page.locator(".msg.assistant .text").all_inner_texts()
    assert len(replies) == 1, replies
    assert "paris" in replies[0].lower(), f"assistant bubble {replies[0]!r}; " + dump()
    reply = page.evaluate("voice.events.find(e => e.type === 'reply')")
    assert not reply["interrupted"], reply
    meta = page.locator(".msg.assistant .meta").inner_text()
    assert "voice-to-voice" in meta and "ms" in meta, meta
    metrics = page.evaluate("voice.events.find(e => e.type === 'metrics')")
    assert metrics["voice_to_voice_ms"] > 0, metrics

    # Reply audio on the remote track: the energy counters rise well above the silence before it.
    with_stats = [s for s in samples if s["energy"] is not None]
    assert len(with_stats) >= 3, f"no inbound-rtp audio stats: {samples[-3:]}"
    windows = [mean_square(a, b) for a, b in zip(with_stats, with_stats[1:], strict=False)]
    loud = max((w for w in windows if w is not None), default=0.0)
    quiet = min((w for w in windows if w is not None), default=0.0)
    best_analyser = max(s["analyser"] or 0.0 for s in samples)
    detail = f"max mean-square {loud:.2e}, min {quiet:.2e}, max analyser rms {best_analyser:.4f}"
    # piper speech plays back at a mean-square ~1e-2 and above; silence measures ~1e-9.
    assert loud > 1e-3, "no reply audio on the remote track: " + detail
    assert loud > 100 * max(quiet, 1e-9), "reply audio not clearly louder than silence: " + detail
    assert best_analyser > 0.01, "the page's analyser never heard the reply: " + detail
    assert page.evaluate("voice.events.some(e => e.type === 'state' && e.state === 'speaking')"), "never speaking; " + dump()

    # Stop: the page goes idle and the server ends the session.
    page.click("#start")
    page.wait_for_function("document.body.dataset.status === 'idle'", timeout=5000)
    poll(lambda: int(server.healthz()["sessions"]) == 0, 10, 0.1, "healthz sessions == 0 after Stop")
    errors = [line for line in page.console_lines if line.startswith("pageerror")]
    assert not errors, errors
    print(
        f"\nassistant turn in the browser: {users[0]!r} -> {replies[0]!r}; {detail}; metrics {metrics}; {time.monotonic() - started:.1f} s"
    )
