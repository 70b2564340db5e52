"""The echo pipeline: a mic test. Each utterance is played back once it ends."""

from __future__ import annotations

from pipeline.events import SpeechStartedEvent, SpeechStoppedEvent, State, StateName
from pipeline.ports import AudioOutput, EventSink, Playback, PlaybackKind
from pipeline.segmenter import RATE, Segmenter, SegmenterConfig, SpeechEnded, SpeechStarted

ECHO_LEAD_S = 0.05
# A mic test has no thinking pauses to wait through: it plays back at the silence a sentence ends with.
ECHO_SILENCE_MS = 500


class EchoPipeline:
    def __init__(self, audio: AudioOutput, emit: EventSink, segmenter: SegmenterConfig | None = None) -> None:
        self._audio = audio
        self._emit = emit
        self._segmenter = Segmenter(segmenter)
        self._turn = 0
        audio.add_listener(self._on_playback)
        emit(State(StateName.LISTENING))

    def on_audio(self, pcm: bytes, t: float) -> None:
        for event in self._segmenter.process(pcm, t):
            if isinstance(event, SpeechStarted):
                self._turn += 1
                self._emit(SpeechStartedEvent(turn=self._turn))
            elif isinstance(event, SpeechEnded):
                self._emit(SpeechStoppedEvent(turn=self._turn, duration_ms=round((event.t_end - event.t_start) * 1000)))
                # Play back from just before the onset: the prefix padding is there for
                # STT's sake, and as playback it would only be silence before the echo.
                skip = max(0, int((event.t_start - event.pcm_start - ECHO_LEAD_S) * RATE)) * 2
                self._audio.write(event.pcm[skip:], RATE, mark=("echo", self._turn))

    def on_text(self, text: str) -> None:
        """Typed text has nothing to echo in a mic test."""

    def on_timezone(self, name: str) -> None:
        """A mic test has no clock."""

    def on_commit(self, pcm: bytes) -> None:
        self._turn += 1
        self._audio.write(pcm, RATE, mark=("echo", self._turn))

    def on_cancel(self) -> None:
        self._audio.clear()

    def on_truncate(self, turn: int, played_s: float) -> bool:
        return True  # a mic test keeps no history

    def on_instructions(self, text: str) -> None:
        """A mic test follows none."""

    def on_voice(self, name: str) -> None:
        """A mic test plays back the user's own voice."""

    def _on_playback(self, event: Playback) -> None:
        mark = event.mark
        if isinstance(mark, tuple) and mark[0] == "echo":
            self._emit(State(StateName.SPEAKING if event.kind == PlaybackKind.START else StateName.LISTENING, turn=mark[1]))

    async def close(self) -> None:
        self._audio.clear()
