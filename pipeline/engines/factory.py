"""Settings -> the three engines. Only construction here: models load in `await engines.start()`.

Engine modules are imported only when chosen, so a remote-only setup never
imports the local model runtimes (and vice versa).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.engines.base import LLM, STT, TTS, Engines, TurnDetector
from settings import Settings, SettingsError

if TYPE_CHECKING:
    from pipeline.engines.workers import Scheduler


def build_engines(settings: Settings) -> Engines:
    from pipeline.engines.workers import schedulers

    scheduler = schedulers(settings)  # each embedded engine's queue: urgent first (or the old FIFO)
    return Engines(
        stt=build_stt(settings, scheduler),
        llm=build_llm(settings, scheduler),
        tts=build_tts(settings, scheduler),
        turn=build_turn_detector(settings, scheduler),
    )


Schedulers = Callable[[str], "Scheduler"]


def build_turn_detector(settings: Settings, scheduler: Schedulers | None = None) -> TurnDetector | None:
    if settings.turn_detector == "none":
        return None
    if settings.turn_detector == "smart-turn":
        from pipeline.engines.smart_turn import SmartTurn

        return SmartTurn.from_settings(settings, scheduler("turn") if scheduler else None)
    raise SettingsError(f"TURN_DETECTOR must be smart-turn or none; got {settings.turn_detector!r}")


def build_stt(settings: Settings, scheduler: Schedulers | None = None) -> STT:
    if settings.stt_engine == "openai":
        from pipeline.engines.openai_stt import OpenAISTT

        return OpenAISTT.from_settings(settings)
    if settings.stt_engine == "local":
        from pipeline.engines.local_stt import LocalSTT

        return LocalSTT.from_settings(settings, scheduler("stt") if scheduler else None)
    raise SettingsError(f"STT_ENGINE must be local or openai; got {settings.stt_engine!r}")


def build_llm(settings: Settings, scheduler: Schedulers | None = None) -> LLM:
    if settings.llm_engine == "openai":
        from pipeline.engines.openai_llm import OpenAILLM

        return OpenAILLM.from_settings(settings)
    if settings.llm_engine == "local":
        from pipeline.engines.local_llm import LocalLLM

        return LocalLLM.from_settings(settings, scheduler("llm") if scheduler else None)
    raise SettingsError(f"LLM_ENGINE must be local or openai; got {settings.llm_engine!r}")


def build_tts(settings: Settings, scheduler: Schedulers | None = None) -> TTS:
    if settings.tts_engine == "openai":
        from pipeline.engines.openai_tts import OpenAITTS

        return OpenAITTS.from_settings(settings)
    if settings.tts_engine == "local":
        from pipeline.engines.local_tts import LocalTTS

        return LocalTTS.from_settings(settings, scheduler("tts") if scheduler else None)
    if settings.tts_engine == "espeak":
        from pipeline.engines.local_tts import EspeakTTS

        return EspeakTTS.from_settings(settings, scheduler("tts") if scheduler else None)
    raise SettingsError(f"TTS_ENGINE must be local, espeak or openai; got {settings.tts_engine!r}")
