"""Real-browser test helpers: the server as a subprocess, Debian Chromium with a fake mic.

Used by tests/test_browser.py (echo pipeline) and reusable for assistant-mode
browser tests: `ServerProcess(["--pipeline", "assistant", ...])`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# Flags every test browser gets. --use-fake-ui-for-media-stream (auto-accept the
# mic prompt) and the fake device are added by `chromium_args`.
BASE_ARGS = [
    "--no-sandbox",  # running as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # else 127.0.0.1 host candidates are skipped
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real IPs, not .local names, in the offer
]


# For tests: one sample of the remote audio: inbound-rtp energy counters and the page's analyser level.
REMOTE_SAMPLE_JS = """async () => {
  const v = window.voice, out = {status: v.status, energy: null, duration: null, level: null, analyser: v.remoteLevel(), mic: v.micLevel};
  if (!v.pc) return out;
  const stats = await v.pc.getStats();
  stats.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") {
      out.energy = r.totalAudioEnergy ?? null;
      out.duration = r.totalSamplesDuration ?? null;
      out.level = r.audioLevel ?? null;
    }
  });
  return out;
}"""


def have_browser() -> bool:
    return Path(CHROMIUM).exists() and shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_args(fake_audio: Path | str | None = None, fake_ui: bool = True) -> list[str]:
    args = list(BASE_ARGS)
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if fake_audio is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_audio}"]
    return args


def launch_chromium(playwright: Any, fake_audio: Path | str | None = None, fake_ui: bool = True, headless: bool = True) -> Any:
    """A Playwright (sync) Browser on Debian's Chromium."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=headless, args=chromium_args(fake_audio, fake_ui))


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def poll(fn: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Call fn until it returns a truthy value (returned) or `timeout` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # retried until the deadline
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


class ServerProcess:
    """`python server.py <args> --port N` as a subprocess; ready when GET /healthz answers.

    Its stdout+stderr go to `log_path`; `log()` returns them (for assertion messages).
    """

    def __init__(
        self,
        args: list[str],
        log_path: Path | str,
        script: str | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        script = script or os.environ.get("VOICE_SERVER_SCRIPT", str(ROOT / "server.py"))
        self.cmd = [sys.executable, script, *args, "--port", str(self.port)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        try:
            poll(self._ready, self.startup_timeout, 0.1, f"{self.base}/healthz")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        self.healthz()
        return True

    def healthz(self) -> dict[str, Any]:
        return get_json(f"{self.base}/healthz")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def new_page(browser: Any) -> Any:
    """A page in a fresh context, its console and page errors kept in `page.console_lines`."""
    ctx = browser.new_context(viewport={"width": 900, "height": 860})
    ctx.set_default_timeout(10000)
    page = ctx.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.console_lines = console
    return page


def mean_square(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Mean-square remote audio level between two samples (totalAudioEnergy is sum(level^2 * dt))."""
    if None in (a["energy"], b["energy"], a["duration"], b["duration"]):
        return None
    dt = b["duration"] - a["duration"]
    return (b["energy"] - a["energy"]) / dt if dt > 0.1 else None
