"""The page's per-turn timeline, its export and its recording, in a real browser, in a real conversation.

Debian's Chromium runs the page against the real server on the OpenAI-protocol stand-in
(kit/standin.py, a subprocess). The microphone is a cued WAV player: each espeak-ng clip is
played into the page's `getUserMedia` stream when the conversation is where the test wants it
(the reply to the second question playing, for the interruption), so the order of what happens
never depends on how fast this machine is. Two turns, the second interrupted; then every number
in each timeline is checked against the metrics event it came from, the saved conversation
against the events, the saved audio against what was said, and the page at 360 px wide.
"""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.speech import concat, silence, speak
from tests.browser import ROOT, ServerProcess, free_port, get_json, have_browser, launch_chromium, new_page, poll

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not have_browser(), reason="needs Chromium, espeak-ng, sox"),
]

sync_api = pytest.importorskip("playwright.sync_api")

RATE = 48000
SCREENSHOT = Path("/tmp/page-timeline.png")
NARROW = Path("/tmp/page-timeline-360.png")
Q1, A1 = "What is the capital of France?", "The capital of France is Paris."
Q2 = "Tell me about Paris."
A2 = " ".join(f"Paris has sight number {i}, and it is lovely." for i in range(1, 9))  # long: it is still playing when interrupted
Q3, A3 = "No wait, tell me about Spain instead.", "Spain is in the south west of Europe."

# The page's microphone: an AudioContext stream the test plays clips into.
CUED_MIC_JS = """(() => {
  const ctx = new AudioContext({ sampleRate: 48000 });
  const dest = ctx.createMediaStreamDestination();
  // A source always playing, far below the speech gate: a stream nothing plays into sends no audio at all.
  const hum = ctx.createOscillator(), quiet = ctx.createGain();
  quiet.gain.value = 0.0003;
  hum.connect(quiet).connect(dest);
  hum.start();
  window.cuedMic = {
    play(b64) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const pcm = new Int16Array(bytes.buffer);
      const buf = ctx.createBuffer(1, pcm.length, 48000);
      const ch = buf.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(dest);
      src.start();
      return buf.duration;
    },
  };
  navigator.mediaDevices.getUserMedia = async () => { await ctx.resume(); return dest.stream; };
})();"""


def clip(text: str) -> str:
    return base64.b64encode(concat(silence(0.3, RATE), speak(text, rate=RATE), silence(0.2, RATE)).tobytes()).decode()


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("standin") / "standin.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "kit.standin", "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: get_json(base + "/v1/models"), 30, 0.1, "the stand-in")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def configure(standin: str, **changes: Any) -> None:
    body = json.dumps(changes).encode()
    req = urllib.request.Request(standin + "/_standin/config", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


@pytest.fixture(scope="module")
def server(standin: str, tmp_path_factory: pytest.TempPathFactory):
    args = ["--ice-hosts", "127.0.0.1", "--llm-max-tokens", "400"]
    for stage in ("stt", "llm", "tts"):
        args += [f"--{stage}-engine", "openai", f"--{stage}-base-url", standin + "/v1", f"--{stage}-api-key", "sk-test"]
        args += [f"--{stage}-model", f"standin-{stage}"]
    with ServerProcess(args, tmp_path_factory.mktemp("server") / "server.log", startup_timeout=90) as srv:
        poll(lambda: srv.healthz()["status"] == "ok", 60, 0.2, "healthz ok")
        yield srv


def wait_for(page: Any, condition: str, what: str, server: ServerProcess, timeout_s: float = 30) -> None:
    try:
        page.wait_for_function(condition, timeout=timeout_s * 1000)
    except sync_api.TimeoutError:
        events = [e for e in page.evaluate("voice.events") if e["type"] not in ("reply_delta", "transcript_partial")]
        raise AssertionError(f"{what}: not within {timeout_s} s\nevents: {json.dumps(events)}\nserver log:\n{server.log()}") from None


def final_metrics(turn: int) -> str:
    return f"voice.events.some(e => e.type === 'metrics' && e.turn === {turn} && e.final)"


def js_round(x: float) -> int:
    """JavaScript's Math.round (halves up), which the page labels with; Python's round() halves to even."""
    return math.floor(x + 0.5)


def check_timeline(page: Any, turn: int, m: dict[str, Any]) -> dict[str, Any]:
    """Every element of turn `turn`'s timeline against its metrics event `m`; returns what was drawn."""
    drawn = page.evaluate(
        """turn => {
          const box = document.querySelector(`.msg.assistant[data-turn="${turn}"] svg.timeline`);
          if (!box) return null;
          const all = (sel) => [...box.querySelectorAll(sel)].map((el) => ({...el.dataset, text: el.textContent}));
          return {final: box.dataset.final, width: box.getBoundingClientRect().width,
                  held: all(".tl-held"), release: all(".tl-release"), releaseText: all(".tl-release-value"),
                  stt: all("rect.tl-stt"), llm: all("rect.tl-llm"), tts: all("rect.tl-tts"),
                  sttText: all(".tl-stt-value"), llmText: all(".tl-llm-value"), ttsText: all(".tl-tts-value"),
                  play: all(".tl-play"), heardText: all(".tl-heard-value"), pauses: all(".tl-pause"), interrupt: all(".tl-interrupt")};
        }""",
        turn,
    )
    assert drawn is not None, f"no timeline for turn {turn}"
    assert drawn["final"] == "1"
    for stage, at, ms in (
        ("stt", "stt_at_ms", "stt_ms"),
        ("llm", "llm_at_ms", "llm_first_token_ms"),
        ("tts", "tts_at_ms", "tts_first_audio_ms"),
    ):
        ((bar,),) = [drawn[stage]]
        assert float(bar["at"]) == m[at] and float(bar["ms"]) == m[ms], (stage, bar, m)
        assert drawn[stage + "Text"][0]["text"] == str(js_round(m[ms])), (stage, drawn[stage + "Text"], m)
    ((release,),) = [drawn["release"]]
    assert float(release["at"]) == m["released_at_ms"] and release["by"] == m["released_by"], (release, m)
    assert drawn["releaseText"][0]["text"] == f"{m['released_by']} {js_round(m['released_at_ms'])}"
    if m["prepared_at_ms"] < m["released_at_ms"]:
        ((held,),) = [drawn["held"]]
        assert float(held["at"]) == m["prepared_at_ms"] and float(held["to"]) == m["released_at_ms"]
    ((play,),) = [drawn["play"]]
    assert float(play["at"]) == m["heard_at_ms"] and float(play["to"]) == m["ended_at_ms"], (play, m)
    assert drawn["heardText"][0]["text"] == f"heard {js_round(m['heard_at_ms'])} ms"
    pauses = [(float(p["at"]), float(p["resumed"]) if p["resumed"] else None) for p in drawn["pauses"]]
    assert pauses == [tuple(p) for p in (m["pauses"] or [])], (pauses, m["pauses"])
    assert [float(i["at"]) for i in drawn["interrupt"]] == ([m["interrupted_at_ms"]] if m["interrupted_at_ms"] is not None else [])
    return drawn


def wav_channels(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)


def loud_seconds(samples: np.ndarray, rate: int) -> np.ndarray:
    """Start times of the 20 ms windows louder than -40 dBFS."""
    n = len(samples) // (rate // 50)
    windows = samples[: n * (rate // 50)].astype(np.float64).reshape(n, -1) / 32768
    return np.flatnonzero(np.sqrt((windows**2).mean(axis=1)) > 0.01) / 50


def runs(times: np.ndarray, gap: float = 0.3) -> list[tuple[float, float]]:
    """Loud windows joined into (start, end) runs, across quiet gaps shorter than `gap` s (syllables)."""
    out: list[list[float]] = []
    for t in times:
        if out and t - out[-1][1] <= gap:
            out[-1][1] = float(t)
        else:
            out.append([float(t), float(t)])
    return [(a, b) for a, b in out]


def test_two_turns_one_interrupted_timeline_export_and_recording(server, standin, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser)
            page.context.add_init_script(CUED_MIC_JS)
            page.goto(server.base + "/")
            page.check("#record")
            page.click("#start")
            wait_for(page, "voice.status === 'listening' && voice.dc && voice.dc.readyState === 'open'", "listening", server)

            configure(standin, stt_text=Q1, llm_reply=A1)
            page.evaluate("b => cuedMic.play(b)", clip(Q1))
            wait_for(page, final_metrics(1), "turn 1 over", server)

            configure(standin, stt_text=Q2, llm_reply=A2)
            page.evaluate("b => cuedMic.play(b)", clip(Q2))
            wait_for(page, "voice.events.some(e => e.type === 'metrics' && e.turn === 2)", "turn 2 heard", server)
            configure(standin, stt_text=Q3, llm_reply=A3)
            page.evaluate("b => cuedMic.play(b)", clip(Q3))  # over the reply, which is ~20 s long
            wait_for(page, final_metrics(2), "turn 2 over", server)
            assert "interrupted" in page.evaluate("voice.levelMarks()"), "marked on the level strip"
            wait_for(page, final_metrics(3), "turn 3 (the interruption) answered", server)

            events = page.evaluate("voice.events")
            last = {e["turn"]: e for e in events if e["type"] == "metrics"}
            replies = {e["turn"]: e for e in events if e["type"] == "reply"}
            assert not replies[1]["interrupted"] and replies[1]["heard"] == A1
            assert replies[2]["interrupted"] and A2.startswith(replies[2]["heard"]) and len(replies[2]["heard"]) < len(A2)
            assert last[2]["pauses"] and last[2]["interrupted_at_ms"] is not None and last[1]["interrupted_at_ms"] is None
            drawn = {turn: check_timeline(page, turn, last[turn]) for turn in (1, 2, 3)}
            assert drawn[2]["pauses"] and drawn[2]["interrupt"] and not drawn[1]["interrupt"]
            assert page.locator(".msg.assistant.interrupted").count() == 1
            page.set_viewport_size({"width": 900, "height": 1500})  # the chat shows all three turns
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # The conversation, saved.
            with page.expect_download() as saved:
                page.click("#export")
            exported = Path(saved.value.path()).read_bytes()
            session = json.loads(exported)
            assert session["format"] == "voice-session/1" and session["session"] == page.evaluate("voice.session")
            assert [t["turn"] for t in session["turns"]] == [1, 2, 3]
            assert [t["transcript"] for t in session["turns"]] == [Q1, Q2, Q3]
            assert all(t["language"] == "en" and t["source"] == "voice" for t in session["turns"])
            assert [t["interrupted"] for t in session["turns"]] == [False, True, False]
            assert session["turns"][1]["heard"] == replies[2]["heard"] and session["turns"][1]["reply"] == replies[2]["text"]
            for t in session["turns"]:
                assert t["metrics"] == {k: v for k, v in last[t["turn"]].items() if k not in ("type", "turn")}

            # The audio, saved: the user on the left, the assistant on the right, in order.
            with page.expect_download() as audio:
                page.click("#export-audio")
            rate, both = wav_channels(Path(audio.value.path()).read_bytes())
            user, assistant = loud_seconds(both[:, 0], rate), loud_seconds(both[:, 1], rate)
            assert rate == 16000 and len(user) >= 50 and len(assistant) >= 50, (len(user), len(assistant))
            assert user[0] < assistant[0], "the first reply is heard after the first question"
            assert 0 <= len(both) / rate - session["recording"]["seconds"] < 2, "the export says how much was recorded when it was saved"
            # The user began to speak over a playing reply, and the recording shows it stop soon after.
            over = [start for start, _ in runs(user) if any(start - 0.3 <= t <= start for t in assistant)]
            assert over, (runs(user), runs(assistant))
            stopped = next(end for start, end in runs(assistant) if start <= over[0] <= end + 0.3)
            assert stopped - over[0] < 1.0, (over[0], stopped, runs(assistant))  # of a reply 20 s long

            # A narrow phone: nothing wider than the screen, the timelines drawn to fit.
            page.set_viewport_size({"width": 360, "height": 800})
            fits = """[...document.querySelectorAll('svg.timeline')].every(s => s.getBoundingClientRect().right <= 360
                      && Math.abs(s.viewBox.baseVal.width - s.getBoundingClientRect().width) < 2)"""
            wait_for(page, fits, "the timelines redrawn to fit 360 px", server, timeout_s=5)
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            controls = page.evaluate(
                "['#start', '#record', '#export', '#export-audio', '#text-input', '#send', '#levels']"
                ".map(q => { const r = document.querySelector(q).getBoundingClientRect(); return [q, r.left, r.right, r.width]; })"
            )
            assert all(left >= 0 and right <= 360 and width > 0 for _, left, right, width in controls), controls
            check_timeline(page, 2, last[2])  # redrawn, the same numbers
            page.screenshot(path=str(NARROW), full_page=True)

            page.click("#start")  # stop
            poll(lambda: int(server.healthz()["sessions"]) == 0, 10, 0.1, "session closed")
            errors = [line for line in page.console_lines if line.startswith("pageerror")]
            assert not errors, errors
            print(f"\nscreenshots: {SCREENSHOT} {NARROW}; export {len(exported)} bytes; recording {len(both) / rate:.1f} s")
        finally:
            browser.close()
