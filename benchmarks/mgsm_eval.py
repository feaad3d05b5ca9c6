"""Benchmark: evaluating MGSM on the embedded model, and the share of the time spent outside generation.

Runs `polyrise.evaluation.run_task` (load → prompt → batched generation → extraction → scoring → writing) on
MGSM problems of one language and times the engine's `complete` calls inside it. Target: < 5% outside generation.

    python benchmarks/mgsm_eval.py [--source ../shared/data/mgsm/{lang}.jsonl] [--lang en] [--limit 250]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from polyrise.evaluation.math import MathTask
from polyrise.generation import Generator
from polyrise.generation.cache import GenerationCache
from polyrise.generation.hf import HFEngine
from polyrise.models import resolve_model
from polyrise.versions import format_versions, library_versions

DEFAULT_SOURCE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mgsm" / "{lang}.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--limit", type=int, default=250)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from polyrise.evaluation import run_task

    engine = HFEngine(resolve_model(args.model), batch_size=args.batch_size)
    generating = 0.0
    complete = engine.complete

    def timed_complete(requests, params):  # the time spent in generation proper
        nonlocal generating
        start = time.perf_counter()
        try:
            return complete(requests, params)
        finally:
            generating += time.perf_counter() - start

    engine.complete = timed_complete  # type: ignore[method-assign]
    task = MathTask(source=args.source, limit=args.limit, max_new_tokens=args.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        generator = Generator(engine, GenerationCache(Path(tmp) / "cache.sqlite"))  # empty cache: everything runs
        start = time.perf_counter()
        scores = run_task(task, generator, [args.lang], Path(tmp), "model")
        total = time.perf_counter() - start
    s = scores[args.lang]
    print(f"versions: {format_versions(library_versions())}")
    print(f"MGSM {args.lang}: {s['n']} problems, {args.max_new_tokens} max new tokens, batch {args.batch_size}")
    print(f"accuracy {s['accuracy']:.3f}, unparseable {s['unparseable']}, off-target {s['off_target']:.3f}")
    print(f"total {total:.1f} s, generation {generating:.1f} s, outside generation {total - generating:.2f} s")
    print(f"share outside generation: {(total - generating) / total:.2%} (target < 5%)")


if __name__ == "__main__":
    main()
