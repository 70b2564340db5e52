"""Builds what each session runs, from the settings and the shared engines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import replace

from pipeline.echo import ECHO_SILENCE_MS, EchoPipeline
from pipeline.engines.base import Engines, Message, ToolSpec
from pipeline.ports import AudioOutput, EventSink, Pipeline
from pipeline.segmenter import SegmenterConfig
from pipeline.tools import Tool
from settings import Settings


def segmenter_config(settings: Settings) -> SegmenterConfig:
    assistant = settings.pipeline == "assistant"
    return SegmenterConfig(
        aggressiveness=settings.vad_aggressiveness,
        frame_ms=settings.vad_frame_ms,
        start_ms=settings.vad_start_ms,
        silence_ms=settings.vad_silence_ms if assistant else min(settings.vad_silence_ms, ECHO_SILENCE_MS),
        pause_ms=settings.turn_pause_ms if assistant else 0,
        hint_ms=settings.interrupt_pause_ms if assistant else 0,
        prefix_ms=settings.vad_prefix_ms,
        max_utterance_s=settings.vad_max_utterance_s,
        min_level_dbfs=settings.vad_min_level_dbfs,
    )


def pipeline_factory(
    settings: Settings, engines: Engines | None, extra_tools: Sequence[Tool] = ()
) -> Callable[[AudioOutput, EventSink], Pipeline]:
    seg = segmenter_config(settings)
    if settings.pipeline == "echo":
        return lambda audio, emit: EchoPipeline(audio, emit, seg)
    if engines is None:
        raise ValueError("the assistant pipeline needs engines")
    from pipeline.conversation import Conversation, ConversationConfig

    config = ConversationConfig.from_settings(settings)
    config = replace(config, tools=replace(config.tools, extra=extra_tools))
    return lambda audio, emit: Conversation(audio, emit, engines, seg, config)


log = logging.getLogger("pipeline.wiring")


def warm_up_messages(settings: Settings) -> list[Message]:
    """What warm-up asks the LLM: the conversation's system prompt and a greeting."""
    from pipeline.conversation import ConversationConfig

    return [{"role": "system", "content": ConversationConfig.from_settings(settings).system_prompt}, {"role": "user", "content": "Hello."}]


def offered_tools(settings: Settings, extra: Sequence[Tool] = ()) -> list[ToolSpec] | None:
    """The tools every conversation's prompt carries: part of its cached prefix, so warmed too
    (not those the router calls: TOOL_ROUTER)."""
    from pipeline.engines.tool_router import unrouted
    from pipeline.tools import Toolbox, built_in

    specs = Toolbox([*built_in(settings.tool_list), *extra]).specs or None
    return unrouted(specs) if settings.routes_tools else specs


async def warm_up(engines: Engines, settings: Settings, extra_tools: Sequence[Tool] = ()) -> None:
    """One tiny request per engine at start, so no user's first turn pays for cold paths.

    For the LLM it also matters beyond the first turn: every conversation opens with the
    same system prompt, and a prompt cache (llama.cpp's, a provider's) keeps that prefix.
    """
    from pipeline.engines.base import EngineError

    started = time.monotonic()
    messages = warm_up_messages(settings)
    tools = offered_tools(settings, extra_tools)

    async def first_token() -> None:
        async with aclosing(engines.llm.stream(messages, tools) if tools else engines.llm.stream(messages)) as deltas:
            async for delta in deltas:
                if delta:
                    break  # the prompt is processed before the first token: that is all we want

    try:
        await engines.stt.transcribe(b"\x00\x00" * 8000, 16000)
        warm = getattr(engines.llm, "warm", None)  # the embedded LLM warms every slot's cache at once
        await (warm(messages, tools) if warm is not None else first_token())
        async with aclosing(engines.tts.stream("Hello.")) as chunks:
            async for _ in chunks:
                break
        if engines.turn is not None:
            await engines.turn.complete(b"\x00\x00" * 16000, 16000)
    except EngineError as exc:  # a remote engine may be down now and fine later: report, do not fail
        log.warning("warm-up: %s engine: %s", exc.stage, exc.message)
        return
    log.info("engines warmed up in %.1f s", time.monotonic() - started)
