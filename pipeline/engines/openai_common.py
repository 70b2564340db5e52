"""What the three OpenAI-compatible engines share: endpoint resolution, the client, error wording.

Every failure becomes an EngineError with a short message naming the host,
never the key: server error bodies are scrubbed because some servers echo the
key they rejected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx2
import openai

from settings import Settings, SettingsError

GROQ_BASE_URL = "https://api.groq.com/openai/v1"
OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"  # sent to keyless local servers; the SDK insists on some key

# Default models per provider and stage.
_DEFAULTS = {
    GROQ_BASE_URL: {"stt": "whisper-large-v3-turbo", "llm": "llama-3.1-8b-instant"},
    OPENAI_BASE_URL: {"stt": "whisper-1", "llm": "gpt-4o-mini", "tts": "tts-1"},
}
DEFAULT_TTS_MODEL = "tts-1"
DEFAULT_TTS_VOICE = "alloy"

# Things that look like API keys, scrubbed from server messages besides the exact keys we know.
_KEYLIKE = re.compile(r"\b(?:sk|gsk|pk|rk|xai)[-_][A-Za-z0-9_\-*]{6,}")


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    model: str


def host_of(url: str) -> str:
    """host[:port] only: a URL could carry credentials in userinfo or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def is_local_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _provider_of(url: str) -> str | None:
    host = urlsplit(url).hostname
    for base in _DEFAULTS:
        if urlsplit(base).hostname == host:
            return base
    return None


Stage = Literal["stt", "llm", "tts"]


def resolve_endpoint(settings: Settings, stage: Stage) -> Endpoint:
    """Base URL, key and model of an `openai` stage; SettingsError names what is missing."""
    var = stage.upper()
    own = {
        "stt": (settings.stt_base_url, settings.stt_api_key, settings.stt_model),
        "llm": (settings.llm_base_url, settings.llm_api_key, settings.llm_model),
        "tts": (settings.tts_base_url, settings.tts_api_key, settings.tts_model),
    }[stage]
    base_url, api_key, model = own[0].strip().rstrip("/"), own[1].strip(), own[2].strip()
    groq = settings.groq_api_key.strip() if stage != "tts" else ""
    openai_key = settings.openai_api_key.strip()
    conveniences = "GROQ_API_KEY / OPENAI_API_KEY" if stage != "tts" else "OPENAI_API_KEY"

    if base_url:
        provider = _provider_of(base_url)
        if not api_key:
            # A provider's own URL may use its convenience key.
            api_key = {GROQ_BASE_URL: groq, OPENAI_BASE_URL: openai_key}.get(provider or "", "")
        if not api_key:
            if not is_local_url(base_url):
                raise SettingsError(
                    f"{var}_ENGINE=openai with {var}_BASE_URL={host_of(base_url)} needs {var}_API_KEY (any value for a server without auth)"
                )
            api_key = NO_KEY
    else:
        if api_key:
            # A key of its own without a URL: Groq keys say so, anything else is taken for OpenAI.
            base_url = GROQ_BASE_URL if api_key.startswith("gsk_") and stage != "tts" else OPENAI_BASE_URL
        elif groq:
            base_url, api_key = GROQ_BASE_URL, groq
        elif openai_key:
            base_url, api_key = OPENAI_BASE_URL, openai_key
        else:
            raise SettingsError(f"{var}_ENGINE=openai needs {var}_API_KEY (or {conveniences})")
        provider = base_url

    if not model:
        model = _DEFAULTS.get(provider or "", {}).get(stage, "")
        if not model and stage == "tts":
            model = DEFAULT_TTS_MODEL  # most OpenAI-compatible speech servers accept it
        if not model:
            raise SettingsError(f"{var}_ENGINE=openai with {var}_BASE_URL={host_of(base_url)} needs {var}_MODEL")
    return Endpoint(base_url=base_url, api_key=api_key, model=model)


def make_client(endpoint: Endpoint, timeout_s: float, max_retries: int) -> openai.AsyncOpenAI:
    # The SDK's own timeout bounds connect and each read; callers add an overall asyncio bound.
    return openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout_s, max_retries=max_retries)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)


def _server_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message
    return ""


def describe(exc: BaseException, host: str, secrets: Iterable[str], timeout_s: float | None = None) -> str:
    """A short human reason for `exc`, safe to show: no key, no traceback."""
    if isinstance(exc, openai.APIStatusError):
        detail = scrub(_server_detail(exc), secrets).strip()
        if len(detail) > 160:
            detail = detail[:157] + "..."
        return f"HTTP {exc.status_code} from {host}" + (f" ({detail})" if detail else "")
    if isinstance(exc, openai.APITimeoutError | TimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return f"no answer from {host} within {timeout_s:g} s" if timeout_s else f"{host} timed out"
    # A body read (TTS audio) raises the transport's own errors, unwrapped by the SDK.
    if isinstance(exc, openai.APIConnectionError | httpx2.RequestError | ConnectionError):
        return f"connection to {host} failed or was cut"
    return f"malformed response from {host}"


class OpenAIEngine:
    """What the three OpenAI-protocol engines share: an endpoint, a lazily built client, error wording."""

    ready = True
    stage = ""

    def __init__(self, endpoint: Endpoint, timeout_s: float, max_retries: int = 1) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.name = f"openai:{endpoint.model}"
        self._host = host_of(endpoint.base_url)
        self._client: openai.AsyncOpenAI | None = None

    @property
    def client(self) -> openai.AsyncOpenAI:
        # Built on first use so that building the engines does no I/O (the SDK loads CA certificates).
        if self._client is None:
            self._client = make_client(self.endpoint, self.timeout_s, self.max_retries)
        return self._client

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _describe(self, exc: BaseException) -> str:
        """`exc` in a few words, naming the host and never the key."""
        return describe(exc, self._host, [self.endpoint.api_key], self.timeout_s)
