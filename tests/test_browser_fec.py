"""Debian's Chromium turns its Opus FEC on when the server's receiver reports show loss.

The answer asks for in-band FEC (useinbandfec=1), but a browser only spends bits on it
when RTCP receiver reports say packets are being lost. Here the real page talks to the
app running in this process; after a few clean seconds the server's receiver starts
losing every tenth packet before aiortc counts it (so its receiver reports carry the loss,
as with a lossy link). The Opus packets Chromium sends are checked for FEC (LBRR) data:
none while the link is clean, then FEC within seconds of the loss, which the deadline path
uses to rebuild lost frames. With INBOUND_BUFFER=aiortc the answer does not ask, and
Chromium sends no FEC under the same loss.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kit.speech import concat, silence, speak, write_wav
from rtc.opus import OpusDecoder
from tests.browser import have_browser, launch_chromium, new_page

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not have_browser(), reason="needs /usr/bin/chromium, espeak-ng and sox")]
sync_api = pytest.importorskip("playwright.sync_api")

RATE = 48000
CLEAN_S, LOSSY_S = 3.0, 6.0


@pytest.fixture(scope="module")
def talking_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Continuous speech (Chromium loops the file), so the encoder stays in its speech modes."""
    speech = concat(
        *(speak(text, rate=RATE) for text in ("The quick brown fox jumps over the lazy dog.", "How much wood would a woodchuck chuck?"))
    )
    return write_wav(tmp_path_factory.mktemp("mic") / "talking.wav", concat(speech, silence(0.1, RATE)), RATE)


def open_page(url: str, mic: Path, done: threading.Event, errors: list[str]) -> None:
    """In a thread: Chromium on the page, started, until `done` (Playwright's sync API runs its own loop)."""
    try:
        with sync_api.sync_playwright() as p:
            browser = launch_chromium(p, fake_audio=mic)
            page = new_page(browser)
            page.goto(url + "/")
            page.click("#start")
            page.wait_for_function("() => document.body.dataset.status === 'listening'", timeout=20000)
            done.wait(60)
            browser.close()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(repr(exc))


async def fec_share(server: Any, mic: Path) -> tuple[float, float, int, Any]:
    """(share of Chromium's packets with FEC on the clean link, the share once every 10th is lost, packets lost, the session)."""
    done, errors = threading.Event(), []
    browser = asyncio.ensure_future(asyncio.to_thread(open_page, server.url, mic, done, errors))
    try:
        async with asyncio.timeout(30):
            while not server.sessions and not errors:
                await asyncio.sleep(0.1)
        assert not errors, errors
        session = next(iter(server.sessions.values()))
        receiver = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "audio")
        decoder = OpusDecoder()
        seen: dict[str, list[bool]] = {"clean": [], "lossy": []}
        phase = {"name": "", "n": 0, "lost": 0}
        handle = receiver._handle_rtp_packet

        async def lossy_link(packet: Any, arrival_time_ms: int) -> None:
            if phase["name"]:
                seen[phase["name"]].append(bool(decoder.has_fec(packet.payload)))
            if phase["name"] == "lossy":
                phase["n"] += 1
                if phase["n"] % 10 == 0:
                    phase["lost"] += 1
                    return  # lost before the receiver's statistics: its reports carry it
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = lossy_link
        async with asyncio.timeout(20):
            while session.inbound is None or session.inbound.frames_in < 50:
                await asyncio.sleep(0.1)
        phase["name"] = "clean"
        await asyncio.sleep(CLEAN_S)
        phase["name"] = "lossy"
        started = time.monotonic()
        while time.monotonic() - started < LOSSY_S:
            await asyncio.sleep(0.2)
        assert len(seen["clean"]) > 100 and len(seen["lossy"]) > 200, {k: len(v) for k, v in seen.items()}
        assert session.pc.connectionState == "connected"
        share = {k: sum(v) / len(v) for k, v in seen.items()}
        return share["clean"], share["lossy"], phase["lost"], session
    finally:
        done.set()
        await browser


async def test_chromium_sends_fec_once_the_receiver_reports_loss(start_server: Any, talking_mic: Path) -> None:
    if OpusDecoder().has_fec(b"\x08") is None:
        pytest.skip("this libopus cannot tell FEC data apart (needs 1.5)")
    server = await start_server(pipeline="echo", ice_hosts="127.0.0.1")
    clean, lossy, lost, session = await fec_share(server, talking_mic)
    print(f"\nChromium packets with FEC: clean link {clean:.0%}, after losing every 10th ({lost} lost) {lossy:.0%}")
    assert clean < 0.05, "no FEC bits spent while nothing is lost"
    assert lossy > 0.3, "FEC on once the reports show loss"
    assert session.inbound.buffer.stats.recovered > 0, "and the deadline path used it"


async def test_without_the_answer_asking_chromium_sends_no_fec(start_server: Any, talking_mic: Path) -> None:
    if OpusDecoder().has_fec(b"\x08") is None:
        pytest.skip("this libopus cannot tell FEC data apart (needs 1.5)")
    server = await start_server(pipeline="echo", ice_hosts="127.0.0.1", inbound_buffer="aiortc")
    _, lossy, lost, _ = await fec_share(server, talking_mic)
    assert lost > 20 and lossy < 0.05, lossy
