"""Builds what each session runs, from the settings and the shared engines."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.echo import EchoPipeline
from pipeline.engines.base import Engines
from pipeline.ports import AudioSink, EventSink, Pipeline
from pipeline.segmenter import SegmenterConfig
from settings import Settings


def segmenter_config(settings: Settings) -> SegmenterConfig:
    return SegmenterConfig(
        aggressiveness=settings.vad_aggressiveness,
        frame_ms=settings.vad_frame_ms,
        start_ms=settings.vad_start_ms,
        silence_ms=settings.vad_silence_ms,
        prefix_ms=settings.vad_prefix_ms,
        max_utterance_s=settings.vad_max_utterance_s,
        min_level_dbfs=settings.vad_min_level_dbfs,
    )


def pipeline_factory(settings: Settings, engines: Engines | None) -> Callable[[AudioSink, EventSink], Pipeline]:
    seg = segmenter_config(settings)
    if settings.pipeline == "echo":
        return lambda audio, emit: EchoPipeline(audio, emit, seg)
    if engines is None:
        raise ValueError("the assistant pipeline needs engines")
    from pipeline.conversation import Conversation, ConversationConfig

    config = ConversationConfig.from_settings(settings)
    return lambda audio, emit: Conversation(audio, emit, engines, seg, config)
