"""The embedded LLM's speed by thread count and llama.cpp's busy-polling level, idle and beside a CPU load.

    python -m bench.llm_poll

Each configuration loads the default model, answers three questions twice (the first answer is not
counted) and prints first-token and 20-token times. The load is one thread doing 10 ms of matrix work
every 20 ms: a stand-in for STT, TTS and aiortc sharing the cores. Why the product sets `poll` to 0.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import numpy as np

from pipeline.conversation import DEFAULT_SYSTEM_PROMPT
from pipeline.engines.local_llm import LocalLLM

QUESTIONS = ["Who wrote Romeo and Juliet?", "What is the boiling point of water?", "Why is the sky blue?"]
CONFIGS = [(2, 50), (2, 0), (1, 50), (1, 0)]  # (threads, poll)


def _load(stop: threading.Event) -> None:
    a = np.random.rand(300, 300).astype(np.float32)
    while not stop.is_set():
        started = time.monotonic()
        while time.monotonic() - started < 0.01:
            a @ a
        time.sleep(0.01)


async def _run(threads: int, poll: int, n: int = 6) -> str:
    llm = LocalLLM(threads=threads, temperature=0.0, poll=poll)
    await llm.start()
    first: list[float] = []
    twenty: list[float] = []
    for i in range(n):
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": QUESTIONS[i % 3]}]
        t0, t_first, count = time.monotonic(), None, 0
        async for _ in llm.stream(messages):  # type: ignore[arg-type]
            count += 1
            t_first = t_first or time.monotonic() - t0
            if count >= 20:
                break
        if i:
            first.append((t_first or 0) * 1000)
            twenty.append((time.monotonic() - t0) * 1000)
    await llm.close()
    return (
        f"threads {threads} poll {poll:>2}: first token p50 {statistics.median(first):.0f} max {max(first):.0f} ms; "
        f"20 tokens p50 {statistics.median(twenty):.0f} max {max(twenty):.0f} ms"
    )


async def main() -> None:
    for loaded in (False, True):
        stop = threading.Event()
        worker = threading.Thread(target=_load, args=(stop,), daemon=True)
        if loaded:
            worker.start()
        print(f"with a background load: {loaded}", flush=True)
        for threads, poll in CONFIGS:
            print("  " + await _run(threads, poll), flush=True)
        stop.set()


if __name__ == "__main__":
    asyncio.run(main())
