"""Bench results as pictures (`python -m bench ... --plots DIR`): PNGs beside the tables.

- `voice_to_voice_cdf.png`: the client's voice-to-voice, one cumulative curve per configuration
  (each part and engine set that measured turns: latency, realtime's page and WebSocket paths, ...).
- `stages_<engines>.png`: the latency part's stages, p50 and p95 bars, server and client side.
- `scale_standin.png`: the scale part on the stand-in engines, by session count: frame jitter p99
  and turn overhead p95 against their limits, and the server's CPU (one curve per WORKERS).
- `scale_local.png`: the scale part on the embedded engines: voice-to-voice p50 and p95 by how many
  sessions ask at the same moment, one pair of curves per design.

Drawn from the results JSON alone (so an old run can be drawn again: `python -m bench.plots FILE DIR`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def voice_to_voice(results: dict[str, Any]) -> Iterator[tuple[str, list[float]]]:
    """(configuration, client voice-to-voice ms of each turn) for every part that timed turns."""
    for part, by_engines in results.get("parts", {}).items():
        if not isinstance(by_engines, dict):
            continue
        for engines, r in by_engines.items():
            if not isinstance(r, dict):
                continue
            turns = r.get("turns")
            if isinstance(turns, list):
                values = [(t.get("client_ms") or {}).get("voice_to_voice") for t in turns if isinstance(t, dict)]
                yield f"{part} / {engines}", [float(v) for v in values if v is not None]
            for path in ("page", "websocket"):
                if isinstance(r.get(path), list):
                    yield (
                        f"{part} / {engines} / {path}",
                        [float(t["voice_to_voice"]) for t in r[path] if t.get("voice_to_voice") is not None],
                    )


def scale_curves(results: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float | None]]]]:
    """Per configuration of the scale part: {series: [(sessions, value), ...]}."""
    scale = results.get("parts", {}).get("scale")
    out: dict[str, dict[str, list[tuple[int, float | None]]]] = {}
    if not isinstance(scale, dict):
        return out
    for name, r in scale.items():
        if not isinstance(r, dict):
            continue
        if isinstance(r.get("levels"), list):  # the stand-in: limits and CPU
            from bench.scale import judged_jitter

            levels = [lvl for lvl in r["levels"] if isinstance(lvl, dict) and "sessions" in lvl]
            out[name] = {
                "jitter p99": [(lvl["sessions"], judged_jitter(lvl).get("p99_ms")) for lvl in levels],
                "overhead p95": [(lvl["sessions"], (lvl.get("overhead_ms") or {}).get("p95")) for lvl in levels],
                "server CPU %": [(lvl["sessions"], (lvl.get("cpu_percent_of_one_core") or {}).get("server")) for lvl in levels],
            }
        for design in r.get("designs") or []:  # the embedded engines: waiting when several ask at once
            if isinstance(design, dict) and design.get("levels"):
                for q in ("p50", "p95"):
                    series = [(lvl["sessions"], (lvl.get("v2v_client_ms") or {}).get(q)) for lvl in design["levels"]]
                    out.setdefault(name, {})[f"{design['design']} v2v {q}"] = series
    return out


def write_plots(results: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    curves = [(name, values) for name, values in voice_to_voice(results) if values]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for name, values in curves:
            v = np.sort(values)
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{name} (n={len(v)}, p50 {np.median(v):.0f} ms)")
        ax.set_xlabel("voice-to-voice at the client, ms")
        ax.set_ylabel("share of turns")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"Voice-to-voice, {_machine(results)}", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, directory / "voice_to_voice_cdf.png"))
        plt.close(fig)
    for engines, r in (results.get("parts", {}).get("latency") or {}).items():
        if not isinstance(r, dict) or not r.get("client"):
            continue
        from bench.latency import STAGES

        rows = [(label.strip(), (r["server"].get(s) or {}) if s else {}, r["client"].get(c) or {}) for label, s, c, _ in STAGES]
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        y = np.arange(len(rows))
        for offset, side, key, colour in ((-0.2, 1, "p50", "#4477aa"), (0.2, 2, "p50", "#ee6677")):
            ax.barh(
                y + offset,
                [row[side].get(key, 0) for row in rows],
                height=0.38,
                color=colour,
                label=("server" if side == 1 else "client") + " p50",
            )
            ax.errorbar(
                [row[side].get("p95", 0) for row in rows],
                y + offset,
                fmt="|",
                color="black",
                markersize=8,
                label="p95" if side == 2 else None,
            )
        ax.set_yticks(y, [row[0] for row in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ms")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Turn latency by stage - {engines} engines, {_machine(results)}", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, directory / f"stages_{engines}.png"))
        plt.close(fig)
    for name, series in scale_curves(results).items():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        cpu_axis = None
        for label, points in series.items():
            xs, ys = [x for x, y in points if y is not None], [y for _, y in points if y is not None]
            if not xs:
                continue
            if label == "server CPU %":
                cpu_axis = cpu_axis or ax.twinx()
                cpu_axis.plot(xs, ys, "s--", color="grey", label=label)
                cpu_axis.set_ylabel("server CPU, % of one core")
            else:
                ax.plot(xs, ys, "o-", label=label)
        if "jitter p99" in series:
            from bench.scale import JITTER_LIMIT_MS, OVERHEAD_LIMIT_MS

            ax.axhline(JITTER_LIMIT_MS, color="C0", ls=":", lw=1, label=f"jitter limit {JITTER_LIMIT_MS:.0f} ms")
            ax.axhline(OVERHEAD_LIMIT_MS, color="C1", ls=":", lw=1, label=f"overhead limit {OVERHEAD_LIMIT_MS:.0f} ms")
            ax.set_yscale("log")
        ax.set_xlabel("sessions" + (" asking at the same moment" if "jitter p99" not in series else ""))
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if cpu_axis is not None:
            more = cpu_axis.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize=7, loc="upper left")
        ax.set_title(f"Scale - {name}, {_machine(results)}", fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, directory / f"scale_{name}.png"))
        plt.close(fig)
    return written


def _machine(results: dict[str, Any]) -> str:
    m = results.get("machine") or {}
    return f"commit {m.get('commit', '?')}, {m.get('cpus', '?')} cores"


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path)
    return path


if __name__ == "__main__":
    for written in write_plots(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(written)
