"""The seed design's engine stages, run the seed's way: `python -m bench.seed <spec.json>`.

For each question, in order and with nothing overlapping (as the seed did):
transcribe the utterance (0.3 s lead-in + speech + the seed's 1.5 s of trailing
silence, as its segmenter would have passed it), generate the WHOLE reply, then
synthesise the WHOLE reply in one request. The engines are the product's own,
built from the same flags as the server (`build_engines`), so the stand-in is
reached over HTTP exactly as the server reaches it and the embedded models run
with the server's settings. Conversation history is kept as the server keeps it, starting
with the same uncounted warm-up question as the server run.

Prints one JSON object: {"load_s", "engines", "turns": [{stt_ms, llm_first_token_ms,
llm_full_ms, tts_first_chunk_ms, tts_whole_ms, audio_s, transcript, reply}, ...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from kit.speech import concat, silence, speak
from pipeline.conversation import ConversationConfig
from pipeline.engines.factory import build_engines
from pipeline.history import History
from pipeline.sentences import speakable
from settings import load_settings


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    settings = load_settings(spec["flags"], env={}, dotenv_path=None)
    engines = build_engines(settings)
    started = time.monotonic()
    await engines.start()
    load_s = round(time.monotonic() - started, 2)
    config = ConversationConfig.from_settings(settings)
    history = History(config.system_prompt, config.history_turns, config.history_chars)
    turns: list[dict[str, Any]] = []
    try:
        for index, question in enumerate([*spec.get("warmup", []), *spec["questions"]]):
            pcm = concat(silence(0.3), speak(question), silence(spec.get("silence_s", 1.5))).tobytes()
            t0 = time.monotonic()
            text = (await engines.stt.transcribe(pcm, 16000)).strip()
            t1 = time.monotonic()
            reply, first_token = "", None
            async for delta in engines.llm.stream(history.messages(text)):
                if delta and first_token is None:
                    first_token = time.monotonic()
                reply += delta
            t2 = time.monotonic()
            audio, first_chunk = 0, None
            async for chunk in engines.tts.stream(speakable(reply)):
                if first_chunk is None:
                    first_chunk = time.monotonic()
                audio += len(chunk)
            t3 = time.monotonic()
            history.add_turn(text, reply.strip())
            if index < len(spec.get("warmup", [])):
                continue  # as the server run: a first turn that warms the engines up, not counted
            turns.append(
                {
                    "question": question,
                    "transcript": text,
                    "reply": reply.strip(),
                    "stt_ms": round((t1 - t0) * 1000, 1),
                    "llm_first_token_ms": round(((first_token or t2) - t1) * 1000, 1),
                    "llm_full_ms": round((t2 - t1) * 1000, 1),
                    "tts_first_chunk_ms": round(((first_chunk or t3) - t2) * 1000, 1),
                    "tts_whole_ms": round((t3 - t2) * 1000, 1),
                    "audio_s": round(audio / 2 / engines.tts.sample_rate, 2),
                }
            )
    finally:
        await engines.close()
    return {"load_s": load_s, "engines": engines.readiness(), "turns": turns}


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    result = asyncio.run(run(spec))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
