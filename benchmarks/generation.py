"""Benchmark: polyrise's HF engine vs a plain one-prompt-at-a-time `model.generate` loop.

The same 32 chat prompts (the built-in quickstart + held-out English prompts), greedy, 64 new tokens, on the
embedded SmolLM2-135M-Instruct. Prints tokens/s of each, the speed-up ratio and how many outputs agree.

    python benchmarks/generation.py [--prompts 32] [--max-new-tokens 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from polyrise.config import PromptSource, SamplingSettings
from polyrise.generation import ChatRequest
from polyrise.generation.hf import HFEngine
from polyrise.models import resolve_model
from polyrise.prompt_sets import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts = [p.instruction for p in load_prompts(PromptSource(source="builtin:quickstart"), ["en"])]
    texts += [p.instruction for p in load_prompts(PromptSource(source="builtin:heldout"), ["en"])]
    texts = (texts * (args.prompts // len(texts) + 1))[: args.prompts]
    engine = HFEngine(resolve_model(args.model), batch_size=args.batch_size)
    tok, model = engine.tokenizer, engine.model
    requests = [ChatRequest.user(t) for t in texts]
    params = SamplingSettings(max_new_tokens=args.max_new_tokens)

    def count(outputs: list[str]) -> int:
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs)

    engine.complete(requests[:2], params)  # warm-up (thread pools, allocator)

    start = time.perf_counter()
    baseline = []
    with torch.inference_mode():
        for r in requests:
            ids = tok(engine.render(r), return_tensors="pt", add_special_tokens=False).to(model.device)
            out = model.generate(
                **ids, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
            baseline.append(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    base_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = engine.complete(requests, params)
    engine_s = time.perf_counter() - start

    base_tps, engine_tps = count(baseline) / base_s, count(batched) / engine_s
    same = sum(a == b for a, b in zip(baseline, batched, strict=True))
    print(
        f"device {model.device}, torch threads {torch.get_num_threads()}, {len(requests)} prompts, "
        f"{args.max_new_tokens} new tokens, batch size {args.batch_size}"
    )
    print(f"baseline (one prompt at a time, model.generate): {base_s:7.1f} s  {base_tps:8.1f} tokens/s")
    print(f"polyrise HFEngine:                               {engine_s:7.1f} s  {engine_tps:8.1f} tokens/s")
    print(f"ratio: {engine_tps / base_tps:.2f}x   identical outputs: {same}/{len(requests)}")


if __name__ == "__main__":
    main()
