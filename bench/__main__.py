"""`python -m bench [all|latency|bargein|turns|network|scale|quality|languages|tools ...] [--quick] [--engines standin|local|both]`

Starts the real server (and the OpenAI-protocol stand-in) as subprocesses, drives them with
real aiortc peers from this process over loopback, prints tables, compares the headline
figures with the stored baseline (bench/baseline/) and writes
bench/results/<parts>-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import baseline, procs
from bench.context import Ctx, Options
from bench.procs import RESULTS, ROOT, Standin, kill_all
from bench.stats import LoopLag

PARTS = ["latency", "bargein", "turns", "network", "scale", "quality", "languages", "tools", "realtime"]


async def _part(name: str, ctx: Ctx) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    return await getattr(module, f"run_{name}")(ctx)


def _machine() -> dict[str, Any]:
    root = procs.product
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    )
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit + ("+dirty" if dirty else ""),
    }


async def run(parts: list[str], opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"options": vars(opts) | {"parts": parts}, "machine": _machine(), "parts": {}, "timing_s": {}}
    lag = LoopLag()
    lag.start()
    standin = Standin()
    ctx = Ctx(opts, standin, lag)
    try:
        await standin.wait_ready()
        for name in parts:
            t0 = time.monotonic()
            print(f"== {name} ==", flush=True)
            try:
                results["parts"][name] = await _part(name, ctx)
            except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
                traceback.print_exc()
                results["parts"][name] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
                ctx.emit(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            results["timing_s"][name] = round(time.monotonic() - t0, 1)
    finally:
        ctx.close()
        standin.close()
        await lag.stop()
    results["timing_s"]["total"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["tables"] = ctx.tables
    results["notes"] = ctx.notes
    results["figures"] = ctx.figures
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="part", help=f"all (default) or any of: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="fewer trials and sizes, stand-in engines: about a minute")
    parser.add_argument("--engines", choices=["standin", "local", "both"], default=None, help="default: both; standin with --quick")
    parser.add_argument("--no-probe", action="store_true", help="run server.py itself, without the loop-lag probe (lag then reads n/a)")
    parser.add_argument("--llm-model", default="", help="LLM_MODEL of the embedded servers (default: the product's)")
    parser.add_argument("--save-baseline", action="store_true", help="store this run's headline figures as the baseline")
    parser.add_argument("--baseline", default="", help="baseline JSON to compare with (default: bench/baseline/quick.json or full.json)")
    parser.add_argument("--full-clients", action="store_true", help="scale: client peers that encode their mic and decode the reply")
    parser.add_argument("--client-nice", type=int, default=10, help="scale: nice of the client peers and the stand-in (0: as the server)")
    parser.add_argument("--product", default="", help="measure the server.py of this checkout (e.g. a worktree of an older commit)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for timing jitter between trials")
    parser.add_argument("--plots", default="", metavar="DIR", help="also write the figures as PNGs into DIR (bench/plots.py)")
    args = parser.parse_args(argv)
    args.parts = args.parts or ["all"]
    unknown = [p for p in args.parts if p not in ["all", *PARTS]]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from all, {', '.join(PARTS)}")
    parts = PARTS if "all" in args.parts else [p for p in PARTS if p in args.parts]
    engines = args.engines or ("standin" if args.quick else "both")
    opts = Options(
        quick=args.quick,
        engines=("standin", "local") if engines == "both" else (engines,),
        probe=not args.no_probe,
        seed=args.seed,
        llm_model=args.llm_model,
        full_clients=args.full_clients,
        client_nice=args.client_nice,
    )
    if args.product:
        procs.product = Path(args.product).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = "all" if "all" in args.parts else "-".join(parts)
    label += "-quick" if args.quick else ""
    try:
        results = asyncio.run(run(parts, opts))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        kill_all()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{label}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print("=" * 100)
    print("\n\n".join(results["tables"]))
    if results["notes"]:
        print("\nNotes (causes found for the weaker figures):")
        for note in results["notes"]:
            print(f"  - {note}")
    base_path = Path(args.baseline) if args.baseline else baseline.path_for(args.quick)
    if args.save_baseline:
        baseline.save(base_path, results["figures"], results["machine"])
        print(f"\nbaseline saved: {base_path}")
    elif (base := baseline.load(base_path)) is not None:
        print("\n" + baseline.compare(results["figures"], base))
    if args.plots:
        from bench.plots import write_plots

        for written in write_plots(results, Path(args.plots)):
            print(f"plot: {written}")
    print(f"\ntotal {results['timing_s']['total']:.0f} s; parts {results['timing_s']}; results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
