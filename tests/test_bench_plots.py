"""`python -m bench ... --plots DIR` (bench/plots.py): the figures of a results file, drawn as PNGs."""

from __future__ import annotations

from pathlib import Path

from bench.plots import voice_to_voice, write_plots

PNG = b"\x89PNG\r\n\x1a\n"


def results() -> dict:
    stage = {"p50": 300.0, "p95": 500.0}
    turn = lambda ms: {"client_ms": {"voice_to_voice": ms}}  # noqa: E731
    return {
        "machine": {"commit": "abc1234", "cpus": 2},
        "parts": {
            "latency": {
                "standin": {
                    "turns": [turn(350.0), turn(420.0), turn(None)],
                    "server": {"endpoint": stage, "stt": stage, "voice_to_voice": stage},
                    "client": {"endpoint": stage, "voice_to_voice": stage, "delivery": {"p50": 20.0, "p95": 40.0}},
                },
                "local": {"unavailable": "no models"},
            },
            "realtime": {"standin": {"page": [{"voice_to_voice": 400.0}], "websocket": [{"voice_to_voice": 380.0}, {"error": "x"}]}},
            "scale": {"error": "broken part"},
        },
    }


def test_every_configuration_that_timed_turns_is_a_curve() -> None:
    assert dict(voice_to_voice(results())) == {
        "latency / standin": [350.0, 420.0],
        "realtime / standin / page": [400.0],
        "realtime / standin / websocket": [380.0],
    }


def test_the_plots_are_written_as_pngs(tmp_path: Path) -> None:
    written = write_plots(results(), tmp_path / "plots")
    assert sorted(p.name for p in written) == ["stages_standin.png", "voice_to_voice_cdf.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
