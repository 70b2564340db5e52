"""Percentiles, summaries and the plain-text tables the bench prints; the loop-lag ticker."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any


def clean(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between the nearest ranks; None for no values."""
    v = sorted(clean(values))
    if not v:
        return None
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    v = clean(values)
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "p50": round(pct(v, 50) or 0.0, 1),
        "p95": round(pct(v, 95) or 0.0, 1),
        "p99": round(pct(v, 99) or 0.0, 1),
        "max": round(max(v), 1),
        "min": round(min(v), 1),
        "mean": round(sum(v) / len(v), 1),
    }


def fmt(x: Any, unit: str = "", digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}{unit}"


def triple(s: dict[str, Any] | None, digits: int = 0) -> str:
    """'p50 / p95 / max' of a summary."""
    if not s or not s.get("n"):
        return "-"
    return f"{s['p50']:.{digits}f} / {s['p95']:.{digits}f} / {s['max']:.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = [title] if title else []
    out.append("  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)))
    out.append(line)
    for row in cells[1:]:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(out)


class LoopLag:
    """How late this process's event loop wakes a 10 ms timer: the client side's own stalls."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=300_000)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.010)
            after = loop.time()
            self.samples.append((after, (after - before - 0.010) * 1000))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def between(self, t0: float, t1: float = float("inf")) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
