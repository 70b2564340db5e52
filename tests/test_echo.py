"""The mic test in virtual time: each utterance is played back once it ends, at a short silence."""

from __future__ import annotations

from kit.speech import concat, silence, speak, voiced_bounds
from pipeline.echo import EchoPipeline
from pipeline.wiring import segmenter_config
from settings import load_settings
from tests.fakes import FRAME, RATE, MemoryAudio


async def test_echo_plays_back_at_half_a_second_of_silence_not_the_assistants_long_one():
    settings = load_settings([], env={"PIPELINE": "echo"}, dotenv_path=None)
    assert settings.vad_silence_ms > 500
    audio, events = MemoryAudio(), []
    echo = EchoPipeline(audio, events.append, segmenter_config(settings))
    speech = speak("Testing, one two three.")
    samples = concat(silence(0.2), speech, silence(3.0))
    speech_end = 0.2 + voiced_bounds(speech)[1]
    for i in range(0, len(samples) - FRAME + 1, FRAME):
        echo.on_audio(samples[i : i + FRAME].tobytes(), i / RATE)
        audio.advance()
    first = audio.audible()[0]
    assert 0.45 <= first - speech_end < 0.7, "played back after the echo's own short silence"
    assert [e.type for e in events] == ["state", "speech_started", "speech_stopped", "state", "state"]
    await echo.close()
