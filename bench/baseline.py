"""A stored baseline run: the headline figures of one run, and "now vs baseline" against it.

Every part records its headline figures (`Ctx.figure`: voice-to-voice p50, barge-in stop time,
talk-overs, lost turns, sessions within limits, answers right ...). `--save-baseline` writes them
to bench/baseline/<quick|full>.json with the commit and machine they came from (`python -m
bench.baseline RESULTS.json` stores a past run); every later run of the same kind prints each
figure beside the stored one. A ratio compares like with like only on the same machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.stats import table

DIR = Path(__file__).resolve().parent / "baseline"


def path_for(quick: bool) -> Path:
    return DIR / ("quick.json" if quick else "full.json")


def save(path: Path, figures: dict[str, float], machine: dict[str, Any]) -> None:
    """Store `figures`, keeping the stored ones of parts this run did not measure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = (load(path) or {}).get("figures", {})
    body = {"saved": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine, "figures": dict(sorted((kept | figures).items()))}
    path.write_text(json.dumps(body, indent=1) + "\n")


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def compare(figures: dict[str, float], base: dict[str, Any]) -> str:
    """One row per figure of this run: now, baseline, now / baseline."""
    old: dict[str, float] = base.get("figures", {})
    rows = []
    for key in sorted(figures):
        now, then = figures[key], old.get(key)
        ratio = f"{now / then:.2f}" if then else ("=" if now == then else "-")
        rows.append([key, f"{now:g}", "-" if then is None else f"{then:g}", ratio])
    machine = base.get("machine", {})
    title = f"Now vs baseline (saved {base.get('saved', '?')} at commit {machine.get('commit', '?')}, {machine.get('cpus', '?')} cores)"
    return table(["figure", "now", "baseline", "now / baseline"], rows, title)


if __name__ == "__main__":  # python -m bench.baseline RESULTS.json: store a past run's figures as the baseline
    import sys

    run = json.loads(Path(sys.argv[1]).read_text())
    save(path_for(run["options"]["quick"]), run["figures"], run["machine"])
