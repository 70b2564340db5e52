"""The spoken evaluation set: what is asked, and what counts as a right answer.

48 single questions (facts, arithmetic, yes/no) and 8 short conversations (follow-ups that
need the history, a follow-up after a barge-in, a question with a thinking pause). Every item
is spoken in every voice group of `kit.eval_voices` by `python -m bench quality`.

Two halves, fixed by position, not by how well they score: the `tune` half (even positions)
is the one prompts and settings may be tried on; the `held-out` half (odd positions) is only
ever reported, apart. Keywords are checked as whole words in the reply, lower case, with
numbers also matched as words ("56" or "fifty-six").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["tune", "held-out"]
StepKind = Literal["ask", "pause", "bargein"]


@dataclass(frozen=True)
class Question:
    text: str
    keywords: tuple[str, ...]
    topic: Literal["fact", "arithmetic", "yes-no"]
    split: Split = "tune"


@dataclass(frozen=True)
class Step:
    """One user utterance of a conversation.

    ask: spoken after the previous reply finished.
    pause: spoken in two parts, `text` then `after_pause`, with a thinking pause between.
    bargein: spoken over the previous reply, `delay_s` after its first audio, to interrupt it.
    `keywords` empty: the reply is not scored (a statement, or an interruption).
    """

    text: str
    keywords: tuple[str, ...] = ()
    kind: StepKind = "ask"
    after_pause: str = ""
    delay_s: float = 1.5

    @property
    def spoken(self) -> str:
        return f"{self.text} {self.after_pause}".strip()


@dataclass(frozen=True)
class Conversation:
    name: str
    steps: tuple[Step, ...]
    split: Split = "tune"
    needs: Sequence[str] = field(default_factory=tuple)  # what it tests, for the report


YES = ("yes", "yeah", "true", "correct", "indeed")
NO = ("no", "not", "cannot", "can't", "isn't", "doesn't", "don't", "aren't")

_QUESTIONS: list[tuple[str, tuple[str, ...], Literal["fact", "arithmetic", "yes-no"]]] = [
    ("Which planet is closest to the sun?", ("mercury",), "fact"),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci", "vinci"), "fact"),
    ("What is the capital of Italy?", ("rome",), "fact"),
    ("How many legs does a spider have?", ("eight", "8"), "fact"),
    ("What is the largest ocean on Earth?", ("pacific",), "fact"),
    ("At what temperature in Celsius does water freeze?", ("zero", "0"), "fact"),
    ("Who wrote Romeo and Juliet?", ("shakespeare",), "fact"),
    ("What is the capital of Japan?", ("tokyo",), "fact"),
    ("Which animal is called the king of the jungle?", ("lion", "lions"), "fact"),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2"), "fact"),
    ("What is the tallest mountain in the world?", ("everest",), "fact"),
    ("What language do people speak in Brazil?", ("portuguese",), "fact"),
    ("What is the largest planet in the solar system?", ("jupiter",), "fact"),
    ("Who was the first person to walk on the moon?", ("armstrong",), "fact"),
    ("What color do you get when you mix blue and yellow?", ("green",), "fact"),
    ("How many continents are there?", ("seven", "7"), "fact"),
    ("What is the capital of Canada?", ("ottawa",), "fact"),
    ("What is the longest river in Africa?", ("nile",), "fact"),
    ("What do bees make?", ("honey",), "fact"),
    ("In which country are the pyramids of Giza?", ("egypt",), "fact"),
    ("How many minutes are in an hour?", ("sixty", "60"), "fact"),
    ("What is the capital of Spain?", ("madrid",), "fact"),
    ("How many sides does a triangle have?", ("three", "3"), "fact"),
    ("What is the opposite of hot?", ("cold",), "fact"),
    ("What is the largest animal on Earth?", ("blue whale", "whale"), "fact"),
    ("Which month comes after June?", ("july",), "fact"),
    ("How many hours are in a day?", ("twenty-four", "twenty four", "24"), "fact"),
    ("What is the capital of Germany?", ("berlin",), "fact"),
    ("What do caterpillars turn into?", ("butterfly", "butterflies", "moth", "moths"), "fact"),
    ("What planet do we live on?", ("earth",), "fact"),
    ("What is the chemical symbol for water?", ("h2o", "h two o", "h 2 o"), "fact"),
    ("How many days are there in a week?", ("seven", "7"), "fact"),
    ("What is seven times eight?", ("fifty-six", "fifty six", "56"), "arithmetic"),
    ("What is twelve plus nine?", ("twenty-one", "twenty one", "21"), "arithmetic"),
    ("What is one hundred minus thirty?", ("seventy", "70"), "arithmetic"),
    ("What is half of fifty?", ("twenty-five", "twenty five", "25"), "arithmetic"),
    ("What is three times three?", ("nine", "9"), "arithmetic"),
    ("What is fifteen divided by three?", ("five", "5"), "arithmetic"),
    ("What is ten times ten?", ("one hundred", "a hundred", "100"), "arithmetic"),
    ("What is six plus seven?", ("thirteen", "13"), "arithmetic"),
    ("Is the sun a star?", YES, "yes-no"),
    ("Can penguins fly?", NO, "yes-no"),
    ("Is Australia in Europe?", NO, "yes-no"),
    ("Do fish live in water?", YES, "yes-no"),
    ("Does a week have eight days?", NO, "yes-no"),
    ("Is Paris the capital of Germany?", NO + ("berlin",), "yes-no"),
    ("Is ice colder than boiling water?", YES, "yes-no"),
    ("Is a spider an insect?", NO + ("arachnid",), "yes-no"),
]

QUESTIONS: list[Question] = [
    Question(text, keywords, topic, "tune" if i % 2 == 0 else "held-out") for i, (text, keywords, topic) in enumerate(_QUESTIONS)
]

CONVERSATIONS: list[Conversation] = [
    Conversation(
        "favourite colour",
        (Step("My favorite color is green."), Step("What is my favorite color?", ("green",))),
        "tune",
        ("memory",),
    ),
    Conversation(
        "name and city",
        (
            Step("Hi, my name is Peter and I live in Boston."),
            Step("What is my name?", ("peter",)),
            Step("And which city do I live in?", ("boston",)),
        ),
        "held-out",
        ("memory",),
    ),
    Conversation(
        "apples",
        (Step("I have three apples."), Step("If I buy two more, how many apples do I have?", ("five", "5"))),
        "tune",
        ("arithmetic over the history",),
    ),
    Conversation(
        "follow-up",
        (
            Step("What is the capital of Japan?", ("tokyo",)),
            Step("Which continent is that country in?", ("asia",)),
        ),
        "held-out",
        ("follow-up",),
    ),
    Conversation(
        "barge-in question",
        (
            Step("Tell me a long story about a dragon."),
            Step("Sorry, what were you telling me about?", ("dragon", "dragons"), kind="bargein", delay_s=2.0),
        ),
        "tune",
        ("barge-in", "heard-only history"),
    ),
    Conversation(
        "barge-in then question",
        (
            Step("Tell me about the history of the Eiffel Tower."),
            Step("Okay, please stop there.", kind="bargein", delay_s=2.0),
            Step("What were you telling me about?", ("eiffel", "tower", "paris")),
        ),
        "held-out",
        ("barge-in", "heard-only history"),
    ),
    Conversation(
        "thinking pause",
        (
            Step("What is the capital of", ("madrid",), kind="pause", after_pause="Spain?"),
            Step("And what language do they speak there?", ("spanish",)),
        ),
        "tune",
        ("thinking pause", "follow-up"),
    ),
    Conversation(
        "a number",
        (Step("Please remember the number seven."), Step("Now add five to that number. What do you get?", ("twelve", "12"))),
        "held-out",
        ("arithmetic over the history",),
    ),
]


def _number_forms(keyword: str) -> tuple[str, ...]:
    return (keyword, keyword.replace("-", " ")) if "-" in keyword else (keyword,)


def _find(text: str, phrase: str) -> int:
    m = re.search(rf"(?<![a-z0-9']){re.escape(phrase)}(?![a-z0-9'])", text)
    return m.start() if m else -1


def is_right(reply: str, keywords: Sequence[str]) -> bool:
    """Any keyword as a whole word (or phrase) of the reply, case-insensitive.

    A yes/no question (its keywords are YES or NO, maybe plus more) is judged by the first
    yes- or no-word of the reply, so "No, penguins cannot fly" is right for NO and
    "Yes ... not ..." is not.
    """
    text = re.sub(r"[’‘]", "'", reply.lower())
    polar = [w for w in keywords if w in YES or w in NO]
    if polar:
        expected = YES if polar[0] in YES else NO
        hits = sorted((pos, w) for w in YES + NO if (pos := _find(text, w)) >= 0)
        if hits:
            return hits[0][1] in expected
        keywords = [w for w in keywords if w not in polar]
    return any(_find(text, form) >= 0 for keyword in keywords for form in _number_forms(keyword))


# Other languages: asked by `python -m bench.languages`. Keywords are matched as substrings in
# Chinese (no word boundaries there). Alternate items are held out, as above.
_QUESTIONS_BY_LANGUAGE: dict[str, list[tuple[str, tuple[str, ...], Literal["fact", "arithmetic", "yes-no"]]]] = {
    "zh": [
        ("中国的首都是哪里？", ("北京",), "fact"),
        ("法国的首都是哪里？", ("巴黎",), "fact"),
        ("一个星期有几天？", ("七", "7"), "arithmetic"),
        ("三加四等于几？", ("七", "7"), "arithmetic"),
        ("日本的首都是哪里？", ("东京", "東京"), "fact"),
        ("一天有多少个小时？", ("二十四", "24"), "arithmetic"),
        ("熊猫最喜欢吃什么？", ("竹",), "fact"),
        ("世界上最大的海洋是什么？", ("太平洋",), "fact"),
        ("长城在哪个国家？", ("中国",), "fact"),
        ("猫有几条腿？", ("四", "4"), "arithmetic"),
    ],
    "pt": [
        ("Qual é a capital do Brasil?", ("brasília", "brasilia"), "fact"),
        ("Qual é a capital de Portugal?", ("lisboa",), "fact"),
        ("Quantos dias tem uma semana?", ("sete", "7"), "arithmetic"),
        ("Quanto é dois mais três?", ("cinco", "5"), "arithmetic"),
        ("Que língua se fala no Brasil?", ("português", "portugues"), "fact"),
        ("Quantas patas tem um gato?", ("quatro", "4"), "arithmetic"),
    ],
}
QUESTIONS_BY_LANGUAGE: dict[str, list[Question]] = {
    code: [Question(text, keywords, topic, "tune" if i % 2 == 0 else "held-out") for i, (text, keywords, topic) in enumerate(items)]
    for code, items in _QUESTIONS_BY_LANGUAGE.items()
}
