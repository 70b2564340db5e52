"""The echo pipeline: a mic test. Each utterance is played back once it ends."""

from __future__ import annotations

from collections.abc import Hashable

from pipeline.events import SpeechStartedEvent, SpeechStoppedEvent, State
from pipeline.ports import AudioSink, EventSink
from pipeline.segmenter import RATE, Segmenter, SegmenterConfig, SpeechEnded, SpeechStarted


class EchoPipeline:
    def __init__(self, audio: AudioSink, emit: EventSink, segmenter: SegmenterConfig | None = None) -> None:
        self._audio = audio
        self._emit = emit
        self._segmenter = Segmenter(segmenter)
        self._turn = 0
        audio.add_listener(self._on_playback)
        emit(State("listening"))

    def on_audio(self, pcm: bytes, t: float) -> None:
        for event in self._segmenter.process(pcm, t):
            if isinstance(event, SpeechStarted):
                self._turn += 1
                self._emit(SpeechStartedEvent(turn=self._turn))
            elif isinstance(event, SpeechEnded):
                self._emit(SpeechStoppedEvent(turn=self._turn, duration_ms=round((event.t_end - event.t_start) * 1000)))
                self._audio.write(event.pcm, RATE, mark=("echo", self._turn))

    def on_text(self, text: str) -> None:
        """Typed text has nothing to echo in a mic test."""

    def _on_playback(self, kind: str, mark: Hashable, t: float) -> None:
        if isinstance(mark, tuple) and mark[0] == "echo":
            self._emit(State("speaking" if kind == "start" else "listening", turn=mark[1]))

    async def close(self) -> None:
        self._audio.flush()
