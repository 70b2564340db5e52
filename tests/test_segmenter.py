"""The webrtcvad segmenter on espeak-ng speech padded with silence and noise."""

from __future__ import annotations

import numpy as np
import pytest

from kit.speech import RATE, concat, noise, silence, speak, voiced_bounds
from pipeline.segmenter import Segmenter, SegmenterConfig, SpeechEnded, SpeechStarted

pytestmark = pytest.mark.fast

FRAME = 0.02


def run(samples: np.ndarray, config: SegmenterConfig | None = None, chunk: int = 320) -> list:
    seg = Segmenter(config)
    data = samples.astype(np.int16).tobytes()
    events = []
    for i in range(0, len(data), chunk * 2):
        events += seg.process(data[i : i + chunk * 2], i / 2 / RATE)
    return events


SENTENCES = ["What is the capital of France?", "Tell me a joke about computers.", "How far away is the moon?"]


@pytest.mark.parametrize("pad", ["silence", "noise"])
def test_one_utterance_per_sentence_with_accurate_bounds(pad):
    config = SegmenterConfig(silence_ms=500, prefix_ms=300)
    gap = (lambda s: silence(s)) if pad == "silence" else (lambda s: noise(s, rms=40, seed=int(s * 100)))
    parts, truth, t = [gap(1.0)], [], 1.0
    for text in SENTENCES:
        speech = speak(text)
        first, last = voiced_bounds(speech)
        truth.append((t + first, t + last))
        parts += [speech, gap(1.2)]
        t += len(speech) / RATE + 1.2
    events = run(concat(*parts), config)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends) == len(SENTENCES)
    for (first, last), start, end in zip(truth, starts, ends, strict=True):
        # onset: at most 60 ms before the first voiced audio, never after it by more than a frame
        assert start.t_start <= first + FRAME
        assert first - start.t_start <= 0.06
        # the utterance's audio begins with the prefix padding, so the first syllable is whole
        assert end.pcm_start <= first - 0.25
        # end: declared the configured silence after the last voiced frame (within a frame) ...
        assert abs(end.t_detected - end.t_end - 0.5) <= FRAME + 1e-9
        # ... and the last voiced frame is the end of the speech (webrtcvad hangover aside)
        assert -FRAME <= end.t_end - last <= 0.15
        assert len(end.pcm) / 2 / RATE == pytest.approx(end.t_detected - end.pcm_start, abs=1e-6)
        assert not end.truncated


def test_pauses_shorter_than_the_silence_setting_do_not_split():
    a, b = speak("Tell me something."), speak("Anything you like.")
    events = run(concat(silence(0.5), a, silence(0.3), b, silence(1.5)), SegmenterConfig(silence_ms=800))
    assert sum(isinstance(e, SpeechEnded) for e in events) == 1
    # the same pause with a shorter silence setting does split
    events = run(concat(silence(0.5), a, silence(0.6), b, silence(1.5)), SegmenterConfig(silence_ms=300))
    assert sum(isinstance(e, SpeechEnded) for e in events) == 2


def test_a_cough_shorter_than_the_start_threshold_is_ignored():
    rng = np.random.default_rng(1)
    burst = (rng.normal(0, 6000, int(0.06 * RATE)) * np.hanning(int(0.06 * RATE))).astype(np.int16)
    speechlike = speak("Hello")[: int(0.06 * RATE)]
    for short in (burst, speechlike):
        assert run(concat(silence(0.5), short, silence(1.0)), SegmenterConfig(start_ms=100)) == []


def test_frame_sizes_and_chunking_do_not_change_the_result():
    signal = concat(silence(0.6), speak("Testing one two three."), silence(1.0))
    reference = None
    for frame_ms in (10, 20, 30):
        for chunk in (160, 320, 1000):
            ends = [e for e in run(signal, SegmenterConfig(frame_ms=frame_ms), chunk) if isinstance(e, SpeechEnded)]
            assert len(ends) == 1
            if reference is None:
                reference = ends[0]
            assert abs(ends[0].t_start - reference.t_start) <= 0.03
            assert abs(ends[0].t_end - reference.t_end) <= 0.06


def test_long_speech_is_cut_at_the_cap():
    long = concat(*[speak("This sentence goes on and on without a real pause")] * 3)
    events = run(concat(silence(0.3), long, silence(1.0)), SegmenterConfig(max_utterance_s=2.0))
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert ends[0].truncated and len(ends[0].pcm) / 2 / RATE <= 2.0 + 1e-6
    assert len(ends) >= 2


def test_bad_frame_size_is_refused():
    with pytest.raises(ValueError):
        Segmenter(SegmenterConfig(frame_ms=25))
