"""The page in a real browser (Debian Chromium, fake mic from an espeak-ng WAV) against the real server.

Echo pipeline: the server must hear the speech (speech_started/stopped) and the
browser must receive it back as audio on its remote track; Stop must end the
server session. Also: a denied mic, a refused POST /offer and the token prompt
show clear messages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kit.speech import concat, silence, speak, write_wav
from tests.browser import REMOTE_SAMPLE_JS, ServerProcess, have_browser, launch_chromium, mean_square, new_page, poll

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not have_browser(), reason="needs /usr/bin/chromium, espeak-ng and sox")]

sync_api = pytest.importorskip("playwright.sync_api")

RATE = 48000
SCREENSHOT = Path("/tmp/page.png")


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = speak("Testing one two three, can you hear me?", rate=RATE)
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", concat(silence(1.0, RATE), speech, silence(3.0, RATE)), RATE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with ServerProcess(["--pipeline", "echo", "--ice-hosts", "127.0.0.1"], log) as srv:
        yield srv


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, fake_mic):
    b = launch_chromium(playwright, fake_audio=fake_mic)
    yield b
    b.close()


@pytest.fixture
def page(browser):
    pg = new_page(browser)
    yield pg
    pg.context.close()


def wait_status(page, status: str, timeout: float) -> None:
    try:
        page.wait_for_function("s => document.body.dataset.status === s", arg=status, timeout=timeout * 1000)
    except sync_api.TimeoutError:
        state = page.evaluate("({status: voice.status, message: voice.message, events: voice.events})")
        raise AssertionError(f"status never became {status!r}: {json.dumps(state)}\nconsole: {page.console_lines}") from None


def wait_event(page, etype: str, timeout: float, server: ServerProcess) -> None:
    try:
        page.wait_for_function("t => window.voice.events.some(e => e.type === t)", arg=etype, timeout=timeout * 1000)
    except sync_api.TimeoutError:
        events = page.evaluate("voice.events")
        raise AssertionError(f"no {etype!r} event within {timeout} s; events: {events}\nserver log:\n{server.log()}") from None


def sessions(server: ServerProcess) -> int:
    return int(server.healthz()["sessions"])


def has_event(page, etype: str) -> bool:
    return page.evaluate("t => window.voice.events.some(e => e.type === t)", etype)


def sample_until(page, done, timeout: float, what: str, server: ServerProcess) -> list[dict]:
    """Remote-audio samples every ~0.2 s until done() is true (AssertionError after `timeout` s)."""
    samples: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        samples.append(page.evaluate(REMOTE_SAMPLE_JS))
        if done():
            return samples
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; events: {page.evaluate('voice.events')}\nserver log:\n{server.log()}"
            )
        time.sleep(0.2)


def test_echo_roundtrip(page, server):
    page.goto(server.base + "/")
    assert page.evaluate("document.body.dataset.status") == "idle"
    page.click("#start")
    wait_status(page, "listening", 15)
    assert page.evaluate("voice.session"), "POST /offer answered without a session id"
    assert page.evaluate("voice.micStream.getAudioTracks()[0].readyState") == "live"

    # The fake mic starts with 1 s of silence: remote audio until speech_started is the baseline.
    before = sample_until(page, lambda: has_event(page, "speech_started"), 10, "speech_started", server)
    with_stats = [x for x in before if x["energy"] is not None]
    baseline = mean_square(with_stats[0], with_stats[-1]) if len(with_stats) >= 2 else None
    during = sample_until(page, lambda: has_event(page, "speech_stopped"), 10, "speech_stopped", server)
    mic_peak = max(x["mic"] for x in before + during)
    assert mic_peak > 0.01, f"the mic meter never moved (peak RMS {mic_peak})"

    # Typed text goes out on the events channel (the echo pipeline may ignore it; the session must survive).
    page.fill("#text-input", "hello from the keyboard")
    page.click("#send")
    assert page.input_value("#text-input") == ""
    page.wait_for_selector(".msg.user.typed", timeout=2000)

    # The echo plays back what was heard (~3 s): watch the remote track's level rise.
    deadline = time.monotonic() + 8
    prev = page.evaluate(REMOTE_SAMPLE_JS)
    best_ms, best_analyser, shot = 0.0, 0.0, False
    while time.monotonic() < deadline:
        time.sleep(0.25)
        cur = page.evaluate(REMOTE_SAMPLE_JS)
        ms = mean_square(prev, cur)
        if ms is not None:
            best_ms = max(best_ms, ms)
            prev = cur
        best_analyser = max(best_analyser, cur["analyser"] or 0.0)
        if not shot and best_ms > 1e-3:
            page.screenshot(path=str(SCREENSHOT))
            shot = True
        if best_ms > 1e-2 and best_analyser > 0.01:
            break
    if not shot:
        page.screenshot(path=str(SCREENSHOT))
    detail = f"baseline mean-square {baseline}, echo max mean-square {best_ms:.2e}, max analyser rms {best_analyser:.4f}; events {page.evaluate('voice.events')}"
    # Speech from espeak-ng plays back at a mean-square level ~0.1 (RMS ~ -10 dBFS after the browser's AGC);
    # silence measures ~1e-9. 1e-3 (-30 dBFS) is clearly above silence.
    assert best_ms > 1e-3, "no echo audio on the remote track: " + detail
    if baseline is not None:
        assert best_ms > 100 * max(baseline, 1e-9), "echo not clearly louder than before the speech: " + detail
    events = page.evaluate("voice.events")
    assert events[0] == {"type": "state", "state": "listening"}, events
    assert any(e["type"] == "state" and e.get("state") == "speaking" for e in events), events
    assert page.evaluate("voice.pc.connectionState") == "connected"

    # Stop: the page goes idle, releases the mic, and the server ends the session.
    page.click("#start")
    wait_status(page, "idle", 2)
    assert page.evaluate("voice.pc === null && voice.micStream === null")
    poll(lambda: sessions(server) == 0, 5, 0.1, "healthz sessions == 0 after Stop")

    # The page can start again.
    page.click("#start")
    wait_status(page, "listening", 15)
    poll(lambda: sessions(server) == 1, 5, 0.1, "healthz sessions == 1 after restart")
    page.click("#start")
    wait_status(page, "idle", 2)
    poll(lambda: sessions(server) == 0, 5, 0.1, "healthz sessions == 0 after the second Stop")
    errors = [line for line in page.console_lines if line.startswith("pageerror")]
    assert not errors, errors


def test_chat_renders_assistant_events(page, server):
    """Assistant-mode events (fed to the page's handler) render as a chat with streamed reply and latency."""
    page.goto(server.base + "/")
    for ev in [
        {"type": "state", "state": "listening"},
        {"type": "speech_started", "turn": 1},
        {"type": "speech_stopped", "turn": 1},
        {"type": "state", "state": "transcribing", "turn": 1},
        {"type": "transcript", "turn": 1, "text": "What is the capital of France?"},
        {"type": "state", "state": "thinking", "turn": 1},
        {"type": "reply_delta", "turn": 1, "text": "The capital"},
        {"type": "state", "state": "speaking", "turn": 1},
        {"type": "reply_delta", "turn": 1, "text": " of France is Paris."},
        {
            "type": "reply",
            "turn": 1,
            "text": "The capital of France is Paris.",
            "interrupted": False,
            "heard": "The capital of France is Paris.",
        },
        {
            "type": "metrics",
            "turn": 1,
            "endpoint_ms": 500,
            "stt_ms": 120.4,
            "llm_first_token_ms": 210,
            "tts_first_audio_ms": 95,
            "voice_to_voice_ms": 925.6,
        },
        {"type": "transcript", "turn": 2, "text": "Tell me a long story."},
        {"type": "reply_delta", "turn": 2, "text": "Once upon a time, there was a"},
        {
            "type": "reply",
            "turn": 2,
            "text": "Once upon a time, there was a dragon who loved tea.",
            "interrupted": True,
            "heard": "Once upon a time,",
        },
        {"type": "error", "turn": 3, "stage": "llm", "message": "timed out after 20 s"},
        {"type": "state", "state": "listening"},
    ]:
        page.evaluate("ev => voice.handleEvent(ev)", ev)
    assert page.evaluate("document.body.dataset.status") == "listening"
    users = page.locator(".msg.user .text").all_inner_texts()
    assert users == ["What is the capital of France?", "Tell me a long story."]
    replies = page.locator(".msg.assistant")
    assert replies.count() == 2
    first = replies.nth(0).inner_text()
    assert "The capital of France is Paris." in first and "voice-to-voice 926 ms" in first and "stt 120 ms" in first, first
    assert replies.nth(1).get_attribute("class").split().count("interrupted") == 1
    assert replies.nth(1).locator(".unheard").inner_text() == " there was a dragon who loved tea."
    assert "llm error: timed out after 20 s" in page.locator(".msg.system.error").inner_text()
    assert page.locator("#log li").count() == 16
    page.screenshot(path=str(SCREENSHOT.with_name("page-chat.png")))


def test_tool_calls_show_in_their_turn(page, server):
    page.goto(server.base + "/")
    for ev in [
        {"type": "transcript", "turn": 1, "text": "What is 47 times 23?"},
        {"type": "tool_call", "turn": 1, "name": "calculate", "arguments": '{"expression": "47 * 23"}'},
        {"type": "tool_result", "turn": 1, "name": "calculate", "ok": True, "ms": 0.4},
        {"type": "reply", "turn": 1, "text": "It is 1081.", "interrupted": False, "heard": "It is 1081."},
        {"type": "transcript", "turn": 2, "text": "What time is it in Lisbon?"},
        {"type": "tool_call", "turn": 2, "name": "current_time", "arguments": "not json"},
        {"type": "tool_result", "turn": 2, "name": "current_time", "ok": False, "ms": 5000},
    ]:
        page.evaluate("ev => voice.handleEvent(ev)", ev)
    tools = page.locator(".msg.tool")
    assert tools.count() == 2
    assert tools.nth(0).inner_text().startswith("calculate(47 * 23)") and "done" in tools.nth(0).inner_text()
    assert "failed" in tools.nth(1).get_attribute("class") and "current_time(not json)" in tools.nth(1).inner_text()
    errors = [line for line in page.console_lines if line.startswith("pageerror")]
    assert not errors, errors


def test_timers_count_down_and_show_when_due_or_cancelled(page, server):
    page.goto(server.base + "/")
    for ev in [
        {"type": "timer", "id": 1, "status": "set", "seconds": 120, "label": ""},
        {"type": "timer", "id": 2, "status": "set", "seconds": 600, "label": "check the oven"},
        {"type": "timer", "id": 1, "status": "due", "seconds": 120, "label": ""},
        {
            "type": "reply",
            "turn": 3,
            "text": "Your timer for 2 minutes is up.",
            "interrupted": False,
            "heard": "Your timer for 2 minutes is up.",
        },
        {"type": "timer", "id": 2, "status": "cancelled", "seconds": 600, "label": "check the oven"},
    ]:
        page.evaluate("ev => voice.handleEvent(ev)", ev)
    timers = page.locator(".msg.timer")
    assert timers.count() == 2
    assert timers.nth(0).inner_text().startswith("timer: 2:00") and "due now" in timers.nth(0).inner_text()
    assert "due" in timers.nth(0).get_attribute("class").split()
    assert "reminder: check the oven" in timers.nth(1).inner_text() and "cancelled" in timers.nth(1).get_attribute("class")
    assert page.locator(".msg.assistant").inner_text().startswith("Your timer for 2 minutes is up.")
    errors = [line for line in page.console_lines if line.startswith("pageerror")]
    assert not errors, errors


def test_a_chinese_turn_shows_its_language_and_renders_as_chinese(page, server):
    page.goto(server.base + "/")
    reply = "中国的首都是北京。北京是一座历史悠久的城市，有三千多年的历史。"
    events = [
        {"type": "transcript", "turn": 1, "text": "What is the capital of France?", "language": "en"},
        {"type": "reply", "turn": 1, "text": "Paris.", "interrupted": False, "heard": "Paris."},
        {"type": "transcript", "turn": 2, "text": "中国的首都是哪里？", "language": "zh"},
        *({"type": "reply_delta", "turn": 2, "text": char} for char in reply),  # streamed a character at a time
        {"type": "reply", "turn": 2, "text": reply, "interrupted": False, "heard": reply},
    ]
    for ev in events:
        page.evaluate("ev => voice.handleEvent(ev)", ev)
    users, assistants = page.locator(".msg.user"), page.locator(".msg.assistant")
    assert [users.nth(i).get_attribute("lang") for i in range(2)] == ["en", "zh"]
    assert [assistants.nth(i).get_attribute("lang") for i in range(2)] == ["en", "zh"], "the reply is in the user's language"
    assert users.nth(1).locator(".lang").inner_text() == "中文" and users.nth(0).locator(".lang").inner_text() == "English"
    assert users.nth(1).locator(".text").inner_text() == "中国的首都是哪里？"
    assert assistants.nth(1).locator(".text").inner_text() == reply
    # Rendered as text in a CJK-capable font stack, wrapped between characters, not as one unbreakable word.
    font = assistants.nth(1).evaluate("el => getComputedStyle(el).fontFamily")
    assert "Noto Sans CJK SC" in font or "PingFang SC" in font, font
    width = page.evaluate("() => { const el = document.querySelectorAll('.msg.assistant')[1]; return [el.scrollWidth, el.clientWidth]; }")
    assert width[0] <= width[1] + 1, "no horizontal overflow"
    page.screenshot(path=str(SCREENSHOT.with_name("page-chinese.png")))


def test_mic_denied_shows_message(browser, server):
    ctx = browser.new_context()
    ctx.set_default_timeout(10000)
    ctx.add_init_script(
        """navigator.mediaDevices.getUserMedia = () =>
             Promise.reject(new DOMException("Permission denied", "NotAllowedError"));"""
    )
    page = ctx.new_page()
    try:
        page.goto(server.base + "/")
        page.click("#start")
        wait_status_plain(page, "error", 5)
        message = page.inner_text("#message")
        assert "microphone" in message.lower() and "denied" in message.lower(), message
        assert page.inner_text("#start") == "Start"
        assert sessions(server) == 0
    finally:
        ctx.close()


def test_mic_really_denied(playwright, server, fake_mic):
    """No fake-UI flag and no permission granted: Chromium itself denies the mic."""
    b = launch_chromium(playwright, fake_audio=fake_mic, fake_ui=False)
    try:
        ctx = b.new_context(permissions=[])
        ctx.set_default_timeout(10000)
        page = ctx.new_page()
        page.goto(server.base + "/")
        page.click("#start")
        wait_status_plain(page, "error", 10)
        assert "microphone" in page.inner_text("#message").lower()
    finally:
        b.close()


def test_offer_error_and_token_prompt(browser, server):
    """A refused POST /offer shows the server's JSON error; a token server prompts for the token and sends it."""
    ctx = browser.new_context()
    ctx.set_default_timeout(10000)
    page = ctx.new_page()
    seen_auth: list[str | None] = []

    def offer(route):
        auth = route.request.headers.get("authorization")
        seen_auth.append(auth)
        if auth != "Bearer s3cret":
            route.fulfill(status=401, content_type="application/json", body=json.dumps({"error": "invalid token"}))
        else:
            route.fulfill(status=503, content_type="application/json", body=json.dumps({"error": "too many sessions (max 4)"}))

    try:
        page.route(
            "**/config", lambda r: r.fulfill(content_type="application/json", body=json.dumps({"ice_servers": [], "token_required": True}))
        )
        page.route("**/offer", offer)
        page.goto(server.base + "/")
        page.evaluate("sessionStorage.setItem('voice.token', 'wrong')")
        page.click("#start")
        # 401: the token is dropped and asked again.
        page.wait_for_selector("#token-form:not([hidden])", timeout=10000)
        assert seen_auth == ["Bearer wrong"]
        assert "invalid token" in page.inner_text("#message")
        assert page.evaluate("sessionStorage.getItem('voice.token')") is None
        page.fill("#token-input", "s3cret")
        page.click("#token-form button")
        wait_status_plain(page, "error", 10)
        assert seen_auth[-1] == "Bearer s3cret"
        message = page.inner_text("#message")
        assert "too many sessions (max 4)" in message, message
        assert page.evaluate("voice.pc") is None
    finally:
        ctx.close()


def wait_status_plain(page, status: str, timeout: float) -> None:
    page.wait_for_function("s => document.body.dataset.status === s", arg=status, timeout=timeout * 1000)


def _turn_events(turn: int) -> list[dict]:
    """One realistic turn's events: a question, a three-sentence reply streamed in words, its timings twice."""
    question = f"Question number {turn}: what is the weather like in the city of Lisbon in the spring?"
    reply = "Lisbon in spring is mild, usually between fifteen and twenty two degrees. It rains now and then. Bring a light jacket."
    timings = {
        "endpoint_ms": 340.0,
        "stt_ms": 212.5,
        "llm_first_token_ms": 301.2,
        "first_sentence_ms": 420.9,
        "tts_first_audio_ms": 88.1,
        "voice_to_voice_ms": 1120.4,
        "turn_detect_ms": 41.3,
        "turn_complete": 0.91,
        "released_by": "model",
        "prepared_at_ms": 100.0,
        "released_at_ms": 340.0,
        "stt_at_ms": 100.0,
        "llm_at_ms": 340.0,
        "tts_at_ms": 761.0,
        "heard_at_ms": 1120.4,
    }
    interrupted = turn % 4 == 0
    heard = reply[:40] if interrupted else reply
    return [
        {"type": "speech_started", "turn": turn},
        {"type": "speech_stopped", "turn": turn, "duration_ms": 3100},
        {"type": "transcript", "turn": turn, "text": question, "source": "voice", "language": "en"},
        *({"type": "reply_delta", "turn": turn, "text": word + " "} for word in reply.split()),
        {"type": "metrics", "turn": turn, **timings, "pauses": None, "interrupted_at_ms": None, "ended_at_ms": None, "final": False},
        *(
            [
                {"type": "tool_call", "turn": turn, "name": "clock", "arguments": "{}"},
                {"type": "tool_result", "turn": turn, "name": "clock", "ok": True, "ms": 0.3},
            ]
            if turn % 5 == 0
            else []
        ),
        {"type": "reply", "turn": turn, "text": reply, "interrupted": interrupted, "heard": heard},
        {
            "type": "metrics",
            "turn": turn,
            **timings,
            "tools": [["clock", 400.0, 0.3]] if turn % 5 == 0 else None,
            "pauses": [[2400.0, None]] if interrupted else None,
            "interrupted_at_ms": 3200.0 if interrupted else None,
            "ended_at_ms": 3200.0 if interrupted else 9800.0,
            "final": True,
        },
    ]


def test_the_saved_conversation_of_twenty_turns_is_complete_and_under_100_kb(page, server):
    page.goto(server.base + "/")
    for turn in range(1, 21):
        page.evaluate("evs => evs.forEach(ev => voice.handleEvent(ev))", _turn_events(turn))
    session = page.evaluate("voice.exportSession()")
    size = len(json.dumps(session, indent=1).encode())  # as the button saves it
    assert size < 100_000, size
    turns = session["turns"]
    assert [t["turn"] for t in turns] == list(range(1, 21)) and session["recording"] is None
    assert all(
        t["reply"].startswith("Lisbon in spring") and t["language"] == "en" and t["transcript"].startswith("Question number") for t in turns
    )
    assert [t["turn"] for t in turns if t["interrupted"]] == [4, 8, 12, 16, 20] and turns[3]["heard"] == turns[3]["reply"][:40]
    assert [t["turn"] for t in turns if t["tools"]] == [5, 10, 15, 20] and turns[4]["tools"] == [
        {"name": "clock", "arguments": "{}", "ok": True, "ms": 0.3}
    ]
    assert turns[3]["metrics"]["final"] and turns[3]["metrics"]["pauses"] == [[2400.0, None]] and turns[3]["metrics"]["stt_ms"] == 212.5
    assert page.locator("svg.timeline").count() == 20
    tool = page.locator('.msg.assistant[data-turn="5"] rect.tl-tool')
    assert [tool.get_attribute(k) for k in ("data-name", "data-at", "data-ms")] == ["clock", "400", "0.3"]
    assert page.locator('.msg.assistant[data-turn="4"] rect.tl-tool').count() == 0
    print(f"\nthe saved conversation of 20 turns: {size} bytes")


def test_a_recording_keeps_only_its_last_ten_minutes_through_a_thirty_minute_session(page, server):
    page.goto(server.base + "/")
    out = page.evaluate(
        """() => {
          const rec = voice.makeRecorder(), block = 4096, rate = 48000;
          const left = new Float32Array(block), right = new Float32Array(block);
          let most = 0, pushed = 0;
          for (; pushed < 30 * 60 * rate; pushed += block) {   // 30 minutes, as the worklet hands it over
            const minute = Math.floor(pushed / rate / 60);
            left.fill(minute / 100); right.fill(-minute / 100);  // each minute at its own level, to see which were kept
            rec.push(left, right, rate);
            most = Math.max(most, rec.bytes);
          }
          return {most, bytes: rec.bytes, seconds: rec.seconds, dropped: rec.droppedSeconds, keep: rec.keepS, pushed: pushed / rate};
        }"""
    )
    assert out["most"] <= out["keep"] * 16000 * 4 and out["bytes"] == out["keep"] * 16000 * 4, out  # 38.4 MB at most
    assert out["seconds"] == out["keep"] == 600 and abs(out["dropped"] + out["seconds"] - out["pushed"]) < 0.01, out
    first, last = page.evaluate(
        """async () => {
          const rec = voice.makeRecorder(2), rate = 48000;
          for (let s = 0; s < 5; s++) rec.push(new Float32Array(rate).fill(s / 10), new Float32Array(rate).fill(-s / 10), rate);
          const pcm = new Int16Array((await rec.wav().arrayBuffer()).slice(44));
          return [[pcm[0], pcm[1]], [pcm[pcm.length - 2], pcm[pcm.length - 1]]];
        }"""
    )
    assert first == [round(0.3 * 32767), -round(0.3 * 32767)] and last == [round(0.4 * 32767), -round(0.4 * 32767)], (first, last)
