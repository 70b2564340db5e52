"""Settings: precedence, validation, secrets kept out of logs, and the README table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.settings_table import render
from settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_cli_beats_environment_beats_dotenv_beats_default(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9001\nPIPELINE=echo\nVAD_SILENCE_MS=700\n")
    import os

    saved = dict(os.environ)
    try:
        os.environ["PORT"] = "9002"
        os.environ.pop("PIPELINE", None)
        s = load_settings(["--vad-silence-ms", "800"], dotenv_path=str(dotenv))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (s.port, s.pipeline, s.vad_silence_ms, s.host) == (9002, "echo", 800, "127.0.0.1")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PIPELINE": "karaoke"}, "PIPELINE"),
        ({"BARGE_IN": "maybe"}, "BARGE_IN"),
        ({"VAD_FRAME_MS": "25"}, "VAD_FRAME_MS"),
        ({"ICE_SERVERS": "stun:example.org"}, "ICE_SERVERS"),
        ({"ICE_SERVERS": '[{"url": "stun:x"}]'}, "ICE_SERVERS"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"WORKERS": "many"}, "WORKERS"),
        ({"INBOUND_BUFFER": "netEQ"}, "INBOUND_BUFFER"),
        ({"INBOUND_DELAY_MIN_MS": "300", "INBOUND_DELAY_MAX_MS": "200"}, "INBOUND_DELAY_MIN_MS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        load_settings([], env=env)


def test_workers_auto_is_one_per_core():
    assert load_settings([], env={}).worker_count == 1
    assert load_settings(["--workers", "auto"], env={}).worker_count == (os.cpu_count() or 1)
    assert load_settings([], env={"WORKERS": "3"}).worker_count == 3


def test_booleans_and_lists():
    s = load_settings([], env={"BARGE_IN": "off", "ICE_HOSTS": "127.0.0.1, ::1", "ICE_SERVERS": '[{"urls": "stun:s:3478"}]'})
    assert s.barge_in is False and s.ice_host_list == ["127.0.0.1", "::1"] and s.ice_server_list == [{"urls": "stun:s:3478"}]


def test_secrets_are_never_shown():
    s = load_settings([], env={"LLM_API_KEY": "sk-abc123", "VOICE_TOKEN": "tok-xyz"})
    shown = str(s.public())
    assert "sk-abc123" not in shown and "tok-xyz" not in shown and s.public()["LLM_API_KEY"] == "set"


def startup_log(*args: str) -> tuple[str, int]:
    """What an echo server prints from start until it serves, then through a SIGTERM; and its exit code."""
    server = subprocess.Popen(
        [sys.executable, "server.py", "--pipeline", "echo", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in server.stdout:
            lines.append(line)
            if "Running on" in line:
                break
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=15)
    return "".join(lines) + rest, server.returncode


@pytest.mark.loopback
def test_server_startup_log_hides_keys_and_missing_key_names_the_variable():
    log, returncode = startup_log("--stt-api-key", "sk-secret-987", "--voice-token", "tok-555")
    assert "STT_API_KEY': 'set'" in log and "sk-secret-987" not in log and "tok-555" not in log
    assert returncode == 0, log  # SIGTERM is a clean shutdown

    missing = subprocess.run(
        [sys.executable, "server.py", "--llm-engine", "openai", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert missing.returncode == 2 and "LLM_API_KEY" in missing.stderr


def test_readme_configuration_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "run: .venv/bin/python scripts/settings_table.py"


def test_json_logs_are_one_object_per_line_with_a_session_field():
    log, _ = startup_log("--log-format", "json")
    entries = [json.loads(line) for line in log.splitlines() if line]
    assert entries and all({"time", "level", "logger", "session", "message"} <= set(e) for e in entries)


def test_languages_parse_and_the_older_name_is_still_read():
    assert load_settings([], env={}, dotenv_path=None).language_list == ("en",)
    assert load_settings(["--languages", " en, ZH ,en"], env={}, dotenv_path=None).language_list == ("en", "zh")
    assert load_settings([], env={"STT_LANGUAGE": "zh"}, dotenv_path=None).language_list == ("zh",)
    assert load_settings([], env={"STT_LANGUAGE": "zh", "LANGUAGES": "en,pt"}, dotenv_path=None).language_list == ("en", "pt")
    for bad in ("", "english", "en;zh"):
        with pytest.raises(SettingsError, match="LANGUAGES"):
            load_settings(["--languages", bad], env={}, dotenv_path=None)


def test_tts_voices_are_code_voice_pairs():
    assert load_settings(["--tts-voices", "zh=cmn, pt = pt-br"], env={}, dotenv_path=None).voice_map == {"zh": "cmn", "pt": "pt-br"}
    with pytest.raises(SettingsError, match="TTS_VOICES"):
        load_settings(["--tts-voices", "cmn"], env={}, dotenv_path=None)
