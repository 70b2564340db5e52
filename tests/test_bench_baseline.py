"""bench/baseline.py: a run's headline figures stored, merged and compared as "now vs baseline"."""

from pathlib import Path

from bench import baseline


def test_a_saved_baseline_keeps_the_parts_a_later_run_did_not_measure(tmp_path: Path) -> None:
    path = tmp_path / "quick.json"
    baseline.save(path, {"bargein/stop_p50_ms": 160.0, "latency/standin/voice_to_voice_p50_ms": 900.0}, {"commit": "a"})
    baseline.save(path, {"bargein/stop_p50_ms": 150.0}, {"commit": "b"})
    stored = baseline.load(path)
    assert stored is not None
    assert stored["figures"] == {"bargein/stop_p50_ms": 150.0, "latency/standin/voice_to_voice_p50_ms": 900.0}
    assert stored["machine"]["commit"] == "b"


def test_now_vs_baseline_is_a_ratio_per_figure_of_this_run(tmp_path: Path) -> None:
    base = {"saved": "x", "machine": {"commit": "a", "cpus": 2}, "figures": {"a": 200.0, "b": 0.0, "c": 5.0}}
    text = baseline.compare({"a": 100.0, "b": 0.0, "new": 3.0}, base)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[3:]}
    assert rows["a"] == ["100", "200", "0.50"]
    assert rows["b"] == ["0", "0", "="]  # a count that stayed at zero
    assert rows["new"] == ["3", "-", "-"]
    assert "c" not in rows  # not measured this run
    assert baseline.load(tmp_path / "missing.json") is None
