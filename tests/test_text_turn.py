"""The text end-of-turn signal: its pure parts, then the real embedded model (the product's preset).

Only robust facts are checked on the model: a probability comes back, and a clear finished question
scores far above its cut-off first half. Scores are the model's own softmax, not sampled, so they
repeat from run to run; the cut-off halves have no end token among the top k at all (p 0), the
finished ones well above the bound used here (`python -m bench.text_turn`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest

from pipeline.engines.local_llm import LocalLLM
from pipeline.engines.text_turn import TextTurn, is_end_token, normalize, p_finished, render

PAIRS = [
    ("What is the capital of Japan?", "What is the capital of"),
    ("How many legs does a cat have?", "How many legs does?"),
    ("Who invented the telephone?", "Who invented the?"),
]
FINISHED_AT_LEAST = 0.3  # measured 0.57 at the least (both presets); the halves 0
CUT_AT_MOST = 0.01


def top(*entries: tuple[str, float]) -> list[dict]:
    return [{"token": t, "bytes": list(t.encode()), "logprob": math.log(p)} for t, p in entries]


def test_normalize_drops_case_and_punctuation_but_keeps_words_whole() -> None:
    assert normalize("How many legs does?") == "how many legs does"
    assert normalize("  What's the time, in Tokyo... now?! ") == "what's the time in tokyo now"
    assert normalize("A well-known 'quote' - here.") == "a well-known quote here"
    assert normalize("?!.") == ""


def test_render_is_the_chat_template_left_open_after_the_users_words() -> None:
    assert render("What is the capital of?") == "<|im_start|>user\nwhat is the capital of"
    prompt = render("Japan.", "  Which country?  ")
    assert prompt == "<|im_start|>assistant\nWhich country?<|im_end|>\n<|im_start|>user\njapan"
    assert not prompt.endswith("<|im_end|>")


def test_end_tokens_are_control_tokens_and_sentence_ends() -> None:
    assert is_end_token("", b"")  # <|im_end|> as llama.cpp prints it
    assert is_end_token("?\n", b"?\n") and is_end_token(" .", b" .") and is_end_token("!", b"!")
    assert not is_end_token("...", b"...") and not is_end_token(",", b",") and not is_end_token(" the", b" the")


def test_p_finished_adds_the_end_tokens_mass() -> None:
    entries = [{"token": "", "bytes": [], "logprob": math.log(0.2)}, *top(("?", 0.3), (" the", 0.4), ("..", 0.05))]
    assert p_finished(entries) == pytest.approx(0.5)
    assert p_finished(entries, punctuation=False) == pytest.approx(0.2)
    assert p_finished(top((" of", 0.9))) == 0.0


# --- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def turn() -> Iterator[TextTurn]:
    engine = TextTurn.beside(LocalLLM()).load_sync()
    yield engine
    asyncio.run(engine.close())


@pytest.mark.models
def test_returns_a_probability_for_text(turn: TextTurn) -> None:
    for text in ("Hello.", "so I was", "What time is it in Tokyo?"):
        p = asyncio.run(turn.complete(text, previous_reply="Hi! What would you like to know?"))
        assert isinstance(p, float) and 0.0 <= p <= 1.0
    assert asyncio.run(turn.complete("  ...  ")) == 0.0


@pytest.mark.models
@pytest.mark.parametrize(("finished", "cut"), PAIRS)
def test_a_finished_question_scores_far_above_its_cut_off_half(turn: TextTurn, finished: str, cut: str) -> None:
    done, half = turn.complete_sync(finished), turn.complete_sync(cut)
    assert done >= FINISHED_AT_LEAST and half <= CUT_AT_MOST, (done, half)
    # Again, from the cache: only batch shapes differ (llama.cpp evaluates the last token alone), a few hundredths.
    assert turn.complete_sync(finished) == pytest.approx(done, abs=0.05)
