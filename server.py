"""The voice assistant server: `python server.py --help` lists every setting."""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp import web

from pipeline.engines.base import Engines
from pipeline.wiring import pipeline_factory, warm_up
from rtc.http import HttpConfig, create_app
from rtc.ice import use_host_addresses
from rtc.session import SESSION_ID
from settings import Settings, SettingsError, load_settings

log = logging.getLogger("server")


def build_app(settings: Settings) -> web.Application:
    engines: Engines | None = None
    if settings.pipeline == "assistant":
        from pipeline.engines.factory import build_engines

        engines = build_engines(settings)
    use_host_addresses(settings.ice_host_list)
    config = HttpConfig.from_settings(settings, pipeline_factory(settings, engines), engines.readiness if engines else dict)
    app = create_app(config)
    if engines is not None:
        app.on_startup.append(lambda _app: _start_engines(engines, settings))
        app.on_cleanup.append(lambda _app: engines.close())
    return app


async def _start_engines(engines: Engines, settings: Settings) -> None:
    started = time.monotonic()
    await engines.start()
    log.info("engines ready in %.1f s: %s", time.monotonic() - started, engines.readiness())
    await warm_up(engines, settings)


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(session)s] %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    # Access lines would repeat what our own lines say, and at info they show every poll of /healthz.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    log.info("settings: %s", settings.public())
    try:
        app = build_app(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # run_app handles SIGINT/SIGTERM: on_shutdown closes every session first.
    web.run_app(app, host=settings.host, port=settings.port, print=lambda msg: log.info(msg.strip()), shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
