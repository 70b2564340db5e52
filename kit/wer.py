"""Word error rate: the one normaliser the bench and the tests score transcripts with.

Both sides are folded alike: lower case, punctuation dropped, numbers and ordinals spelt out,
contractions and a few spellings folded ("what's" -> "what is", "colour" -> "color").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

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


def _error_rate(pairs: Sequence[tuple[str, str]], units: Callable[[str], list[str]]) -> tuple[float | None, int, int]:
    errors = total = 0
    for ref, hyp in pairs:
        r = units(ref)
        errors += edit_distance(r, units(hyp))
        total += len(r)
    return (errors / total if total else None), errors, total


def wer(pairs: Sequence[tuple[str, str]]) -> tuple[float | None, int, int]:
    """(corpus WER or None without reference words, word errors, reference words) of (reference, heard) pairs."""
    return _error_rate(pairs, normalise)


_CHINESE_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """0 <= n < 10**8 as it is read: 5000 -> 五千, 15 -> 十五, 2017 -> 二千零一十七."""
    if n < 10:
        return _CHINESE_DIGITS[n]
    if n >= 10**4:
        high, low = divmod(n, 10**4)
        return chinese_number(high) + "万" + (("零" if low < 1000 else "") + chinese_number(low) if low else "")
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit:
            out += ("零" if zero and out else "") + ("" if digit == 1 and unit == "十" and not out else _CHINESE_DIGITS[digit]) + unit
            zero = False
        else:
            zero = True
    return out


def characters(text: str) -> list[str]:
    """The Han characters (and any Latin words) of Chinese text as CER compares them: no punctuation,
    Traditional and Simplified not folded (Whisper's script is part of what is measured), numbers as read."""
    text = re.sub(r"\d+", lambda m: chinese_number(int(m.group())) if len(m.group()) < 9 else m.group(), text.lower())
    return re.findall(r"[\u3400-\u9fff]|[a-z]+", text)


def cer(pairs: Sequence[tuple[str, str]]) -> tuple[float | None, int, int]:
    """(corpus character error rate or None, errors, reference characters) of (reference, heard) Chinese pairs."""
    return _error_rate(pairs, characters)
