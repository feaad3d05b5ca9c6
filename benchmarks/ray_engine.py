"""Benchmark: the Ray path (`cluster:`, `generation.ray.RayEngine`) vs the local HF engine on the same requests.

The same N chat prompts (the built-in quickstart + held-out English prompts, repeated to reach N), greedy, the same
max_new_tokens, through a `Generator` with a fresh empty cache per timed run (what a stage does), on the embedded
SmolLM2-135M-Instruct. Rows:

1. local: `HFEngine` in this process (the baseline);
2. Ray, 1 replica: a one-node Ray cluster started by this script (`ray.init(num_cpus=C)`), one actor holding the
   same HF engine; the overhead of the Ray path (pickling requests and results, actor calls);
3. Ray, 2 replicas on the same node: what splitting one machine's cores between two model copies gives (each
   replica's torch takes the cores the others leave free, as the HF engine's `ThreadPolicy` does).

The engines are started before the clock (their start is printed); then the rows are timed `--repeats` times in
interleaved rounds of alternating order, and the median run is reported with each row's ratio to the local engine
measured in the same round. Outputs are compared with the local engine's.

    python benchmarks/ray_engine.py [--prompts 32] [--max-new-tokens 32] [--batch-size 8] [--repeats 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import ray

from polyrise.generation import ChatRequest, Engine, Generator, open_engine
from polyrise.generation.cache import GenerationCache
from polyrise.settings import ClusterSettings, EngineSettings, ModelSettings, PromptSource, SamplingSettings
from polyrise.sources import load_prompts
from polyrise.versions import format_versions, library_versions

LOCAL = "local HFEngine"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the one-node Ray cluster")
    args = parser.parse_args()
    print(f"versions: {format_versions(library_versions())}")

    texts: list[str] = []
    for source in ("builtin:quickstart", "builtin:heldout"):
        texts += [p.instruction for p in load_prompts(PromptSource(source=source), ["en"], "en")]
    requests = [
        ChatRequest.user(texts[i % len(texts)] + ("" if i < len(texts) else f" ({i})")) for i in range(args.prompts)
    ]
    params = SamplingSettings(max_new_tokens=args.max_new_tokens)
    settings, model = EngineSettings(batch_size=args.batch_size), ModelSettings(spec=args.model)

    ray.init(num_cpus=args.cpus, log_to_driver=False, logging_level=logging.WARNING, include_dashboard=False)
    engines: dict[str, Engine] = {}
    for name, replicas in ((LOCAL, None), ("Ray, 1 replica", 1), ("Ray, 2 replicas", 2)):
        started = time.perf_counter()
        # half a CPU each: the idle replicas of one row hold their share while the other row runs
        cluster = ClusterSettings(replicas=replicas, cpus_per_replica=args.cpus / 4) if replicas else None
        engines[name] = open_engine(settings, model, cluster)
        print(f"{name}: engine start {time.perf_counter() - started:.1f} s")

    seconds: dict[str, list[float]] = {name: [] for name in engines}
    outputs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, engine in enumerate(engines.values()):  # warm-up, untimed
            Generator(engine, GenerationCache(Path(tmp) / f"warm-{k}.sqlite")).generate(requests[:4], params)
        for r in range(args.repeats):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                cache = GenerationCache(Path(tmp) / f"{r}-{order.index(name)}.sqlite")
                start = time.perf_counter()
                outputs[name] = Generator(engines[name], cache).generate(requests, params)
                seconds[name].append(time.perf_counter() - start)
                print(f"round {r + 1}: {name}: {seconds[name][-1]:.2f} s")

    print(f"\n{args.prompts} prompts, {args.max_new_tokens} new tokens, batch {args.batch_size}, {args.repeats} rounds")
    print("| row | runs (s) | median s | ratio to local (medians) | median of per-round ratios | identical to local |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(seconds[LOCAL])
    for name, runs in seconds.items():
        per_round = statistics.median(s / b for s, b in zip(runs, seconds[LOCAL], strict=True))
        same = sum(a == b for a, b in zip(outputs[name], outputs[LOCAL], strict=True))
        print(
            f"| {name} | {' / '.join(f'{s:.2f}' for s in runs)} | {statistics.median(runs):.2f} | "
            f"{statistics.median(runs) / base:.3f}x | {per_round:.3f}x | {same}/{len(requests)} |"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
