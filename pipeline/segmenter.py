"""Speech segmentation with webrtcvad: 16 kHz int16 frames in, utterance events out.

Pure and synchronous so it can be tested frame by frame. Times are media times
in seconds (whatever clock the caller's frame timestamps use).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

RATE = 16000
BYTES_PER_SAMPLE = 2


@dataclass(frozen=True)
class SegmenterConfig:
    aggressiveness: int = 3
    frame_ms: int = 20  # 10, 20 or 30: what webrtcvad accepts
    start_ms: int = 100  # voiced audio needed before speech counts as started (or resumed after a pause)
    silence_ms: int = 1200  # trailing silence that ends an utterance
    pause_ms: int = 0  # silence that reports a pause inside an utterance (0: never)
    hint_ms: int = 0  # voiced audio that reports a SpeechHint before speech starts or resumes (0: never)
    prefix_ms: int = 300  # audio kept from before the onset
    max_utterance_s: float = 30.0
    # Frames quieter than this are never speech. webrtcvad alone keeps saying
    # "speech" for a few frames after a sound stops (its hangover), which would
    # let a short click or cough pass the start threshold.
    min_level_dbfs: float = -50.0


@dataclass(frozen=True)
class SpeechStarted:
    t_start: float  # onset: start of the first voiced frame
    t_detected: float  # when enough voiced audio had been seen to say so


@dataclass(frozen=True)
class SpeechHint:
    """`hint_ms` of voiced audio: speech may be starting (or resuming), not yet for sure."""

    t_detected: float


@dataclass(frozen=True)
class SpeechPaused:
    """`pause_ms` of silence inside an utterance: it may be over, or the speaker is thinking."""

    pcm: bytes  # the utterance so far, as SpeechEnded would carry it
    t_start: float
    t_end: float  # end of the last voiced frame
    t_detected: float
    pcm_start: float


@dataclass(frozen=True)
class SpeechResumed:
    """Speech again after a SpeechPaused: the same utterance goes on."""

    t_resumed: float  # first voiced frame after the pause
    t_detected: float


@dataclass(frozen=True)
class SpeechEnded:
    pcm: bytes  # prefix padding + speech + trailing silence, 16 kHz int16
    t_start: float  # onset, as in SpeechStarted
    t_end: float  # end of the last voiced frame
    t_detected: float  # when the silence (or the length cap) ended it
    pcm_start: float  # media time of pcm[0]
    truncated: bool = False  # cut by max_utterance_s rather than by silence


SegmentEvent = SpeechHint | SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded


class Segmenter:
    """Feeds webrtcvad and turns its per-frame verdicts into utterances.

    Speech starts once `start_ms` of voiced frames fall within a window a half
    longer than that (webrtcvad flickers inside words); it ends after
    `silence_ms` of consecutive unvoiced frames, so shorter pauses do not
    split a sentence. With `pause_ms`, a shorter silence is reported as a pause
    (once), and speech that passes the start rule again after it as resumed;
    a voiced blip that does not pass that rule does not restart the silence.

    `floor_dbfs` (per call) raises the level gate for that audio: while the
    assistant is talking, its own voice leaking back into the microphone must
    not count as speech.
    """

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = c = config or SegmenterConfig()
        if c.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        self._vad = webrtcvad.Vad(c.aggressiveness)
        self._frame_bytes = RATE * c.frame_ms // 1000 * BYTES_PER_SAMPLE
        self._frame_s = c.frame_ms / 1000
        self._start_frames = max(1, round(c.start_ms / c.frame_ms))
        self._window = deque[bool](maxlen=max(self._start_frames, round(self._start_frames * 1.5)))
        self._silence_frames = max(1, round(c.silence_ms / c.frame_ms))
        self._pause_frames = round(c.pause_ms / c.frame_ms) if c.pause_ms > 0 else 0
        self._hint_frames = max(1, round(c.hint_ms / c.frame_ms)) if 0 < c.hint_ms < c.start_ms else 0
        self._hinted = False
        self._paused = False
        self._prefix_frames = max(0, round(c.prefix_ms / c.frame_ms))
        self._max_frames = max(1, round(c.max_utterance_s / self._frame_s))
        self._min_rms = 32768 * 10 ** (c.min_level_dbfs / 20)
        # Ring of recent (pcm, t, voiced) frames: prefix padding and the frames of the start window.
        self._history = deque[tuple[bytes, float, bool]](maxlen=self._prefix_frames + (self._window.maxlen or 0))
        self._pending = b""
        self._pending_t: float | None = None
        self._speaking = False
        self._utterance: list[bytes] = []
        self._pcm_start = 0.0
        self._onset = 0.0
        self._last_voiced_end = 0.0
        self._unvoiced_run = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    def _hint(self, t: float) -> SpeechHint | None:
        voiced = sum(self._window)
        if not voiced:
            self._hinted = False  # the next voiced run may hint again
        elif self._hint_frames and not self._hinted and voiced >= self._hint_frames:
            self._hinted = True
            return SpeechHint(t_detected=t)
        return None

    def utterance_pcm(self) -> bytes:
        """The utterance in progress as far as it was fed, silence after a pause included (b"" if none)."""
        return b"".join(self._utterance) if self._speaking else b""

    def speech_span(self) -> float:
        """Onset to the end of the last voiced frame of the utterance in progress (0 if none)."""
        return self._last_voiced_end - self._onset if self._speaking else 0.0

    @property
    def voiced_until(self) -> float | None:
        """End of the last voiced frame of the utterance in progress (None if none)."""
        return self._last_voiced_end if self._speaking else None

    def reset(self) -> None:
        """Forget any utterance in progress (e.g. the session's input was muted)."""
        self._window.clear()
        self._history.clear()
        self._pending = b""
        self._pending_t = None
        self._speaking = False
        self._paused = False
        self._utterance = []
        self._unvoiced_run = 0

    def process(self, pcm: bytes, t: float, floor_dbfs: float | None = None) -> list[SegmentEvent]:
        """Feed any amount of audio starting at media time `t`; returns the events it completes."""
        if self._pending_t is None or not self._pending:
            self._pending_t = t
        self._pending += pcm
        events: list[SegmentEvent] = []
        while len(self._pending) >= self._frame_bytes:
            frame, self._pending = self._pending[: self._frame_bytes], self._pending[self._frame_bytes :]
            frame_t = self._pending_t
            self._pending_t = frame_t + self._frame_s
            event = self._frame(frame, frame_t, floor_dbfs)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes, t: float, floor_dbfs: float | None) -> SegmentEvent | None:
        samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
        min_rms = self._min_rms if floor_dbfs is None else max(self._min_rms, 32768 * 10 ** (floor_dbfs / 20))
        voiced = float(np.sqrt(np.mean(samples * samples))) >= min_rms and self._vad.is_speech(frame, RATE)
        end_t = t + self._frame_s
        if not self._speaking:
            self._history.append((frame, t, voiced))
            self._window.append(voiced)
            if sum(self._window) < self._start_frames:
                return self._hint(end_t)
            # The onset is the first voiced frame of the window that triggered.
            recent = list(self._history)[-len(self._window) :]
            onset_index = len(self._history) - len(recent) + next(i for i, (_, _, v) in enumerate(recent) if v)
            first = max(0, onset_index - self._prefix_frames)
            kept = list(self._history)[first:]
            self._utterance = [f for f, _, _ in kept]
            self._pcm_start = kept[0][1]
            self._onset = self._history[onset_index][1]
            self._last_voiced_end = end_t
            self._unvoiced_run = 0
            self._speaking = True
            self._hinted = False
            self._history.clear()
            self._window.clear()
            return SpeechStarted(t_start=self._onset, t_detected=end_t)

        self._utterance.append(frame)
        if self._paused:
            # After a pause only speech that passes the start rule counts: a click does not
            # undo the silence, which is what decides the turn.
            self._window.append(voiced)
            if sum(self._window) >= self._start_frames:
                self._paused = False
                self._hinted = False
                self._window.clear()
                self._last_voiced_end = end_t
                self._unvoiced_run = 0
                resumed = end_t - self._frame_s * (self._start_frames - 1)
                return SpeechResumed(t_resumed=resumed, t_detected=end_t)
            self._unvoiced_run += 1
            hint = self._hint(end_t)
            if hint is not None:
                return hint
        elif voiced:
            self._last_voiced_end = end_t
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1
        ended_by_silence = self._unvoiced_run >= self._silence_frames
        if not ended_by_silence and len(self._utterance) < self._max_frames:
            if self._pause_frames and not self._paused and self._unvoiced_run == self._pause_frames:
                self._paused = True
                self._window.clear()
                return SpeechPaused(
                    pcm=b"".join(self._utterance),
                    t_start=self._onset,
                    t_end=self._last_voiced_end,
                    t_detected=end_t,
                    pcm_start=self._pcm_start,
                )
            return None
        self._speaking = False
        self._paused = False
        self._window.clear()
        pcm = b"".join(self._utterance)
        self._utterance = []
        return SpeechEnded(
            pcm=pcm,
            t_start=self._onset,
            t_end=self._last_voiced_end if ended_by_silence else end_t,
            t_detected=end_t,
            pcm_start=self._pcm_start,
            truncated=not ended_by_silence,
        )
