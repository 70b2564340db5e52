"""Cuts a streamed reply into speakable pieces as the tokens arrive.

A sentence ends at . ! ? (or a line break) followed by white space, except
after abbreviations, initials, numbers (3.14 has no space; "1." opening a
list item is not an end) and inside ellipses. Over-long runs are cut at a
comma or space.

Chinese and Japanese put no space after a sentence: there a sentence ends at 。！？；… (or
an ASCII . ! ? ; right after a Han or kana character) as soon as anything follows it, and
lengths count two characters as a word.

The first piece may end sooner, so speech starts while the model is still
writing the rest of the sentence: at a comma after a short clause, or where a
phrase begins ("Mercury is the closest planet | to the sun."), a boundary a
speaker may pause at. Both need a few words first, so the piece plays long
enough to cover the writing and voicing of the rest of the sentence.
"""

from __future__ import annotations

import re

ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "approx",
    "no", "vol", "fig", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m", "ca", "cf", "dept", "est", "min", "max",
}  # fmt: skip
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han
_CLOSE = "\"')\\]」』”’）"
_END = re.compile(rf"[.!?]+[{_CLOSE}]*(?=\s)|(?:[。！？；]+|(?<=[{_CJK}])(?:[.!?;]+|…+))[{_CLOSE}]*(?=[^{_CLOSE}])|\n")
_CLAUSE = re.compile(r"[,;:]\s|\s[-–—]\s|[，、：]")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD_BEFORE = re.compile(r"([\w.]+)[.]$")
# Words that open a phrase a sentence can be cut in front of: prepositions, subordinators and
# relatives. Not "of" (it binds to the noun before it) nor "and"/"or" (titles, names, lists).
_PHRASE = re.compile(
    r"\s(?=(?:in|on|at|to|from|with|for|about|by|into|during|after|before|because|since|when|while|which|that|who|where|than)\s)"
)


class SentenceSplitter:
    def __init__(self, first_clause_words: int = 4, first_phrase_words: int = 3, max_chars: int = 220) -> None:
        self._buffer = ""
        self._first = True
        self._first_clause_words = first_clause_words
        self._first_phrase_words = first_phrase_words  # 0: the first piece is not cut before a phrase
        self._max_chars = max_chars

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; returns the pieces it completed (possibly none)."""
        self._buffer += delta
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            if piece.strip():
                out.append(piece.strip())

    def flush(self) -> list[str]:
        """The end of the stream: whatever is left is the last piece."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_piece(self) -> str | None:
        text = self._buffer
        for match in _END.finditer(text):
            end = match.end()
            if match.group() != "\n" and not self._is_boundary(text, match.start(), end):
                continue
            return self._take(end)
        if self._first:
            for match in _CLAUSE.finditer(text):
                if _words(text[: match.start()]) >= self._first_clause_words:
                    return self._take(match.end())
            if self._first_phrase_words:
                for match in _PHRASE.finditer(text):
                    if _words(text[: match.start()]) >= self._first_phrase_words:
                        return self._take(match.start() + 1)
        limit = _chars_within(text, self._max_chars)
        if limit < len(text):
            cut = max(text.rfind(", ", 0, limit), text.rfind(" ", 0, limit), text.rfind("，", 0, limit))
            return self._take(cut + 1 if cut > 0 else limit)
        return None

    def _take(self, end: int) -> str:
        piece, self._buffer = self._buffer[:end], self._buffer[end:]
        self._first = False
        return piece

    @staticmethod
    def _is_boundary(text: str, start: int, end: int) -> bool:
        punct = text[start:end]
        if _CJK_CHAR.match(text, start - 1) if start else False:
            return True
        if "." in punct and not any(c in punct for c in "!?"):
            if punct.startswith("..") and end < len(text) and text[end:].lstrip()[:1].islower():
                return False  # an ellipsis mid-sentence
            before = _WORD_BEFORE.search(text[: start + 1])
            word = before.group(1).lower() if before else ""
            if word in ABBREVIATIONS:
                return False
            if len(word) == 1 and word.isalpha() and text[start - 1].isupper():
                return False  # an initial: "J. R. R. Tolkien"
            line_start = text.rfind("\n", 0, start) + 1
            if word.isdigit() and text[line_start:start].strip() == word:
                return False  # "1." opening a list item
        return True


def _words(text: str) -> int:
    """Words, where a Chinese or Japanese word is taken as two characters."""
    han = len(_CJK_CHAR.findall(text))
    return len(_CJK_CHAR.sub(" ", text).split()) + (han + 1) // 2


def _chars_within(text: str, budget: int) -> int:
    """How much of `text` fits in `budget` characters of English: a Han or kana character, a syllable, counts three."""
    used = 0
    for i, char in enumerate(text):
        used += 3 if _CJK_CHAR.match(char) else 1
        if used > budget:
            return i
    return len(text)


_MARKUP = re.compile(r"[*_#`~]+|^\s*[-•]\s+|\[(.*?)\]\(.*?\)", re.MULTILINE)


def speakable(text: str) -> str:
    """The text of a piece as it should be spoken: markdown and list bullets removed."""
    text = _MARKUP.sub(lambda m: m.group(1) or "", text)
    return re.sub(r"\s+", " ", text).strip()
