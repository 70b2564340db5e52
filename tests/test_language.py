"""The words turn-taking judges text by (pipeline/language.py)."""

from __future__ import annotations

import pytest

from pipeline.language import (
    aside,
    code_of,
    in_script,
    is_backchannel,
    meaningful,
    next_language,
    rules_for,
    script_language,
    sounds_finished,
    sounds_unfinished,
)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", False), ("...", False), ("[BLANK_AUDIO]", False), ("(wind)", False), ("Hi.", True), ("Thank you.", True),
     ("字幕由Amara.org社群提供", False), ("请不吝点赞 订阅 转发 打赏支持明镜与点点栏目", False), ("（音乐）", False), ("谢谢。", True),
     ("Obrigado por assistir.", False), ("Obrigado!", True), ("北京", True), ("以下是普通话。", False), ("以下是普通话的句子。", False),
     ("以下是普通话的句子：你好", True)],
)  # fmt: skip
def test_meaningful(text, expected):
    assert meaningful(text) is expected


def test_chinese_transcripts_are_written_in_simplified_characters_and_others_left_alone():
    assert in_script("黃先生陪常上主要5000元", "zh") == "黄先生陪常上主要5000元"
    assert in_script("一個星期有幾天？", "zh") == "一个星期有几天？"
    assert in_script("熊猫最喜欢吃什么", "zh") == "熊猫最喜欢吃什么"
    assert in_script("黃 Café", "en") == "黃 Café" and in_script("Olá, tudo bem?", "pt") == "Olá, tudo bem?"


def test_a_language_without_its_own_rules_uses_english():
    assert rules_for("en-US") is rules_for("xx") is rules_for("en")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("嗯。", True), ("嗯嗯", True), ("对对对", True), ("好的，好的。", True), ("嗯，对。", True), ("是的", True), ("OK。", True),
     ("好的，那北京呢？", False), ("对，为什么？", False), ("停", False), ("不是", False), ("中国的首都是哪里？", False)],
)  # fmt: skip
def test_chinese_backchannels_without_spaces(text, expected):
    assert is_backchannel(text, rules_for("zh")) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("中国的首都是哪里？", False), ("我想知道", True), ("请问", True), ("北京和", True), ("中国的首都是，", True), ("因为……", True),
     ("你去过北京吗", False), ("我喜欢吃饺子", False), ("这是我的", False)],
)  # fmt: skip
def test_chinese_unfinished_text(text, expected):
    assert sounds_unfinished(text, rules_for("zh")) is expected


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("你去过北京吗", "zh", True),
        ("中国的首都是哪里？", "zh", True),
        ("那你呢?", "zh", True),
        ("我想去北京。", "zh", False),
        ("你知道吗，", "zh", False),  # a comma: more is coming
        ("请问？", "zh", False),  # a lead-in, however it is punctuated
        ("What is the capital of France?", "en", False),  # English has no such ending: Smart Turn decides
        ("Qual é a capital?", "pt", False),
    ],
)
def test_endings_that_only_close_a_finished_question(text, language, expected):
    assert sounds_finished(text, rules_for(language)) is expected


@pytest.mark.parametrize(
    ("text", "backchannel", "unfinished"),
    [("Tá bom.", True, False), ("Uhum.", True, False), ("Sim, sim.", True, False), ("Qual é a capital do", False, True),
     ("Qual é a capital do Brasil?", False, False), ("Me diz", False, True), ("Tudo bem?", False, False)],
)  # fmt: skip
def test_portuguese_rules(text, backchannel, unfinished):
    rules = rules_for("pt-BR")
    assert (is_backchannel(text, rules), sounds_unfinished(text, rules)) == (backchannel, unfinished)


@pytest.mark.parametrize(
    ("current", "text", "heard", "expected"),
    [
        ("en", "中国的首都是哪里？", "zh", "zh"),  # a question in another accepted language switches
        ("zh", "What is the capital of France?", "en", "en"),  # and back
        ("en", "嗯。", "zh", "en"),  # a syllable does not
        ("zh", "OK.", "en", "zh"),
        ("zh", "Yeah, yeah.", "en", "zh"),  # nor a backchannel
        ("en", "你好", "zh", "zh"),  # two Han characters are two syllables: enough
        ("en", "Bonjour, ça va bien?", "fr", "en"),  # a language not accepted keeps the current one
        ("en", "Tudo bem? Como vai?", "pt", "pt"),
        ("pt", "Tá bom.", "pt", "pt"),
        ("en", "中国的首都是哪里？", "", "zh"),  # the recogniser did not say: judged by the script
        ("zh", "What is the capital of France?", "", "en"),
        ("en", "[BLANK_AUDIO]", "zh", "en"),  # no words, no switch
    ],
)
def test_the_language_is_sticky_across_short_utterances(current, text, heard, expected):
    assert next_language(current, text, heard, ("en", "zh", "pt")) == expected


@pytest.mark.parametrize(
    ("name", "code"),
    [("chinese", "zh"), ("Chinese", "zh"), ("zh", "zh"), ("zh-CN", "zh"), ("english", "en"), ("pt_BR", "pt"), ("klingon", "")],
)
def test_language_names_endpoints_answer_with(name, code):
    assert code_of(name) == code


@pytest.mark.parametrize(
    ("text", "accepted", "expected"),
    [
        ("北京", ("en", "zh"), "zh"),
        ("Paris", ("zh", "en"), "en"),
        ("Paris", ("en", "pt"), "en"),
        ("東京です", ("en", "ja"), "ja"),
        ("北京", ("en",), "en"),
    ],
)
def test_script_language(text, accepted, expected):
    assert script_language(text, accepted) == expected


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Mm hmm.", "en", True),
        ("", "en", True),
        ("[BLANK_AUDIO]", "en", True),
        ("嗯嗯。", "zh", True),
        ("Wait, stop.", "en", False),
        ("等一下", "zh", False),
    ],
)
def test_words_over_a_reply_that_do_not_take_the_floor(text, language, expected):
    assert aside(text, rules_for(language)) is expected
