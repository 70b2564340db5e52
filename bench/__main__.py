"""`python -m bench [all|latency|baseline|bargein|scale|memory ...] [--quick] [--engines standin|local|both]`

Starts the real server (and the OpenAI-protocol stand-in) as subprocesses, drives
them with real aiortc peers from this process over loopback, prints tables and
writes bench/results/<parts>-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

from bench.context import Ctx, Options
from bench.procs import RESULTS, ROOT, Standin, kill_all
from bench.stats import LoopLag

PARTS = ["latency", "baseline", "bargein", "turns", "quality", "network", "scale", "memory"]


async def _part(name: str, ctx: Ctx) -> dict[str, Any]:
    if name == "latency":
        from bench.latency import run_latency

        return await run_latency(ctx)
    if name == "baseline":
        from bench.latency import run_baseline

        return await run_baseline(ctx)
    if name == "bargein":
        from bench.bargein import run_bargein

        return await run_bargein(ctx)
    if name == "turns":
        from bench.turns import run_turns

        return await run_turns(ctx)
    if name == "quality":
        from bench.quality import run_quality

        return await run_quality(ctx)
    if name == "network":
        from bench.network import run_network

        return await run_network(ctx)
    if name == "scale":
        from bench.scale import run_scale

        return await run_scale(ctx)
    if name == "memory":
        from bench.memory import run_memory

        return await run_memory(ctx)
    raise ValueError(name)


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(
        subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
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
            # `--inbound deadline,aiortc`: the part once per inbound path, back to back (the network
            # part compares the paths itself). Tables and results are labelled with the path.
            paths = [None] if name == "network" or len(opts.inbound) < 2 else list(opts.inbound)
            for path in paths:
                key = name if path is None else f"{name}[{path}]"
                ctx.inbound = None if name == "network" else path or (opts.inbound[0] if opts.inbound else None)
                t0 = time.monotonic()
                print(f"== {key} ==", flush=True)
                if path is not None:
                    ctx.emit(f"--- {name}, inbound path {path} ---")
                try:
                    results["parts"][key] = await _part(name, ctx)
                except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
                    traceback.print_exc()
                    results["parts"][key] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
                    ctx.emit(f"{key}: FAILED: {type(exc).__name__}: {exc}")
                results["timing_s"][key] = round(time.monotonic() - t0, 1)
    finally:
        standin.close()
        await lag.stop()
    results["timing_s"]["total"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["tables"] = ctx.tables
    results["notes"] = ctx.notes
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="part", help=f"all (default) or any of: {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="fewer trials and sizes: about a minute")
    parser.add_argument("--engines", choices=["standin", "local", "both"], default=None, help="default: both; standin with --quick")
    parser.add_argument("--no-probe", action="store_true", help="run server.py itself, without the loop-lag probe (lag then reads n/a)")
    parser.add_argument(
        "--configs",
        default="new,old",
        help="quality part: configurations, of bench/quality.py CONFIGS; network part: inbound paths, deadline and/or aiortc (both unless named)",
    )
    parser.add_argument(
        "--items",
        choices=["all", "recordings", "latency"],
        default="all",
        help="quality part: everything, only the real recordings, or only the voice-to-voice pass",
    )
    parser.add_argument(
        "--inbound",
        default="",
        help="inbound path(s) of every server the parts start: deadline (the product's default) and/or aiortc; two run each part once per path",
    )
    parser.add_argument("--questions", type=int, default=0, help="network part: questions per condition (default 10; 4 with --quick)")
    parser.add_argument(
        "--conditions", default="", help="network part: comma-separated conditions (default: all), e.g. 'clean,loss 5 %% + jitter'"
    )
    parser.add_argument(
        "--llm-model", default="", help="LLM_MODEL of the embedded servers every part starts (default: the product's, auto)"
    )
    parser.add_argument(
        "--full-clients",
        action="store_true",
        help="scale part, stand-in sessions: client peers that encode their mic and decode the reply (default: light ones that do neither)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=10,
        help="scale part, stand-in sessions: nice of the bench's client peers and the stand-in engines, which stand for "
        "other machines, so the server gets the cores first (0: all equal)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for timing jitter between trials")
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
        configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()),
        items=args.items,
        inbound=tuple(c.strip() for c in args.inbound.split(",") if c.strip()),
        questions=args.questions,
        conditions=tuple(c.strip() for c in args.conditions.split(",") if c.strip()),
        llm_model=args.llm_model,
        full_clients=args.full_clients,
        client_nice=args.client_nice,
    )
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
    print(f"\ntotal {results['timing_s']['total']:.0f} s; parts {results['timing_s']}; results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
