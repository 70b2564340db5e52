"""A voice per language (pipeline/engines/voices.py) and how the factory picks them (TTS_VOICES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline.engines.base import EngineError
from pipeline.engines.factory import build_tts
from pipeline.engines.kokoro_tts import KokoroTTS, pieces
from pipeline.engines.local_tts import EspeakTTS, LocalTTS
from pipeline.engines.openai_tts import OpenAITTS
from pipeline.engines.voices import Voices, resample
from settings import load_settings


@dataclass
class Tone:
    name: str
    sample_rate: int
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def stream(self, text: str, language: str = "en") -> AsyncIterator[bytes]:
        self.asked.append((language, text))
        yield np.full(self.sample_rate // 10, 1000, dtype="<i2").tobytes()  # 0.1 s


def test_resample_keeps_the_duration():
    pcm = np.arange(2400, dtype="<i2").tobytes()
    assert resample(pcm, 24000, 24000) is pcm
    assert len(resample(pcm, 24000, 16000)) == 1600 * 2
    assert len(resample(pcm, 16000, 22050)) == round(2400 * 22050 / 16000) * 2


async def test_each_language_goes_to_its_voice_at_the_first_voices_rate():
    english, chinese = Tone("en-voice", 22050), Tone("zh-voice", 16000)
    voices = Voices(english, {"zh": chinese})
    zh = b"".join([chunk async for chunk in voices.stream("北京。", "zh")])
    en = b"".join([chunk async for chunk in voices.stream("Paris.", "en")])
    pt = b"".join([chunk async for chunk in voices.stream("Brasília.", "pt")])
    assert chinese.asked == [("zh", "北京。")] and english.asked == [("en", "Paris."), ("pt", "Brasília.")]
    assert len(zh) == len(en) == len(pt) == 2205 * 2  # 0.1 s at 22.05 kHz each
    assert voices.sample_rate == 22050 and voices.name == "en-voice zh=zh-voice"


def settings(*argv: str):
    return load_settings(list(argv), env={}, dotenv_path=None)


def test_one_language_is_one_voice_as_before():
    assert isinstance(build_tts(settings()), LocalTTS)
    remote = ("--tts-engine", "openai", "--tts-base-url", "http://127.0.0.1:9")
    assert isinstance(build_tts(settings(*remote, "--languages", "en,zh")), OpenAITTS), "openai's voices speak every language"
    assert isinstance(build_tts(settings(*remote, "--languages", "en,zh", "--tts-voices", "zh=nova")), Voices)


@pytest.mark.parametrize(
    ("argv", "voices"),
    [
        # piper's packaged voice is English: Kokoro speaks Mandarin and Portuguese, espeak-ng the rest
        (("--languages", "en,zh,pt,fr"), {"zh": "kokoro:jf_gongitsune", "pt": "kokoro:jf_gongitsune", "fr": "espeak:fr"}),
        (("--languages", "en,pt", "--tts-voices", "pt=pt-br"), {"pt": "espeak:pt-br"}),
        (("--languages", "en,zh,pt", "--tts-engine", "espeak"), {"zh": "espeak:cmn", "pt": "espeak:pt-br"}),
        (("--languages", "en,zh", "--tts-voices", "zh=sit/yue"), {"zh": "espeak:sit/yue"}),
        (("--languages", "en,zh", "--tts-voices", "zh=cmn"), {"zh": "espeak:cmn"}),
        (("--languages", "en,zh", "--tts-voices", "zh=kokoro:jm_kumo"), {"zh": "kokoro:jm_kumo"}),
        (("--languages", "en,zh", "--tts-voices", "zh=kokoro"), {"zh": "kokoro:jf_gongitsune"}),
    ],
)
def test_other_languages_get_their_embedded_voice_unless_tts_voices_names_one(argv, voices):
    tts = build_tts(settings(*argv))
    assert isinstance(tts, Voices)
    assert {code: voice.name for code, voice in tts.by_language.items()} == voices


def test_a_first_language_other_than_english_gets_its_own_voice():
    tts = build_tts(settings("--languages", "zh"))
    assert isinstance(tts, KokoroTTS) and tts.voice == "jf_gongitsune"
    tts = build_tts(settings("--languages", "zh,en"))
    assert isinstance(tts, Voices) and isinstance(tts.default, KokoroTTS) and isinstance(tts.by_language["en"], LocalTTS)
    tts = build_tts(settings("--languages", "zh", "--tts-engine", "espeak"))
    assert isinstance(tts, EspeakTTS) and tts.voice == "cmn"


def test_a_kokoro_voice_it_does_not_have_or_a_language_it_does_not_speak_is_refused_at_start_up():
    with pytest.raises(EngineError, match="jf_alpha, jf_gongitsune"):
        build_tts(settings("--languages", "en,zh", "--tts-voices", "zh=kokoro:zf_xiaobei"))
    with pytest.raises(EngineError, match="speaks zh, pt, not 'fr'"):
        build_tts(settings("--languages", "en,fr", "--tts-voices", "fr=kokoro"))


def test_phoneme_strings_are_cut_at_clause_ends_into_short_runs_the_model_takes():
    assert pieces("ab, cd. ef", limit=7) == ["ab, cd.", "ef"]
    assert pieces("ab, cd. ef", limit=100) == ["ab, cd. ef"]
    assert pieces("ab, cd. ef", limit=100, target=4) == ["ab,", "cd.", "ef"], "short runs, not the model's longest"
    assert pieces("aa bb cc dd, e", limit=100, target=5) == ["aa bb", "cc", "dd, e"], "a long clause between words"
    assert pieces("abcdefgh ij", limit=100, target=5) == ["abcdefgh", "ij"], "a word is not cut below the model's limit"
    runs = pieces("x" * 12 + ", y", limit=5)
    assert runs == ["xxxxx", "xxxxx", "xx, y"] and all(len(r) <= 5 for r in runs)


async def test_espeak_speaks_mandarin():
    tts = EspeakTTS(voice="cmn")
    audio = b"".join([chunk async for chunk in tts.stream("中国的首都是北京。", "zh")])
    await tts.close()
    assert len(audio) / 2 / tts.sample_rate > 1.0
