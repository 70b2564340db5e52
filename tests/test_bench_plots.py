"""`python -m bench ... --plots DIR` (bench/plots.py): the figures of a results file, drawn as PNGs."""

from __future__ import annotations

from pathlib import Path

from bench.plots import scale_curves, voice_to_voice, write_plots

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
            "scale": {
                "standin": {"levels": [scale_level(n, 2.0 * n, 30.0 + n, 9.0 * n) for n in (1, 4, 8)]},
                "standin_workers2": {"unavailable": "no second core"},
                "local": {
                    "designs": [
                        {"design": "one worker", "levels": [local_level(1, 1800.0), local_level(2, 2900.0)]},
                        {"design": "x", "unavailable": "y"},
                    ]
                },
            },
        },
    }


def scale_level(n: int, jitter: float, overhead: float, cpu: float) -> dict:
    return {
        "sessions": n,
        "jitter": {"p99_ms": jitter + 1},
        "jitter_wire": {"p99_ms": jitter},
        "overhead_ms": {"p95": overhead},
        "cpu_percent_of_one_core": {"server": cpu},
    }


def local_level(n: int, p50: float) -> dict:
    return {"sessions": n, "v2v_client_ms": {"p50": p50, "p95": p50 + 700}}


def test_every_configuration_that_timed_turns_is_a_curve() -> None:
    assert dict(voice_to_voice(results())) == {
        "latency / standin": [350.0, 420.0],
        "realtime / standin / page": [400.0],
        "realtime / standin / websocket": [380.0],
    }


def test_the_plots_are_written_as_pngs(tmp_path: Path) -> None:
    written = write_plots(results(), tmp_path / "plots")
    assert sorted(p.name for p in written) == ["scale_local.png", "scale_standin.png", "stages_standin.png", "voice_to_voice_cdf.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_scale_is_drawn_by_session_count_with_the_jitter_judged_where_the_bench_judges_it() -> None:
    curves = scale_curves(results())
    assert curves["standin"]["jitter p99"] == [(1, 2.0), (4, 8.0), (8, 16.0)], "on the wire, where it was read"
    assert curves["standin"]["overhead p95"] == [(1, 31.0), (4, 34.0), (8, 38.0)]
    assert curves["local"] == {"one worker v2v p50": [(1, 1800.0), (2, 2900.0)], "one worker v2v p95": [(1, 2500.0), (2, 3600.0)]}
    assert "standin_workers2" not in curves
