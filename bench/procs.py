"""The processes under test: the stand-in engines and the real server, each its own subprocess.

Every process started here is registered and killed on exit (normal, exception,
Ctrl-C or SIGTERM). Readers of `/proc` give CPU time and RSS without asking the
processes themselves.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The checkout whose server.py is measured (--product): another commit's worktree gives its
# figures through this same harness, e.g. a baseline of the product before a change.
product = ROOT
LOGS = RESULTS / "logs"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

_children: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _kill(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def kill_all() -> None:
    while _children:
        _kill(_children.pop())


atexit.register(kill_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _on_sigterm)
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the bench even if started with SIGINT ignored


def spawn(args: list[str], log_name: str, cwd: Path = ROOT) -> tuple[subprocess.Popen[bytes], Path]:
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{log_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log_path, "wb") as log:
        # Own session: a Ctrl-C in the terminal reaches the bench, which then stops these cleanly.
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _children.append(proc)
    return proc, log_path


def stop(proc: subprocess.Popen[bytes]) -> None:
    _kill(proc)
    if proc in _children:
        _children.remove(proc)


def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a WORKERS > 1 server: the supervisor and its workers)."""
    out = [pid]
    for p in out:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    with open(f"/proc/{p}/task/{task}/children") as f:
                        out += [int(c) for c in f.read().split()]
    return out


def set_nice(pid: int, nice: int) -> None:
    """Every thread of `pid` at `nice` (Linux keeps it per thread; threads started later take their
    creator's). Lowering it back needs root, which the bench has."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task), nice)


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def tree_memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process tree: `rss` sums each process's RSS (pages two processes share
    count twice); `pss` shares each such page between them (/proc/<pid>/smaps_rollup), so it is the
    tree's real footprint."""
    rss = pss = 0.0
    pids = tree(pid)
    for p in pids:
        with contextlib.suppress(OSError):
            rss += rss_mb(p)
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) / 1024
                        break
    return {"rss": round(rss, 1), "pss": round(pss, 1), "processes": len(pids)}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_delay_s(pid: int, main_thread_only: bool = False) -> float:
    """Seconds the process's threads (or its main thread) spent runnable but waiting for a CPU (/proc schedstat)."""
    tids = [str(pid)] if main_thread_only else os.listdir(f"/proc/{pid}/task")
    total = 0
    for tid in tids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
    return total / 1e9


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


@dataclass
class CpuWindow:
    """CPU used by each watched process (and the machine) between start() and stop()."""

    pids: dict[str, int]
    trees: tuple[str, ...] = ()  # keys whose whole process tree counts (a server with workers)
    t0: float = 0.0
    c0: dict[str, float] = field(default_factory=dict)
    m0: tuple[float, float] = (0.0, 0.0)

    w0: dict[str, float] = field(default_factory=dict)

    def _cpu(self, key: str, pid: int) -> float:
        return tree_cpu_seconds(pid) if key in self.trees else cpu_seconds(pid)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: self._cpu(k, p) for k, p in self.pids.items()}
        self.w0 = {k: run_delay_s(p, main_thread_only=True) for k, p in self.pids.items()}
        self.m0 = machine_cpu()

    def stop(self) -> dict[str, float]:
        """Percent of one core per process; `machine` is percent of all cores busy, `others` what none of ours used."""
        dt = max(time.monotonic() - self.t0, 1e-6)
        out = {k: round(100 * (self._cpu(k, p) - self.c0[k]) / dt, 1) for k, p in self.pids.items()}
        busy, total = machine_cpu()
        ncpu = os.cpu_count() or 1
        machine = 100 * (busy - self.m0[0]) / max(total - self.m0[1], 1)
        out["machine_all_cores"] = round(machine, 1)
        out["others"] = round(max(0.0, machine * ncpu - sum(out[k] for k in self.pids)), 1)  # % of one core
        out["seconds"] = round(dt, 1)
        # % of the window each process's main (event-loop) thread was ready to run but had no CPU
        out["runqueue_wait"] = {k: round(100 * (run_delay_s(p, main_thread_only=True) - self.w0[k]) / dt, 1) for k, p in self.pids.items()}
        return out


# ---------------------------------------------------------------- the processes


class Standin:
    """`python -m kit.standin` in its own process, configured over HTTP."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc, self.log = spawn([PYTHON, "-m", "kit.standin", "--port", str(self.port)], "standin")
        self.base = f"http://{HOST}:{self.port}"
        self.url = f"{self.base}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"stand-in exited: {tail(self.log)}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.base}/_standin/config") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"stand-in not ready in {timeout} s: {tail(self.log)}")

    async def configure(self, **changes: Any) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base}/_standin/config", json=changes) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"stand-in config refused: {body}")
                return body

    async def reset(self, **changes: Any) -> dict[str, Any]:
        """Back to the stand-in's defaults (zero delays), then `changes`."""
        from kit.standin import StandinConfig

        defaults = {k: v for k, v in StandinConfig().public().items() if k != "api_key"}
        return await self.configure(reset_log=True, **(defaults | changes))

    def engine_flags(self) -> list[str]:
        flags: list[str] = []
        for stage in ("stt", "llm", "tts"):
            flags += [
                f"--{stage}-engine",
                "openai",
                f"--{stage}-base-url",
                self.url,
                f"--{stage}-api-key",
                "x",
                f"--{stage}-model",
                f"standin-{stage}",
            ]
        return flags

    def close(self) -> None:
        stop(self.proc)


LOCAL_FLAGS = ["--stt-engine", "local", "--llm-engine", "local", "--tts-engine", "local"]
# The product's abuse limits, raised for load generation: the scale part opens up to 40 sessions
# (MAX_SESSIONS defaults to 10) and barge-in trials start two turns every ~3 s (MAX_TURNS_PER_MINUTE 20).
BENCH_LIMITS = ["--max-sessions", "64", "--max-turns-per-minute", "600"]


class Server:
    """The real server (`server.py`'s own main), optionally with the bench probe; see bench/probe_server.py."""

    def __init__(self, engine_flags: list[str], extra: list[str] | None = None, probe: bool = True, name: str = "server") -> None:
        self.workers = int(extra[extra.index("--workers") + 1]) if extra and "--workers" in extra else 1
        probe = probe and self.workers == 1  # the probe wraps one process; the supervisor's workers run server.py
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.probe_enabled = probe
        entry = ["-m", "bench.probe_server"] if probe else ["server.py"]
        self.args = [PYTHON, *entry, "--port", str(self.port), "--host", HOST, "--ice-hosts", HOST, "--log-level", "warning"]
        self.args += BENCH_LIMITS + engine_flags + (extra or [])
        self.proc, self.log = spawn(self.args, name, cwd=product)
        self.started = time.monotonic()
        self.ready_s: float | None = None
        self.warmed = False  # a first spoken turn has run: one-off work (lazy imports, cold pages) is done
        self.health: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        ready: set[int] = set()  # workers that answered ok
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {tail(self.log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                async with aiohttp.ClientSession() as http:  # a new connection: the kernel may pick another worker
                    async with http.get(f"{self.url}/healthz") as resp:
                        body = await resp.json()
                if body.get("status") == "ok":
                    self.health = body
                    ready.add(int(body.get("worker", 0)))
                    if len(ready) >= self.workers:
                        self.ready_s = round(time.monotonic() - self.started, 2)
                        return
            await asyncio.sleep(0.2 if not ready else 0.05)
        raise RuntimeError(f"server not ready in {timeout:g} s: {tail(self.log)}")

    async def healthz(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/healthz") as resp:
                return await resp.json()

    async def wait_sessions(self, n: int = 0, timeout: float = 15.0) -> bool:
        """Wait until the server holds `n` sessions (closing is asynchronous on its side). With
        workers, each answer is one worker's count: every worker must have said so (n = 0 only)."""
        deadline = time.monotonic() + timeout
        said: dict[int, int] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                health = await self.healthz()
                said[int(health.get("worker", 0))] = health.get("sessions", -1)
                if len(said) >= self.workers and all(v == n for v in said.values()):
                    return True
            await asyncio.sleep(0.05 if self.workers > 1 else 0.2)
        return False

    async def probe(self, since: float = 0.0) -> dict[str, Any] | None:
        """The probe's figures (loop lag samples since `since`, session counters); None without the probe."""
        if not self.probe_enabled:
            return None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/_bench/probe", params={"since": str(since)}) as resp:
                return await resp.json()

    async def metrics_text(self) -> str:
        """The server's own `/metrics` (Prometheus text); "" if it has none."""
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{self.url}/metrics") as resp:
                    if resp.status == 200:
                        return await resp.text()
        return ""

    def memory_mb(self) -> dict[str, float]:
        return tree_memory_mb(self.pid)

    def close(self) -> None:
        stop(self.proc)
