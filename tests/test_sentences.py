"""The streaming sentence splitter, fed token by token as an LLM would."""

from __future__ import annotations

import pytest

from pipeline.sentences import SentenceSplitter, speakable

pytestmark = pytest.mark.fast


def split(text: str, step: int = 3, **kwargs) -> list[str]:
    splitter = SentenceSplitter(**kwargs)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_sentences_come_out_as_soon_as_they_end(step):
    text = "Paris is the capital of France. It has about 2.1 million people! Want to know more? Sure."
    assert split(text, step, first_clause_words=99, first_phrase_words=0) == [
        "Paris is the capital of France.",
        "It has about 2.1 million people!",
        "Want to know more?",
        "Sure.",
    ]


def test_abbreviations_numbers_and_initials_do_not_end_a_sentence():
    text = "Dr. Smith met Mr. J. R. R. Tolkien at 3.14 p.m. in the U.S. capital, e.g. near St. Paul. Then he left."
    assert split(text, first_clause_words=99, first_phrase_words=0) == [
        "Dr. Smith met Mr. J. R. R. Tolkien at 3.14 p.m. in the U.S. capital, e.g. near St. Paul.",
        "Then he left.",
    ]


def test_lists_split_per_item_not_at_the_number():
    text = "Here are three:\n1. Apples are red.\n2. Bananas are yellow.\n3. Grapes."
    assert split(text, first_clause_words=99, first_phrase_words=0) == [
        "Here are three:",
        "1. Apples are red.",
        "2. Bananas are yellow.",
        "3. Grapes.",
    ]


def test_first_short_clause_is_released_early_only_once():
    text = "Well, the capital of France, as you may know, is Paris, a city of light. Indeed, it is lovely."
    assert split(text, first_clause_words=4, first_phrase_words=0) == [
        "Well, the capital of France,",
        "as you may know, is Paris, a city of light.",
        "Indeed, it is lovely.",
    ]


def test_a_piece_is_released_before_the_stream_ends():
    splitter = SentenceSplitter()
    assert splitter.feed("The answer is forty two. And") == ["The answer is forty two."]
    assert splitter.feed(" then") == []


def test_overlong_runs_are_cut():
    pieces = split("word " * 100, max_chars=80, first_clause_words=99, first_phrase_words=0)
    assert len(pieces) > 1 and all(len(p) <= 80 for p in pieces)


def test_ellipsis_mid_sentence_is_not_an_end():
    assert split("Well... maybe not. Ok.", first_clause_words=99, first_phrase_words=0) == ["Well... maybe not.", "Ok."]


def test_speakable_strips_markdown():
    assert speakable("**Paris** is the `capital`, see [this](http://x).") == "Paris is the capital, see this."
    assert speakable("- item one") == "item one"


@pytest.mark.parametrize("step", [1, 3, 7])
def test_the_first_piece_ends_where_a_phrase_begins(step):
    # The voice starts once the phrase boundary is sure (the word after it has begun), and only
    # the first piece is cut there: later sentences play while the model writes, so they stay whole.
    # (A sentence that arrives whole is not cut: nothing is gained by it.)
    text = "The largest ocean on Earth is the Pacific Ocean. It covers a third of the planet in water."
    assert split(text, step) == ["The largest ocean", "on Earth is the Pacific Ocean.", "It covers a third of the planet in water."]
    # Not before the third word, not before "of"/"and", not inside a word ("tomorrow").
    assert split("Water freezes at zero degrees.", step) == ["Water freezes at zero degrees."]
    assert split("Shakespeare wrote Romeo and Juliet.", step) == ["Shakespeare wrote Romeo and Juliet."]
    assert split("The capital of Italy is Rome.", step) == ["The capital of Italy is Rome."]
    assert split("We will meet tomorrow morning.", step) == ["We will meet tomorrow morning."]


def test_a_word_that_may_still_grow_is_not_a_boundary():
    splitter = SentenceSplitter()
    assert splitter.feed("The first person to") == []  # "to" or "today"?
    assert splitter.feed(" walk") == ["The first person"]


REPLY_ZH = "中国的首都是北京。北京是一座历史悠久的城市，有三千多年的历史。你去过北京吗？"


@pytest.mark.parametrize("step", [1, 2, 1000])
def test_chinese_sentences_end_without_a_space_as_they_stream(step):
    assert split(REPLY_ZH, step, first_clause_words=99) == [
        "中国的首都是北京。",
        "北京是一座历史悠久的城市，有三千多年的历史。",
        "你去过北京吗？",
    ]


def test_a_chinese_sentence_is_out_before_the_reply_is_written():
    splitter = SentenceSplitter()
    pieces = [piece for char in REPLY_ZH[:12] for piece in splitter.feed(char)]
    assert pieces == ["中国的首都是北京。"]


def test_half_width_marks_after_chinese_and_closing_quotes_end_it_too():
    assert split("北京很大!你好吗?他说“好。”然后走了。", 1, first_clause_words=99) == ["北京很大!", "你好吗?", "他说“好。”", "然后走了。"]


def test_the_first_chinese_clause_counts_characters_not_spaces():
    # Eight characters are about four words: long enough to cut at the full-width comma.
    assert split("北京是中国的首都，也是一座历史悠久的城市。", 1, first_clause_words=4)[0] == "北京是中国的首都，"
    assert split("北京很大，也是一座历史悠久的城市。", 1, first_clause_words=4) == ["北京很大，也是一座历史悠久的城市。"]


def test_an_over_long_chinese_run_is_cut_by_speaking_time():
    pieces = split("中" * 200, 1, max_chars=60)
    assert pieces[0] == "中" * 20 and "".join(pieces) == "中" * 200


def test_portuguese_splits_as_english_does():
    text = "A capital do Brasil é Brasília. Ela foi fundada em 1960! Quer saber mais?"
    assert split(text, 1, first_clause_words=99, first_phrase_words=0) == [
        "A capital do Brasil é Brasília.",
        "Ela foi fundada em 1960!",
        "Quer saber mais?",
    ]


@pytest.mark.parametrize(
    ("text", "spoken"),
    [("**北京**是中国的首都。", "北京是中国的首都。"), ("- 第一：北京", "第一：北京"), ("**É** Brasília.", "É Brasília.")],
)
def test_speakable_chinese_and_portuguese(text, spoken):
    assert speakable(text) == spoken
