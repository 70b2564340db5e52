"""Shared fixtures: the real app in-process on loopback, and aiortc client peers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from kit.rtc_client import Client  # noqa: E402
from kit.standin import StandinConfig, run_standin  # noqa: E402
from pipeline.engines.base import Engines  # noqa: E402
from pipeline.engines.factory import build_engines  # noqa: E402
from pipeline.wiring import pipeline_factory  # noqa: E402
from rtc.http import SESSIONS, HttpConfig, create_app  # noqa: E402
from rtc.ice import use_host_addresses  # noqa: E402
from rtc.session import SessionLimits  # noqa: E402
from settings import Settings, load_settings  # noqa: E402

# Every peer in the test process (clients too, whatever test runs first) gathers loopback candidates
# only: the namespace has nothing else, and aioice leaves loopback out by default.
use_host_addresses(["127.0.0.1"])

# --- tiers (markers registered in pyproject.toml) -------------------------------------------

HEAVY_TIERS = ("loopback", "models", "browser", "deploy")
# Fixtures that start a server or peer on loopback: a test using one is `loopback` whatever it says.
LOOPBACK_FIXTURES = {"start_server", "clients", "assistant", "standin", "aiohttp_server", "aiohttp_client", "aiohttp_raw_server"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks added here count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets its tier: `loopback` by the fixtures it uses, `fast` when it needs nothing heavier."""
    wrong = []
    for item in items:
        if LOOPBACK_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("loopback"):
            item.add_marker(pytest.mark.loopback)
        heavy = [name for name in HEAVY_TIERS if item.get_closest_marker(name)]
        if not heavy:
            item.add_marker(pytest.mark.fast)
        elif item.get_closest_marker("fast"):
            wrong.append(f"{item.nodeid} is marked fast but needs {', '.join(heavy)}")
    if wrong:
        raise pytest.UsageError("\n".join(wrong))


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Yield to the loop (and worker threads) until `condition` holds: waiting on a state, not a guess of how long it takes."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def make_settings(**overrides: Any) -> Settings:
    """Settings from defaults only (never the developer's environment or .env), plus overrides."""
    settings = load_settings([], env={}, dotenv_path=None)
    for key, value in overrides.items():
        setattr(settings, key, value)
    settings.validate()
    return settings


class Running:
    def __init__(self, app: web.Application, base_url: str) -> None:
        self.app = app
        self.url = base_url

    @property
    def sessions(self) -> dict[str, Any]:
        return self.app[SESSIONS]


@pytest.fixture
def start_server(aiohttp_server: Any) -> Callable[..., Awaitable[Running]]:
    """start_server(engines=None, limits=None, **settings) -> Running (the real app on 127.0.0.1)."""
    use_host_addresses(["127.0.0.1"])

    async def start(engines: Engines | None = None, limits: SessionLimits | None = None, **overrides: Any) -> Running:
        settings = make_settings(**overrides)
        config = HttpConfig.from_settings(settings, pipeline_factory(settings, engines), engines.readiness if engines else dict)
        if limits is not None:
            config.limits = limits
        app = create_app(config)
        server = await aiohttp_server(app)
        return Running(app, str(server.make_url("")).rstrip("/"))

    return start


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """clients(url, fec=True) -> a connected Client; all are closed at the end of the test."""
    made: list[Client] = []

    async def connect(url: str, fec: bool = True, **kwargs: Any) -> Client:
        client = Client(url, fec=fec)
        made.append(client)
        await client.connect(**kwargs)
        return client

    yield connect
    for client in made:
        await client.close()


@pytest.fixture
async def assistant(start_server) -> AsyncIterator[Callable[..., Awaitable[tuple[Running, StandinConfig]]]]:
    stack: list[Any] = []

    async def start(config: StandinConfig | None = None, **overrides: Any) -> tuple[Running, StandinConfig]:
        """The app with the OpenAI-protocol stand-in (kit/standin.py) as its three engines."""
        config = config or StandinConfig()
        standin = run_standin(config)
        url = await standin.__aenter__()
        stack.append(standin)
        stages = {}
        for stage in ("stt", "llm", "tts"):
            stages |= {
                f"{stage}_engine": "openai",
                f"{stage}_base_url": url,
                f"{stage}_api_key": "sk-test-secret",
                f"{stage}_model": f"standin-{stage}",
            }
        # The canned replies here are longer than the product's default LLM_MAX_TOKENS allows.
        stages["llm_max_tokens"] = 400
        settings = make_settings(**(stages | {"stt_timeout_s": 3.0, "llm_timeout_s": 3.0, "tts_timeout_s": 2.0} | overrides))
        engines = build_engines(settings)
        await engines.start()
        stack.append(engines)
        server = await start_server(engines=engines, **(stages | overrides))
        return server, config

    yield start
    for item in reversed(stack):
        if hasattr(item, "__aexit__"):
            await item.__aexit__(None, None, None)
        else:
            await item.close()
