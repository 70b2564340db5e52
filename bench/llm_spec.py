"""`python -m bench.llm_spec`: does llama.cpp's speculative decoding speed up the embedded LLM here?

The first sentence of a reply is what the voice waits for, and on a small CPU the LLM writes it
slowest of all the stages. llama.cpp can draft tokens and verify several in one pass: with a small
draft model of the same family (the 0.5B for the 1.5B) or by n-gram lookup in the prompt (answers
repeat the question's words: "The capital of Italy is ..."). This times the first sentence (the
product's own splitter) and the whole reply of the first `--questions` questions of the evaluation
set, greedy, one after another, per mode: none, ngram_simple, ngram_mod, draft with --draft-max
tokens. Each mode loads its own model; run it on an otherwise idle machine.

On the 2-core reference machine (2026-12-01), 1.5B, 16 questions, first sentence p50: none 959 ms,
ngram_simple 926, ngram_mod 1008, draft(4) 1443, draft(8) 1850 ms: nothing to gain, so the product
does not use it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.eval_set import QUESTIONS
from pipeline.conversation import DEFAULT_SYSTEM_PROMPT
from pipeline.engines.local_llm import LocalLLM, resolve_model
from pipeline.engines.models import cache_dir
from pipeline.sentences import SentenceSplitter

MODES = ["none", "ngram_simple", "ngram_mod", "draft"]


def speculative(mode: str, draft_max: int, threads: int) -> Any:
    """A wrapper of xllamacpp.Server that turns on `mode` in the params it is given."""
    import xllamacpp

    server = xllamacpp.Server

    def make(params: Any, *args: Any, **kwargs: Any) -> Any:
        kinds = xllamacpp.common_speculative_type
        if mode == "draft":
            path, _ = resolve_model("default", cache_dir())
            params.speculative.types = [kinds.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
            params.speculative.draft.mparams.path = str(path)
            params.speculative.draft.cpuparams.n_threads = threads
            params.speculative.draft.cpuparams_batch.n_threads = threads
            params.speculative.draft.n_max = draft_max
        elif mode != "none":
            params.speculative.types = [getattr(kinds, "COMMON_SPECULATIVE_TYPE_" + mode.upper())]
        return server(params, *args, **kwargs)

    return make


async def time_mode(model: str, mode: str, questions: int, draft_max: int, threads: int) -> dict[str, Any]:
    import xllamacpp

    original = xllamacpp.Server
    xllamacpp.Server = speculative(mode, draft_max, threads)
    try:
        llm = LocalLLM(model, threads=threads, max_tokens=100, parallel=1)
        await llm.start()
    finally:
        xllamacpp.Server = original
    firsts, wholes = [], []
    try:
        for question in QUESTIONS[:questions]:
            messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question.text}]
            splitter, first = SentenceSplitter(), None
            started = time.monotonic()
            async for delta in llm.stream(messages):
                if first is None and splitter.feed(delta):
                    first = time.monotonic() - started
            whole = time.monotonic() - started
            firsts.append(1000 * (first or whole))
            wholes.append(1000 * whole)
    finally:
        await llm.close()
    return {"mode": mode, "first_p50": statistics.median(firsts), "whole_p50": statistics.median(wholes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="quality", help="LLM_MODEL preset (default: quality, the 1.5B)")
    parser.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--draft-max", type=int, default=4, help="tokens the draft model proposes at a time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for mode in args.modes:
        r = asyncio.run(time_mode(args.model, mode, args.questions, args.draft_max, args.threads))
        print(f"{r['mode']:>13}: first sentence p50 {r['first_p50']:.0f} ms, whole reply p50 {r['whole_p50']:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
