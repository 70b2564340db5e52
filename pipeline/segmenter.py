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
    start_ms: int = 100  # voiced audio needed before speech counts as started
    silence_ms: int = 500  # trailing silence that ends an utterance
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
class SpeechEnded:
    pcm: bytes  # prefix padding + speech + trailing silence, 16 kHz int16
    t_start: float  # onset, as in SpeechStarted
    t_end: float  # end of the last voiced frame
    t_detected: float  # when the silence (or the length cap) ended it
    pcm_start: float  # media time of pcm[0]
    truncated: bool = False  # cut by max_utterance_s rather than by silence


SegmentEvent = SpeechStarted | SpeechEnded


class Segmenter:
    """Feeds webrtcvad and turns its per-frame verdicts into utterances.

    Speech starts once `start_ms` of voiced frames fall within a window a half
    longer than that (webrtcvad flickers inside words); it ends after
    `silence_ms` of consecutive unvoiced frames, so shorter pauses do not
    split a sentence.
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
        self._prefix_frames = max(0, round(c.prefix_ms / c.frame_ms))
        self._max_frames = max(1, round(c.max_utterance_s / self._frame_s))
        self._min_rms = 32768 * 10 ** (c.min_level_dbfs / 20)
        # Ring of recent (pcm, t, voiced) frames: prefix padding and the frames of the start window.
        self._history = deque[tuple[bytes, float, bool]](maxlen=self._prefix_frames + self._window.maxlen)
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

    def reset(self) -> None:
        """Forget any utterance in progress (e.g. the session's input was muted)."""
        self._window.clear()
        self._history.clear()
        self._pending = b""
        self._pending_t = None
        self._speaking = False
        self._utterance = []
        self._unvoiced_run = 0

    def process(self, pcm: bytes, t: float) -> list[SegmentEvent]:
        """Feed any amount of audio starting at media time `t`; returns the events it completes."""
        if self._pending_t is None or not self._pending:
            self._pending_t = t
        self._pending += pcm
        events: list[SegmentEvent] = []
        while len(self._pending) >= self._frame_bytes:
            frame, self._pending = self._pending[: self._frame_bytes], self._pending[self._frame_bytes :]
            frame_t = self._pending_t
            self._pending_t = frame_t + self._frame_s
            event = self._frame(frame, frame_t)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes, t: float) -> SegmentEvent | None:
        samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
        voiced = float(np.sqrt(np.mean(samples * samples))) >= self._min_rms and self._vad.is_speech(frame, RATE)
        end_t = t + self._frame_s
        if not self._speaking:
            self._history.append((frame, t, voiced))
            self._window.append(voiced)
            if sum(self._window) < self._start_frames:
                return None
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
            self._history.clear()
            self._window.clear()
            return SpeechStarted(t_start=self._onset, t_detected=end_t)

        self._utterance.append(frame)
        if voiced:
            self._last_voiced_end = end_t
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1
        ended_by_silence = self._unvoiced_run >= self._silence_frames
        if not ended_by_silence and len(self._utterance) < self._max_frames:
            return None
        self._speaking = False
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
