"""Driving `/v1/realtime` with the official `openai` SDK's WebSocket client, for tests and the bench.

The SDK is the client: this only streams a clip the way a microphone would (24 kHz PCM, in
real-time chunks) and keeps every server event with the monotonic time it arrived.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openai import AsyncOpenAI

RATE = 24000  # audio/pcm


@dataclass
class Received:
    events: list[tuple[float, Any]] = field(default_factory=list)  # (monotonic arrival, SDK event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str, after: float = 0.0) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.events if e.type == kind and t >= after]

    async def wait(
        self, kind: str, after: float = 0.0, timeout: float = 15.0, where: Callable[[Any], bool] = lambda e: True
    ) -> tuple[float, Any]:
        async def first() -> tuple[float, Any]:
            while True:
                found = [(t, e) for t, e in self.of(kind, after) if where(e)]
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(first(), timeout)

    def audio(self, response_id: str | None = None) -> np.ndarray:
        """The int16 samples of the audio deltas received (of one response)."""
        chunks = [base64.b64decode(e.delta) for _, e in self.of("response.output_audio.delta") if response_id in (None, e.response_id)]
        return np.frombuffer(b"".join(chunks), dtype=np.int16)


@asynccontextmanager
async def realtime(url: str, token: str = "no-key") -> AsyncIterator[tuple[Any, Received]]:
    """A connection to the server at `url` (http://host:port) and what it receives, read in the background."""
    client = AsyncOpenAI(api_key=token, base_url=f"{url}/v1", websocket_base_url=f"{url.replace('http', 'ws', 1)}/v1")
    received = Received()
    async with client.realtime.connect(model="voice-assistant") as connection:

        async def read() -> None:
            async for event in connection:
                received.events.append((time.monotonic(), event))
                received._changed.set()

        reader = asyncio.create_task(read())
        try:
            yield connection, received
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def stream(connection: Any, pcm: np.ndarray, chunk_ms: int = 40) -> float:
    """Send 24 kHz int16 `pcm` as a microphone would, a chunk every `chunk_ms`; returns when the last was sent."""
    step = RATE * chunk_ms // 1000
    start = time.monotonic()
    for i, at in enumerate(range(0, len(pcm), step)):
        delay = start + i * chunk_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm[at : at + step].astype("<i2").tobytes()).decode())
    return time.monotonic()
