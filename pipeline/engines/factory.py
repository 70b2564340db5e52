"""Settings -> the three engines. Only construction here: models load in `await engines.start()`.

Engine modules are imported only when chosen, so a remote-only setup never
imports the local model runtimes (and vice versa).
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.engines.base import LLM, STT, TTS, Engines, TurnDetector
from settings import Settings, SettingsError


def build_engines(settings: Settings) -> Engines:
    return Engines(stt=build_stt(settings), llm=build_llm(settings), tts=build_tts(settings), turn=build_turn_detector(settings))


def build_turn_detector(settings: Settings) -> TurnDetector | None:
    if settings.turn_detector == "none":
        return None
    if settings.turn_detector == "smart-turn":
        from pipeline.engines.smart_turn import SmartTurn

        return SmartTurn.from_settings(settings)
    raise SettingsError(f"TURN_DETECTOR must be smart-turn or none; got {settings.turn_detector!r}")


def build_stt(settings: Settings) -> STT:
    if settings.stt_engine == "openai":
        from pipeline.engines.openai_stt import OpenAISTT

        return OpenAISTT.from_settings(settings)
    if settings.stt_engine == "local":
        from pipeline.engines.local_stt import LocalSTT

        if not settings.stt_model and "en" in settings.language_list and len(settings.language_list) > 1:
            from pipeline.engines.english_first import EnglishFirst

            return EnglishFirst.from_settings(settings)
        return LocalSTT.from_settings(settings)
    raise SettingsError(f"STT_ENGINE must be local or openai; got {settings.stt_engine!r}")


def build_llm(settings: Settings) -> LLM:
    llm: LLM
    if settings.llm_engine == "openai":
        from pipeline.engines.openai_llm import OpenAILLM

        llm = OpenAILLM.from_settings(settings)
    elif settings.llm_engine == "local":
        from pipeline.engines.local_llm import LocalLLM

        llm = LocalLLM.from_settings(settings)
    else:
        raise SettingsError(f"LLM_ENGINE must be local or openai; got {settings.llm_engine!r}")
    if settings.routes_tools:
        from pipeline.engines.tool_router import RoutedLLM

        return RoutedLLM(llm)
    return llm


def build_tts(settings: Settings) -> TTS:
    first = settings.language_list[0]
    own = first == "en" or settings.tts_voice or settings.tts_engine == "openai"  # the default voices are English
    default = build_voice(settings) if own else voice_for(settings, first) or build_voice(settings)
    others = {code: voice for code in settings.language_list[1:] if (voice := voice_for(settings, code)) is not None}
    if not others:
        return default
    from pipeline.engines.voices import Voices

    return Voices(default, others)


# The embedded engine's own voice for a language TTS_VOICES names none for (others: espeak-ng's).
LOCAL_VOICES = {"zh": "kokoro", "pt": "kokoro"}


def voice_for(settings: Settings, language: str) -> TTS | None:
    """A voice of its own for `language`; None where the first language's speaks it too (openai's are multilingual)."""
    voice = settings.voice_map.get(language, "")
    if settings.tts_engine == "openai":
        return build_voice(replace(settings, tts_voice=voice)) if voice else None
    if settings.tts_engine == "local" and (voice.endswith(".onnx") or (language == "en" and not voice)):
        return build_voice(replace(settings, tts_voice=voice))  # a piper voice; piper's packaged one is English
    from pipeline.engines import kokoro_tts

    kokoro = kokoro_tts.voice_name(voice or (LOCAL_VOICES.get(language, "") if settings.tts_engine == "local" else ""))
    if kokoro is not None:
        return kokoro_tts.KokoroTTS.from_settings(settings, voice=kokoro, language=language)
    from pipeline.engines.local_tts import ESPEAK_VOICES, EspeakTTS

    return EspeakTTS.from_settings(replace(settings, tts_voice=voice or ESPEAK_VOICES.get(language, language)))


def build_voice(settings: Settings) -> TTS:
    """The TTS_ENGINE's voice for TTS_VOICE."""
    if settings.tts_engine == "openai":
        from pipeline.engines.openai_tts import OpenAITTS

        return OpenAITTS.from_settings(settings)
    if settings.tts_engine == "local":
        from pipeline.engines.local_tts import LocalTTS

        return LocalTTS.from_settings(settings)
    if settings.tts_engine == "espeak":
        from pipeline.engines.local_tts import EspeakTTS

        return EspeakTTS.from_settings(settings)
    raise SettingsError(f"TTS_ENGINE must be local, espeak or openai; got {settings.tts_engine!r}")
