"""The words turn-taking judges text by (pipeline/language.py)."""

from __future__ import annotations

import pytest

from pipeline.language import is_backchannel, meaningful, rules_for, sounds_unfinished


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mm-hmm.", True), ("Uh-huh.", True), ("Yeah.", True), ("Okay, okay.", True), ("Right.", True),
        ("MMMM.", True), ("Hmm.", True), ("I see.", True), ("Mm-mm.", True), ("Mhm.", True), ("Uh.", False), ("Um, what?", False),
        ("Yeah, but what about Spain?", False), ("Stop.", False), ("No.", False), ("Okay, tell me more about that.", False),
    ],
)  # fmt: skip
def test_backchannels(text, expected):
    assert is_backchannel(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("What is the capital of", True), ("What is the capital of?", True), ("I would like to know...", True), ("Tell me about the", True),
     ("What is the capital of Japan?", False), ("Who wrote Hamlet.", False), ("How far is the moon?", False),
     ("Hello, can you hear me?", False), ("How are you?", False), ("What do you do?", False), ("Do you know what day it is?", False),
     ("What does it look like?", False), ("Can you tell me", True), ("I would like to know.", True), ("Can you help me?", False),
     ("How many legs does?", True), ("What year did", True), ("What is", True), ("How many legs does a cat have?", False),
     ("What did he do?", False), ("What do you think it is?", False), ("How old is he?", False)],
)  # fmt: skip
def test_unfinished_text(text, expected):
    assert sounds_unfinished(text) is expected


@pytest.mark.parametrize(("text", "expected"), [("", False), ("...", False), ("[BLANK_AUDIO]", False), ("(wind)", False), ("Hi.", True)])
def test_meaningful(text, expected):
    assert meaningful(text) is expected


def test_a_language_without_its_own_rules_uses_english():
    assert rules_for("en-US") is rules_for("xx") is rules_for("en")
