"""The words turn-taking judges text by, per language: one table a language.

Three questions are asked of a transcript: is it words at all (`meaningful`), is it a listener's
signal rather than a turn (`is_backchannel`), and does it visibly stop mid-phrase
(`sounds_unfinished`). Adding a language is adding a `Rules` row to `RULES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rules:
    backchannels: frozenset[str]  # whole phrases, lower case
    hum: re.Pattern[str]  # a hummed word ("mm", "hmm", "mhm")
    # Words a finished sentence rarely ends with: the speaker paused mid-phrase.
    dangling: frozenset[str]
    lead_ins: frozenset[tuple[str, ...]]  # endings that announce the question rather than ask it
    # A question word first and its only auxiliary last, with no subject before it: the subject has
    # not come yet ("How many legs does"). Not when an auxiliary came before ("How many moons does
    # Jupiter have": the main verb) or a subject did ("Do you know who he is").
    question_words: frozenset[str] = frozenset()
    auxiliaries: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()
    max_backchannel_words: int = 4


ENGLISH = Rules(
    backchannels=frozenset({
        "yeah", "yes", "yep", "yup", "okay", "ok", "right", "sure", "alright", "cool", "nice", "great",
        "uh-huh", "uh huh", "mm-hmm", "mhm", "i see", "got it", "oh", "ah", "aha", "wow", "really", "true", "exactly",
    }),
    hum=re.compile(r"^(?=[mhu-]*m)[mhu]+(?:-[mhu]+)*$|^uh-huh$"),  # mm, hmm, mhm, mm-hmm, mm-mm, uh-huh (a hum, not "uh")
    # Articles, possessives, conjunctions, prepositions, fillers. Not pronouns, auxiliaries or copulas:
    # "Can you hear me?" and "What do you do?" are finished. A stranded preposition ("Where are you
    # from?") only costs a wait.
    dangling=frozenset({
        "the", "a", "an", "my", "your", "his", "her", "their", "our", "its",
        "and", "or", "but", "because", "if", "so", "than", "as", "nor",
        "of", "to", "with", "about", "for", "in", "on", "at", "from", "by", "into", "onto", "between",
        "um", "uh", "er", "erm", "very",
    }),
    lead_ins=frozenset({("tell", "me"), ("show", "me"), ("give", "me"), ("remind", "me"), ("teach", "me"), ("tell", "us"),
                        ("show", "us"), ("to", "know"), ("wondering",), ("wonder",)}),
    question_words=frozenset({"what", "who", "whom", "whose", "which", "where", "when", "why", "how"}),
    auxiliaries=frozenset({"do", "does", "did", "is", "are", "was", "were", "can", "could", "will", "would", "should", "has", "have", "had"}),
    subjects=frozenset({"i", "you", "he", "she", "it", "we", "they", "this", "that", "there", "these", "those", "one"}),
)  # fmt: skip

RULES: dict[str, Rules] = {"en": ENGLISH}


def rules_for(language: str) -> Rules:
    """The rules of `language` (a code such as "en"); English where none are written yet."""
    return RULES.get(language.split("-")[0].lower(), ENGLISH)


def meaningful(text: str) -> bool:
    """False for empty or noise-only transcripts such as "", "...", "[BLANK_AUDIO]", "(wind)"."""
    return bool(re.sub(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[^\w]", "", text))


def is_backchannel(text: str, rules: Rules = ENGLISH) -> bool:
    """True for "mm-hmm", "Yeah.", "Okay, okay.", "Uh-huh." …: a listener's signal, not a turn."""
    words = re.sub(r"[^\w\s'-]", " ", text.lower()).split()
    if not words or len(words) > rules.max_backchannel_words:
        return False
    if " ".join(words) in rules.backchannels:
        return True
    return all(w in rules.backchannels or rules.hum.match(w) for w in words)


def sounds_unfinished(text: str, rules: Rules = ENGLISH) -> bool:
    """True when a transcript visibly stops mid-phrase: a trailing ellipsis, comma or dash, or a dangling word."""
    stripped = text.strip()
    if stripped.endswith(("...", "…", ",", "-", "—")):
        return True
    words = re.sub(r"[^\w\s']", " ", stripped.lower()).split()
    if not words:
        return False
    if words[-1] in rules.dangling or tuple(words[-2:]) in rules.lead_ins or tuple(words[-1:]) in rules.lead_ins:
        return True
    question = len(words) >= 2 and words[0] in rules.question_words
    return question and words[-1] in rules.auxiliaries and words[-2] not in rules.subjects and not rules.auxiliaries & set(words[1:-1])
