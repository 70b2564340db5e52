"""Text end-of-turn signal: the embedded LLM's probability that the user's message ends after these words.

Why: Smart Turn hears the voice, not the words, and a word list knows only the words it lists; a
language model knows that "What is the capital of" wants more (LiveKit's text turn detector is a
Qwen2.5-0.5B reading P(<|im_end|>) after the user's text in the same way).

The user's text goes into the chat template (ChatML: Qwen2.5 and SmolLM2 alike) after the last
assistant reply, without the closing `<|im_end|>`, and llama.cpp is asked for one token with its
top-k probabilities (the model's own softmax, before sampling): P(finished) is the mass of the
tokens that close the message there, the turn's end token or an end of sentence. The text is
lower-cased and stripped of punctuation first, as LiveKit does, since Whisper often writes a "?"
after a cut-off half ("How many legs does?") that would otherwise vote for an end.

The model file is the reply engine's (`TextTurn.beside(llm)`), loaded a second time with a small
context and a single slot: llama.cpp maps the file, so the two share its pages, and a judgement
never evicts a conversation's KV cache or waits for a slot behind a reply.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any

from pipeline.engines.base import EngineError
from pipeline.engines.local_llm import LocalLLM, resolve_model
from pipeline.events import Stage

log = logging.getLogger(__name__)

STAGE: Stage = "turn"
TOP_K = 20  # probabilities llama.cpp returns; the end tokens, when likely, are among them
CONTEXT = 512  # tokens: the previous reply's tail and the user's words
PREVIOUS_CHARS = 300  # of the last reply: its end is what the user answers
TEXT_WORDS = 60  # of the user's text: the end is what matters
ENDS = ("?", ".", "!")


def normalize(text: str) -> str:
    """Lower case, no punctuation but apostrophes and hyphens inside words, single spaces."""
    text = re.sub(r"[^\w\s'-]", " ", text.lower())
    text = re.sub(r"(?<!\w)['-]|['-](?!\w)", " ", text)
    return " ".join(text.split())


def render(text: str, previous_reply: str = "", *, plain: bool = True, system: str = "") -> str:
    """The chat-template prompt whose next token says whether the user's message is over."""
    words = text.split()[-TEXT_WORDS:]
    user = normalize(" ".join(words)) if plain else " ".join(words)
    parts = []
    if system:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    previous = previous_reply.strip()[-PREVIOUS_CHARS:]
    if previous:
        parts.append(f"<|im_start|>assistant\n{previous}<|im_end|>\n")
    parts.append(f"<|im_start|>user\n{user}")
    return "".join(parts)


def is_end_token(token: str, raw: bytes) -> bool:
    """A control token (llama.cpp prints those as no bytes: <|im_end|>, <|endoftext|>) or one that
    opens with a sentence end ("?", ".\\n"); an ellipsis or comma does not end anything."""
    if not raw:
        return True
    head = token.lstrip(" ")
    return head[:1] in ENDS and not head.startswith("..")


def p_finished(top: list[dict[str, Any]], *, punctuation: bool = True) -> float:
    """P(the message ends here) from llama.cpp's top_logprobs of the next token."""
    total = 0.0
    for entry in top:
        raw = bytes(entry.get("bytes") or [])
        token = str(entry.get("token", ""))
        ends = is_end_token(token, raw) if punctuation else not raw
        if ends:
            total += math.exp(float(entry["logprob"]))
    return min(1.0, max(0.0, total))


class TextTurn:
    """The embedded LLM's P(finished) for a transcript; one small llama.cpp context of its own."""

    def __init__(self, model_path: Path, threads: int = 1, context: int = CONTEXT) -> None:
        self.model_path = Path(model_path)
        self.threads = max(1, threads)
        self.context = context
        self._server: Any = None
        self._lock = asyncio.Lock()
        self.last_ms = 0.0  # time the last judgement took

    @classmethod
    def beside(cls, llm: LocalLLM) -> TextTurn:
        """On the model file and threads of a LocalLLM (which need not be started)."""
        path, _ = resolve_model(llm.model_name, llm.cache)
        return cls(path, threads=llm.threads)

    @property
    def ready(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._load)

    def load_sync(self) -> TextTurn:
        if self._server is None:
            self._server = self._load()
        return self

    def _load(self) -> Any:
        import xllamacpp  # heavy import, only when this engine is used

        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_ctx = self.context
        params.n_parallel = 1
        params.n_predict = 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = self.threads
        params.cpuparams.poll = params.cpuparams_batch.poll = 0  # no spinning between calls (as LocalLLM)
        # The weights straight from the mapped file, shared with the reply engine's mapping; llama.cpp's
        # repacked CPU copy would be a second private copy of most of them, for no gain on short prompts.
        params.no_extra_bufts = True
        params.cache_prompt = True  # a growing transcript evaluates only its new words
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [secrets.token_urlsafe(24)]  # its HTTP listener is locked; the call API needs no key
        params.ui = False
        params.endpoint_slots = False
        params.verbosity = 1
        started = time.monotonic()
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            raise EngineError(STAGE, f"llama.cpp could not load {self.model_path}: {exc}") from exc
        log.info(
            "text turn: loaded %s (n_ctx %d, %d threads) in %.2f s",
            self.model_path.name,
            self.context,
            self.threads,
            time.monotonic() - started,
        )
        return server

    def top_sync(self, prompt: str) -> list[dict[str, Any]]:
        """Blocking: the next token's top-k after `prompt` (llama.cpp's top_logprobs)."""
        request = {"prompt": prompt, "n_predict": 1, "n_probs": TOP_K, "temperature": 0.0, "cache_prompt": True}
        result = self.load_sync()._server.handle_completions(request)
        if isinstance(result, dict) and result.get("error"):
            error = result["error"]
            raise EngineError(STAGE, f"llama.cpp: {error.get('message', error) if isinstance(error, dict) else error}")
        try:
            return list(result["choices"][0]["logprobs"]["content"][0]["top_logprobs"])
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineError(STAGE, f"llama.cpp returned no probabilities: {str(result)[:200]}") from exc

    def complete_sync(self, text: str, previous_reply: str = "") -> float:
        """Blocking: P(the user's message is finished after `text`), in [0, 1]."""
        if not normalize(text):
            return 0.0  # no words: nothing was said that could be over
        started = time.monotonic()
        p = p_finished(self.top_sync(render(text, previous_reply)))
        self.last_ms = (time.monotonic() - started) * 1000
        return p

    async def complete(self, text: str, previous_reply: str = "") -> float:
        """P(finished) for `text`, off the event loop."""
        if self._server is None:
            await self.start()
        return await asyncio.to_thread(self.complete_sync, text, previous_reply)

    async def close(self) -> None:
        holder = [self._server]
        self._server = None
        await asyncio.to_thread(holder.clear)  # ~Server joins its threads: not on the loop
