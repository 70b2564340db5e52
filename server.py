"""The voice assistant server: `python server.py --help` lists every setting."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from aiohttp import web

from pipeline.engines.base import Engines
from pipeline.mcp_tools import McpServers
from pipeline.tools import built_in
from pipeline.wiring import offered_tools, pipeline_factory, warm_up, warm_up_messages
from rtc.handoff import SIBLINGS_ENV, Siblings
from rtc.http import HttpConfig, create_app
from rtc.ice import use_host_addresses
from rtc.session import SESSION_ID
from settings import Settings, SettingsError, load_settings

log = logging.getLogger("server")

# Set by the supervisor in each worker process it starts (WORKERS > 1): the worker's number.
WORKER_ENV = "VOICE_WORKER"
RESTART_DELAY_S = 1.0


def worker_index() -> int | None:
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def build_app(settings: Settings) -> web.Application:
    engines: Engines | None = None
    if settings.pipeline == "assistant":
        from pipeline.engines.factory import build_engines

        engines = build_engines(settings)
    use_host_addresses(settings.ice_host_list)
    mcp = McpServers(settings.mcp_server_list, reserved=[tool.name for tool in built_in(settings.tool_list)])
    config = HttpConfig.from_settings(settings, pipeline_factory(settings, engines, mcp.tools), engines.readiness if engines else dict)
    config.worker = worker_index() or 0
    if worker_index() is not None:
        config.siblings = Siblings.from_env(config.worker)
    app = create_app(config)
    if engines is not None:
        app.on_startup.append(lambda _app: _start_engines(engines, settings, mcp))
        app.on_cleanup.append(lambda _app: engines.close())
        app.on_cleanup.append(lambda _app: mcp.close())
    return app


async def _start_engines(engines: Engines, settings: Settings, mcp: McpServers) -> None:
    started = time.monotonic()
    await engines.start()
    log.info("engines ready in %.1f s: %s", time.monotonic() - started, engines.readiness())
    await mcp.start()  # before warm-up: their tools are part of every prompt
    await warm_up(engines, settings, mcp.tools)


class _SessionField(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session = SESSION_ID.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "session": getattr(record, "session", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_SessionField())
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        worker = worker_index()
        prefix = "" if worker is None else f"w{worker} "
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s [%(session)s] %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # Access lines would repeat what our own lines say, and at info they show every poll of /healthz.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for name in ("httpx", "httpx2"):  # the openai client's HTTP layer logs every request at info
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    if settings.worker_count > 1 and worker_index() is None:
        return supervise(settings, argv)
    log.info("settings: %s", settings.public())
    try:
        app = build_app(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # run_app handles SIGINT/SIGTERM: on_shutdown closes every session first. Workers share
    # the port: SO_REUSEPORT lets the kernel hand each new connection to one of them; each also
    # listens on its own Unix socket, where a full sibling hands it sessions (rtc/handoff.py).
    worker = worker_index()
    siblings = Siblings.from_env(worker) if worker is not None else None
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        path=str(siblings.socket(worker)) if siblings is not None and worker is not None else None,
        reuse_port=worker is not None,
        print=lambda msg: log.info(msg.strip()),
        shutdown_timeout=5,
    )
    return 0


def supervise(settings: Settings, argv: list[str]) -> int:
    """WORKERS > 1: start that many copies of this server on one port, restart any that dies,
    and pass SIGINT/SIGTERM on to all of them (each says goodbye to its own sessions).

    With the embedded LLM, the supervisor loads it once as llama.cpp's server (BoxModelServer)
    and points every worker at it; each worker keeps its own STT and TTS, on its share of the cores.
    """
    n = settings.worker_count
    port = settings.port or _free_port(settings.host)
    command = [sys.executable, os.path.abspath(__file__), *argv, "--port", str(port), *_worker_threads(settings)]
    env = {**os.environ}
    model = None
    if settings.pipeline == "assistant" and settings.llm_engine == "local":
        from pipeline.engines.local_llm import BoxModelServer, LocalLLM

        model = BoxModelServer(LocalLLM.from_settings(settings))
        log.info("loading the LLM once for this box's %d workers", n)
        try:
            endpoint = model.start(_free_port("127.0.0.1"), warm=warm_up_messages(settings), tools=offered_tools(settings))
        except Exception as exc:
            log.error("the LLM could not start: %s", exc)
            return 2
        env["LLM_API_KEY"] = endpoint.pop("LLM_API_KEY")  # the environment, not argv: `ps` shows argv
        for name, value in endpoint.items():
            command += [f"--{name.lower().replace('_', '-')}", value]
    # Where the workers' Unix sockets are, for a full one to hand a session to one with room.
    env[SIBLINGS_ENV] = tempfile.mkdtemp(prefix="voice-workers-")
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(i: int) -> None:
        # Its own session (process group): a terminal's Ctrl-C reaches the supervisor alone, which
        # passes one SIGTERM on, so no worker is interrupted twice while saying goodbye.
        workers[i] = subprocess.Popen(command, env={**env, WORKER_ENV: str(i)}, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting %d workers on %s:%d", n, settings.host, port)
    for i in range(n):
        start(i)
    while not stopping:
        time.sleep(0.2)
        for i, proc in list(workers.items()):
            if proc.poll() is not None and not stopping:
                if proc.returncode == 2:  # a configuration error: restarting would only repeat it
                    log.error("worker %d could not start (exit 2); stopping", i)
                    stop(signal.SIGTERM, None)
                    break
                log.warning("worker %d exited with %s; restarting it", i, proc.returncode)
                time.sleep(RESTART_DELAY_S)
                start(i)
    deadline = time.monotonic() + 15
    for proc in workers.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if model is not None:
        model.stop()
    shutil.rmtree(env[SIBLINGS_ENV], ignore_errors=True)
    return 0


def _worker_threads(settings: Settings) -> list[str]:
    """Flags that split the cores between the workers' own STT and TTS (where left at 0 = all):
    two workers each running two threads on two cores would only preempt each other."""
    from pipeline.engines.workers import available_cores

    share = str(max(1, available_cores() // settings.worker_count))
    unset = [flag for flag, threads in (("--stt-threads", settings.stt_threads), ("--tts-threads", settings.tts_threads)) if not threads]
    return [arg for flag in unset for arg in (flag, share)]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
