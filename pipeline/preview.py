"""While the user speaks: their words so far, shown live.

Every `every_s` of speech in an utterance, one transcription pass over the audio so far, sent as
`transcript_partial`. Nothing here is a turn: no history, no reply, no audio, no turn number.

It must not cost the turn any time, and on a small machine any work still running when the
user pauses does (the turn's own pass then shares the cores with it). So a pass is started only
when the STT engine has been idle for `every_s` (so all sessions together get at most one pass
a period: when four people spoke at once, each passing as soon as the engine was free delayed
their turns' transcriptions ~300 ms, `bench scale`), its job is needed later than any turn's
(`SLACK_S`), and a pause or the end of speech cancels it. Only engines whose passes cost nothing
but this box's idle CPU take part (`partials`): a remote API would bill every pass.

Reading the words so far into the embedded LLM's prompt cache was tried too, and dropped: it made
the 1.5B model's first token ~200 ms sooner when it had finished, but it takes as long as a first
token (~540 ms on 2 cores), so it was often still running at the pause and the turn's own STT and
LLM waited for it (`bench turns`, embedded: voice-to-voice 0.75x the old design against 0.68x).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from pipeline.engines.base import EngineError, Engines
from pipeline.engines.workers import needed_by
from pipeline.events import Event, TranscriptPartial
from pipeline.segmenter import RATE

log = logging.getLogger(__name__)

SLACK_S = 1.0  # a pass's engine work is needed this much later than a turn's


class Preview:
    """The passes over one session's utterances in progress."""

    def __init__(self, engines: Engines, emit: Callable[[Event], None], every_s: float) -> None:
        self._stt = engines.stt
        self._emit = emit
        self.every_s = every_s if getattr(engines.stt, "partials", False) else 0.0
        self._task: asyncio.Task[None] | None = None
        self._utterance = 0
        self._next_span = 0.0  # speech span of the utterance at which the next pass is due

    def feed(self, utterance: int, span: float, pcm: Callable[[], bytes], prompt: Callable[[], str], language: str = "") -> None:
        """The utterance `utterance` has `span` seconds of speech so far: start a pass if one is due.
        `pcm()` is its audio, `prompt()` the STT's context, `language` the conversation's so far."""
        if self.every_s <= 0:
            return
        if utterance != self._utterance:
            self._utterance, self._next_span = utterance, self.every_s
        if span < self._next_span or (self._task is not None and not self._task.done()):
            return
        if getattr(self._stt, "idle_s", math.inf) < self.every_s:
            return
        self._next_span = span + self.every_s
        self._task = asyncio.create_task(self._pass(pcm(), prompt(), language), name="preview")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        task = self._task
        self.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _pass(self, pcm: bytes, prompt: str, language: str) -> None:
        try:
            with needed_by(time.monotonic() + SLACK_S):
                words = (await self._stt.transcribe(pcm, RATE, prompt=prompt, language=language)).text.strip()
        except EngineError as exc:  # only a preview: the turn's own pass reports what matters
            log.debug("preview pass failed: %s", exc.message)
            return
        if words:
            self._emit(TranscriptPartial(words))
