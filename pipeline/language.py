"""The words turn-taking judges text by, per language: one table a language.

Three questions are asked of a transcript: is it words at all (`meaningful`), is it a listener's
signal rather than a turn (`is_backchannel`), and does it visibly stop mid-phrase
(`sounds_unfinished`). Adding a language is adding a `Rules` row to `RULES`. Chinese and Japanese
are written without spaces, so their tables hold words matched inside the text, not split from it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.timers import ENGLISH_UNITS, Timer, Units, say_duration


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
    # Endings that close a question beyond doubt (Mandarin's final particles): the turn is over at the
    # pause, whatever the end-of-turn model makes of the voice (Smart Turn calls Mandarin unfinished).
    closing: frozenset[str] = frozenset()
    max_backchannel_words: int = 4  # in characters where the language has no spaces
    spaced: bool = True  # words are separated by spaces
    # Transcripts written in Simplified characters: Whisper writes Traditional ones now and then,
    # even after a Simplified prompt.
    simplified: bool = False
    # What Whisper writes on silence or noise in this language (subtitle credits of its training data).
    silence_phrases: frozenset[str] = frozenset()
    answer_in: str = ""  # told to the LLM where several languages are accepted
    repeat: str = "Sorry, I didn't catch that. Could you say it again?"  # what it says when it likely misheard
    one_moment: str = "One moment."  # said while a tool takes its time
    could_not: str = "Sorry, I couldn't do that just now."  # said when a tool timed out
    timer_up: str = "Your timer for {duration} is up."  # said when a timer is due
    reminder: str = "Reminder: {label}."  # ... or a reminder, in the user's words
    units: Units = ENGLISH_UNITS

    def timer_done(self, timer: Timer) -> str:
        return (
            self.reminder.format(label=timer.label)
            if timer.label
            else self.timer_up.format(duration=say_duration(timer.seconds, self.units))
        )


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
    answer_in="The user is speaking English: answer in English.",
)  # fmt: skip

CHINESE = Rules(
    backchannels=frozenset({
        "嗯", "嗯嗯", "嗯哼", "对", "对的", "对啊", "是", "是的", "是啊", "好", "好的", "好吧", "行", "哦", "噢", "喔", "啊",
        "哇", "没错", "明白", "明白了", "知道了", "懂了", "真的", "原来如此", "ok", "okay",
    }),
    hum=re.compile(r"^[嗯呣唔]+$"),
    # Conjunctions, prepositions and fillers a finished sentence does not end with.
    dangling=frozenset({
        "和", "跟", "与", "或者", "还是", "但是", "可是", "因为", "所以", "如果", "而且", "然后", "虽然", "就是", "比如",
        "那个", "这个", "把", "被", "对于", "关于", "除了", "呃", "额",
    }),
    lead_ins=frozenset({("告诉我",), ("我想知道",), ("我想问",), ("请问",), ("你知道",), ("我想问一下",)}),
    closing=frozenset({"吗", "呢", "么", "？", "?"}),
    max_backchannel_words=6,
    spaced=False,
    simplified=True,
    answer_in="The user is speaking Mandarin Chinese: answer in Simplified Chinese (简体中文), in plain sentences.",
    repeat="抱歉，我没听清楚。您能再说一遍吗？",
    one_moment="请稍等。",
    could_not="抱歉，我现在做不到。",
    timer_up="{duration}的计时到了。",
    reminder="提醒您：{label}。",
    units=(("小时", "小时"), ("分钟", "分钟"), ("秒", "秒")),
    silence_phrases=frozenset({
        "字幕由amara.org社群提供", "小编字幕由amara.org社区提供", "请不吝点赞订阅转发打赏支持明镜与点点栏目",
        "谢谢观看", "谢谢大家观看", "感谢观看", "字幕志愿者", "中文字幕", "优优独播剧场", "请订阅我的频道",
        # its own Simplified-Chinese prompt (pipeline/engines/local_stt.py), repeated when it cannot write what it heard
        "以下是普通话的句子", "以下是普通话",
    }),
)  # fmt: skip

PORTUGUESE = Rules(
    backchannels=frozenset({
        "sim", "tá", "ta", "é", "ok", "certo", "claro", "entendi", "isso", "exato", "exatamente", "beleza", "pois é",
        "tá bom", "tá certo", "ah", "ó", "nossa", "sério", "legal", "uhum", "aham", "hum", "ah tá", "entendo", "verdade",
    }),
    hum=re.compile(r"^(?:[hmu]*m+|uhum|aham|hum+)$"),
    dangling=frozenset({
        "o", "a", "os", "as", "um", "uma", "de", "do", "da", "dos", "das", "em", "no", "na", "nos", "nas", "para", "pra",
        "por", "pelo", "pela", "com", "e", "ou", "mas", "porque", "se", "meu", "minha", "seu", "sua", "que", "tipo", "éé",
    }),
    lead_ins=frozenset({("me", "diz"), ("me", "diga"), ("me", "fala"), ("me", "conta"), ("quero", "saber"), ("queria", "saber")}),
    question_words=frozenset({"qual", "quais", "quem", "onde", "quando", "como", "quanto", "quantos", "quantas", "porque"}),
    silence_phrases=frozenset({"legendas pela comunidade amara.org", "obrigado por assistir", "obrigada por assistir"}),
    answer_in="The user is speaking Portuguese: answer in Brazilian Portuguese.",
    repeat="Desculpe, não entendi. Pode repetir?",
    one_moment="Um momento.",
    could_not="Desculpe, não consegui fazer isso agora.",
    timer_up="O seu temporizador de {duration} terminou.",
    reminder="Lembrete: {label}.",
    units=(("hora", "horas"), ("minuto", "minutos"), ("segundo", "segundos")),
)  # fmt: skip

RULES: dict[str, Rules] = {"en": ENGLISH, "zh": CHINESE, "pt": PORTUGUESE}


def rules_for(language: str) -> Rules:
    """The rules of `language` (a code such as "en"); English where none are written yet."""
    return RULES.get(language.split("-")[0].lower(), ENGLISH)


def meaningful(text: str) -> bool:
    """False for empty or noise-only transcripts such as "", "...", "[BLANK_AUDIO]", "(wind)", and
    for what Whisper writes on silence in any language ("字幕由Amara.org社群提供")."""
    words = re.sub(r"\[[^\]]*\]|\([^)]*\)|（[^）]*）|\*[^*]*\*|[^\w]", "", text)
    return bool(words) and _compact(text) not in _SILENCE


def in_script(text: str, language: str) -> str:
    """A transcript in the script its language's readers expect (`Rules.simplified`)."""
    return _to_simplified(text) if rules_for(language).simplified else text


@functools.cache
def _simplifier() -> Any:
    import opencc  # its dictionaries load once, on the first Chinese transcript

    return opencc.OpenCC("t2s")


def _to_simplified(text: str) -> str:
    return str(_simplifier().convert(text))


def _compact(text: str) -> str:
    """Lower case without punctuation or spaces, except inside a web address ("amara.org")."""
    return re.sub(r"[^\w.]|(?<!\w)\.|\.(?!\w)", "", text.lower())


_SILENCE = frozenset(_compact(phrase) for rules in RULES.values() for phrase in rules.silence_phrases)


def is_backchannel(text: str, rules: Rules = ENGLISH) -> bool:
    """True for "mm-hmm", "Yeah.", "Okay, okay.", "Uh-huh.", "嗯嗯。", "对对对" …: a listener's signal, not a turn."""
    if not rules.spaced:
        return _unspaced_backchannel(text, rules)
    words = re.sub(r"[^\w\s'-]", " ", text.lower()).split()
    if not words or len(words) > rules.max_backchannel_words:
        return False
    if " ".join(words) in rules.backchannels:
        return True
    return all(w in rules.backchannels or rules.hum.match(w) for w in words)


def aside(text: str, rules: Rules = ENGLISH) -> bool:
    """Words over a reply that do not take the floor: a backchannel or noise."""
    return not meaningful(text) or is_backchannel(text, rules)


def _unspaced_backchannel(text: str, rules: Rules) -> bool:
    """The text, without punctuation, is a run of backchannels or hums ("对对对", "嗯好的")."""
    compact = re.sub(r"[^\w]", "", text.lower())
    if not compact or len(compact) > rules.max_backchannel_words:
        return False
    if rules.hum.match(compact):
        return True
    tokens = sorted(rules.backchannels, key=len, reverse=True)
    return re.fullmatch("(?:" + "|".join(map(re.escape, tokens)) + ")+", compact) is not None


def sounds_unfinished(text: str, rules: Rules = ENGLISH) -> bool:
    """True when a transcript visibly stops mid-phrase: a trailing ellipsis, comma or dash, or a dangling word."""
    stripped = text.strip()
    if stripped.endswith(("...", "…", ",", "，", "、", "-", "—")):
        return True
    if not rules.spaced:
        compact = re.sub(r"[^\w]", "", stripped.lower())
        endings = rules.dangling | {"".join(lead) for lead in rules.lead_ins}
        return any(compact.endswith(word) for word in endings)
    words = re.sub(r"[^\w\s']", " ", stripped.lower()).split()
    if not words:
        return False
    if words[-1] in rules.dangling or tuple(words[-2:]) in rules.lead_ins or tuple(words[-1:]) in rules.lead_ins:
        return True
    question = len(words) >= 2 and words[0] in rules.question_words
    return question and words[-1] in rules.auxiliaries and words[-2] not in rules.subjects and not rules.auxiliaries & set(words[1:-1])


def sounds_finished(text: str, rules: Rules = ENGLISH) -> bool:
    """True when a transcript ends the way only a finished question does in its language (none in English)."""
    stripped = text.strip()
    return bool(rules.closing) and stripped.endswith(tuple(rules.closing)) and not sounds_unfinished(stripped, rules)


# Language names some endpoints answer with (OpenAI's verbose_json says "chinese"), to ISO codes.
_CODES = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "cantonese": "zh", "portuguese": "pt", "spanish": "es",
    "french": "fr", "german": "de", "italian": "it", "japanese": "ja", "korean": "ko", "russian": "ru",
}  # fmt: skip
_HAN_OR_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
_KANA = re.compile(r"[\u3040-\u30ff]")


def code_of(language: str) -> str:
    """An ISO 639-1 code for a language as an endpoint names it ("chinese", "zh", "zh-CN"); "" if unknown."""
    name = language.strip().lower()
    if name in _CODES:
        return _CODES[name]
    code = name.split("-")[0].split("_")[0]
    return code if re.fullmatch(r"[a-z]{2}", code) else ""


def script_language(text: str, accepted: Sequence[str]) -> str:
    """The accepted language `text` is most likely in by its script alone; the first accepted one otherwise."""
    if _HAN_OR_KANA.search(text):
        guess = "ja" if _KANA.search(text) else "zh"
        if guess in accepted:
            return guess
    latin = [code for code in accepted if code not in ("zh", "ja")]
    return latin[0] if latin and not _HAN_OR_KANA.search(text) else accepted[0]


SWITCH_MIN_LETTERS = 5  # a transcript this long (a Han or kana character counts three) may change the language


def next_language(current: str, text: str, heard: str, accepted: Sequence[str]) -> str:
    """The conversation's language after an utterance the recogniser heard as `heard` ("": unknown, judged by its script).

    Sticky: a short utterance ("ok", "嗯") or a backchannel keeps the current one, as a
    recogniser's guess on a syllable or two is often wrong (LiveKit keeps it under 5 characters).
    """
    heard = heard or script_language(text, accepted)
    if heard == current or heard not in accepted or not meaningful(text):
        return current
    compact = re.sub(r"[^\w]", "", text)
    letters = len(compact) + 2 * len(_HAN_OR_KANA.findall(compact))
    if letters < SWITCH_MIN_LETTERS or is_backchannel(text, rules_for(heard)):
        return current
    return heard
