"""What the LLM is sent: the history format, an interrupted reply in it, and the model choice."""

from __future__ import annotations

import pytest

from pipeline.engines.local_llm import choose_preset
from pipeline.history import DEFAULT_SYSTEM_PROMPT, History
from settings import load_settings

pytestmark = pytest.mark.fast


def test_a_finished_turn_is_a_user_and_an_assistant_message() -> None:
    h = History("sys")
    h.add_turn("What is the capital of Italy?", "Rome.")
    assert h.messages("And of Spain?") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "And of Spain?"},
    ]


def test_an_interrupted_reply_is_what_was_heard_then_a_note_quoting_it() -> None:
    h = History("sys")
    h.add_turn("Tell me a story about a dragon.", "Once upon a time, a dragon", interrupted=True)
    assert h.messages("What were you telling me about?") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Tell me a story about a dragon."},
        {"role": "assistant", "content": "Once upon a time, a dragon —"},
        {"role": "system", "content": 'The user interrupted your reply; they heard only: "Once upon a time, a dragon"'},
        {"role": "user", "content": "What were you telling me about?"},
    ]
    # The entry itself keeps only the heard text: the note is how it is told to the model.
    assert h.entries[1].text == "Once upon a time, a dragon" and h.entries[1].interrupted


def test_a_reply_cut_before_a_word_was_heard_says_so() -> None:
    h = History("sys")
    h.add_turn("Tell me a story.", "", interrupted=True)
    messages = h.messages("Never mind.")
    assert messages[2] == {"role": "assistant", "content": "—"}
    assert messages[3] == {"role": "system", "content": "The user interrupted you before you said anything."}


def test_trimming_drops_whole_turns_and_keeps_the_system_prompt() -> None:
    h = History("sys", max_turns=2)
    for i in range(3):
        h.add_turn(f"q{i}", f"a{i}", interrupted=i == 1)
    roles = [m["role"] for m in h.messages("q3")]
    assert roles == ["system", "user", "assistant", "system", "user", "assistant", "user"]
    assert h.entries[0].text == "q1"


def test_llm_defaults_are_greedy_short_and_answer_first() -> None:
    settings = load_settings([], env={}, dotenv_path=None)
    assert settings.llm_temperature == 0.0
    assert settings.llm_max_tokens == 100
    assert "start with the answer" in DEFAULT_SYSTEM_PROMPT and "one or two short" in DEFAULT_SYSTEM_PROMPT


def test_auto_model_is_quality_on_two_cores_when_installed() -> None:
    assert choose_preset("", cpus=2, quality_installed=True) == "quality"
    assert choose_preset("auto", cpus=16, quality_installed=True) == "quality"
    assert choose_preset("auto", cpus=1, quality_installed=True) == "default"
    assert choose_preset("auto", cpus=4, quality_installed=False) == "default"
    assert choose_preset("tiny", cpus=4, quality_installed=True) == "tiny"
    assert choose_preset("/models/x.gguf") == "/models/x.gguf"


def test_user_context_is_the_users_earlier_words_newest_kept_within_the_bound() -> None:
    h = History("sys")
    assert h.user_context() == ""
    h.add_turn("My name is Peter.", "Hello Peter.")
    h.add_turn("I live in Boston.", "Nice city.", interrupted=True)
    assert h.user_context() == "My name is Peter. I live in Boston."
    assert h.user_context(max_chars=20) == "I live in Boston.", "whole utterances, the newest kept"
