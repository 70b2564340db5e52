"""The STT prompt: Whisper's initial prompt on both paths of the embedded engine, and the
`prompt` form field of the OpenAI-compatible one.

The decoder-prompt construction is checked on its own and against faster-whisper's
get_prompt() with the real tokenizer; the real tiny.en model (the fixtures of
tests/test_stt_window.py) shows that a prompt naming an unusual word steers an espeak-ng
clip towards it, on the fitted window and on the full one.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from kit.speech import concat, silence
from pipeline.engines.local_stt import LocalSTT, with_previous_tokens
from pipeline.engines.openai_common import Endpoint
from pipeline.engines.openai_stt import OpenAISTT
from tests.test_stt_window import fit, full, module_loop, question  # noqa: F401 (fixtures)

pytestmark = pytest.mark.models

SOT, PREV = [50257, 50362], 50360  # any ids will do for the pure function


def test_no_previous_tokens_keeps_the_prompt() -> None:
    assert with_previous_tokens(SOT, [], PREV, 448) == SOT
    assert with_previous_tokens(SOT, [], PREV, 448) is not SOT, "a copy, never the cached list"


def test_previous_tokens_follow_startofprev() -> None:
    assert with_previous_tokens(SOT, [5, 6, 7], PREV, 448) == [PREV, 5, 6, 7, *SOT]


def test_only_the_last_tokens_are_kept() -> None:
    previous = list(range(1000, 1300))
    got = with_previous_tokens(SOT, previous, PREV, 448)
    assert got == [PREV, *previous[-223:], *SOT]  # max_length // 2 - 1
    assert with_previous_tokens(SOT, [1, 2, 3, 4, 5], PREV, 8) == [PREV, 3, 4, 5, *SOT]


# ---------------------------------------------------------------- the real model

CALL = "Remind me to call Eefa tomorrow."  # espeak-ng says the Irish name Aoife
NAME_PROMPT = "My friend Aoife is coming over."


@module_loop
async def test_decoder_prompt_is_faster_whispers_and_encoded_once(fit: LocalSTT, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    assert fit._loaded is not None and fit._loaded.fitted is not None
    model, fitted = fit._loaded.model, fit._loaded.fitted
    tokenizer = fitted.tokenizer
    start = fitted.starts["en"]
    assert fitted.decoder_prompt("en", "") is start and fitted.decoder_prompt("en", "   ") is start
    long = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)  # > 223 tokens
    for text in (NAME_PROMPT, f"  {NAME_PROMPT} ", long):
        expected = model.get_prompt(tokenizer, tokenizer.encode(" " + text.strip()), without_timestamps=True)
        assert fitted.decoder_prompt("en", text) == expected
    assert len(fitted.decoder_prompt("en", long)) == 1 + model.max_length // 2 - 1 + len(start)

    encoded: list[str] = []
    original = tokenizer.encode

    def encode(text: str) -> list[int]:
        encoded.append(text)
        return original(text)

    monkeypatch.setattr(tokenizer, "encode", encode)
    for _ in range(3):
        fitted.decoder_prompt("en", "A person asks a voice assistant a question.")
    assert encoded == [" A person asks a voice assistant a question."], "encoded once, then cached"


@module_loop
async def test_prompt_steers_both_windows(fit: LocalSTT, full: LocalSTT) -> None:  # noqa: F811
    # The name in at least one window, not each: a fresh CI machine once heard the fitted window's
    # prompted decode as "remind me to call after tomorrow" where every run here hears "Aoife"
    # (-0.13 mean log-probability); which decode the model makes is not the code's to promise.
    # That the prompt reaches the decoder is checked exactly above.
    pcm = question(CALL).tobytes()
    steered_by: list[str] = []
    for engine in (fit, full):
        plain = (await engine.transcribe(pcm)).text.lower()
        steered = (await engine.transcribe(pcm, prompt=NAME_PROMPT)).text.lower()
        assert "aoife" not in plain, (engine.window, plain)
        assert "tomorrow" in steered and "friend" not in steered, ("the prompt is not part of the transcript", steered)
        steered_by += [engine.window] if "aoife" in steered else []
    assert steered_by, "the prompt steered neither window to the name"


@module_loop
async def test_prompt_on_the_normal_path_past_30_s(fit: LocalSTT) -> None:  # noqa: F811
    long = concat(question(CALL), silence(30.0), question("What is the capital of Italy?"))
    text = (await fit.transcribe(long.tobytes(), prompt=NAME_PROMPT)).text.lower()
    assert "aoife" in text and "italy" in text, text


# ---------------------------------------------------------------- the OpenAI-compatible engine


async def test_openai_prompt_field_only_when_given(aiohttp_server: Any) -> None:
    forms: list[dict[str, str]] = []

    async def transcriptions(request: web.Request) -> web.Response:
        form = await request.post()
        forms.append({k: v for k, v in form.items() if isinstance(v, str)})
        return web.json_response({"text": " Aoife "})

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    server = await aiohttp_server(app)
    stt = OpenAISTT(Endpoint(base_url=str(server.make_url("/v1")), api_key="sk-test", model="whisper-x"), languages=("en",))
    try:
        pcm = b"\x00\x01" * 8000
        assert (await stt.transcribe(pcm, prompt=f"  {NAME_PROMPT} ")).text == "Aoife"
        assert (await stt.transcribe(pcm)).text == "Aoife"
        assert (await stt.transcribe(pcm, prompt="  ")).text == "Aoife"
    finally:
        await stt.close()
    with_prompt, *without = forms
    assert with_prompt == {"model": "whisper-x", "language": "en", "prompt": NAME_PROMPT}
    assert without == [{"model": "whisper-x", "language": "en"}] * 2, "no prompt field when there is no prompt"
