"""Word error rate: the one normaliser the bench and the tests score transcripts with.

Both sides are folded alike: lower case, punctuation dropped, numbers and ordinals spelt out,
contractions and a few spellings folded ("what's" -> "what is", "colour" -> "color").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = dict(enumerate("zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()))
FOLDS: dict[str, str] = {
    "i'm": "i am",
    "that's": "that is",
    "it's": "it is",
    "what's": "what is",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "i've": "i have",
    "i'll": "i will",
    "don't": "do not",
    "doesn't": "does not",
    "isn't": "is not",
    "aren't": "are not",
    "won't": "will not",
    "can't": "can not",
    "cannot": "can not",
    "mr": "mister",
    "ok": "okay",
    "favourite": "favorite",
    "colour": "color",
}
_FOLD = re.compile(r"(?<![a-z'])(" + "|".join(re.escape(k) for k in sorted(FOLDS, key=len, reverse=True)) + r")(?![a-z'])")


def number_words(n: int) -> str:
    """0 <= n < 10**9 in words: 212 -> 'two hundred twelve'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + " " + name + ("" if n % size == 0 else " " + number_words(n % size))
    raise ValueError(n)


def normalise(text: str) -> list[str]:
    """The words of `text` as WER compares them."""
    text = re.sub(r"[’‘]", "'", text.lower())
    text = re.sub(r"\bmr\.", "mr", text)
    text = _FOLD.sub(lambda m: FOLDS[m.group(1)], text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _ORDINALS.get(int(m.group(1)), m.group(1)), text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = text.replace("+", " plus ").replace("=", " equals ")
    text = re.sub(r"[-–—/]", " ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text).replace("'", "")
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} " if len(m.group()) <= 9 else m.group(), text)
    return text.split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(pairs: Sequence[tuple[str, str]]) -> tuple[float | None, int, int]:
    """(corpus WER or None without reference words, word errors, reference words) of (reference, heard) pairs."""
    errors = words = 0
    for ref, hyp in pairs:
        r = normalise(ref)
        errors += edit_distance(r, normalise(hyp))
        words += len(r)
    return (errors / words if words else None), errors, words
