"""Benchmark: 4-shot classification scored with shared context KV vs per-pair log-likelihoods.

`fewshot.classify` (`constrain: loglik`, the `classify` task's default `normalize: chars`) on 48 XNLI-like
premise/hypothesis items written below (16 premises x entailment / neutral / contradiction), each query after 4
demonstrations drawn from the others, so every prompt is scored against 3 labels (" contradiction",
" entailment", " neutral": one or two tokens). Rows, on the embedded SmolLM2-135M-Instruct:

1. per pair: `HFEngine.loglikelihood(..., share_contexts=False)`, every (prompt, label) pair run whole
   (what the engine did before context sharing);
2. shared: `HFEngine.loglikelihood`, each prompt run once and its labels scored on its KV cache.

Both go through `classify` and a `Generator` with a fresh, empty cache for every timed run, so nothing is served
from a cache. Warmed up, then timed `--repeats` times in interleaved rounds of alternating order; medians
reported, with the median of per-round ratios and the ratio of CPU seconds (this process's: the steadier measure
on a shared machine). Scores are compared label by label (the raw summed log-probs).

    python benchmarks/choice.py [--batch-size 16] [--repeats 3] [--shots 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from polyrise.evaluation.fewshot import ClassifyItem, ClassifyPrediction, DemoPool, build_prompt, classify
from polyrise.generation import Generator, LogLikelihood
from polyrise.generation.cache import GenerationCache
from polyrise.generation.hf import HFEngine
from polyrise.models import resolve_model
from polyrise.versions import format_versions, library_versions

# (premise, entailed, neutral, contradicted hypothesis)
PREMISES = [
    ("A man is playing a guitar on a stage.", "A man is making music.", "The man is a famous singer.",
     "The man is asleep in his bed."),
    ("Two children are building a sandcastle at the beach.", "Kids are playing outside.",
     "The children are brother and sister.", "The children are sitting in a classroom."),
    ("A woman is reading a newspaper on the train.", "A woman is on a train.",
     "The woman is going to work.", "The woman is driving a car."),
    ("The restaurant was full of people celebrating a birthday.", "People were in the restaurant.",
     "The birthday was for a child.", "The restaurant was empty."),
    ("A dog is running through the snow with a stick.", "An animal is outside.",
     "The dog belongs to a farmer.", "The dog is sleeping by the fire."),
    ("The old bridge was closed for repairs last week.", "The bridge could not be used.",
     "The repairs cost a lot of money.", "The bridge was open all week."),
    ("A chef is cutting vegetables in a busy kitchen.", "Someone is preparing food.",
     "The chef is making soup.", "The kitchen is closed and dark."),
    ("Several students are studying in the library.", "People are in the library.",
     "The students have an exam tomorrow.", "The library has no visitors."),
    ("The farmer harvested his wheat before the storm.", "The wheat was harvested.",
     "The storm destroyed the barn.", "The farmer never harvested anything."),
    ("A girl in a red coat is feeding ducks at the pond.", "A girl is near the water.",
     "The girl visits the pond every day.", "The girl is wearing a blue coat."),
    ("The team celebrated after winning the final match.", "The team won a match.",
     "The match was played in the rain.", "The team lost the final."),
    ("An elderly couple is dancing in the town square.", "Two people are dancing.",
     "The couple has been married for fifty years.", "Nobody is dancing in the square."),
    ("The museum opened a new exhibition about ancient Egypt.", "The museum has a new exhibition.",
     "The exhibition will be popular with tourists.", "The museum closed its doors forever."),
    ("A cyclist is riding up a steep mountain road.", "A person is on a bicycle.",
     "The cyclist is training for a race.", "The cyclist is riding down a flat road."),
    ("The baker sold all of his bread before noon.", "The bread was sold.",
     "The baker opens at six in the morning.", "The baker sold no bread at all."),
    ("A group of friends is hiking through a forest.", "People are walking outdoors.",
     "The friends are on holiday.", "The friends are watching television at home."),
]  # fmt: skip
LABELS = ("entailment", "neutral", "contradiction")


def items() -> list[ClassifyItem]:
    """48 items: each premise with its entailed, neutral and contradicted hypothesis."""
    return [
        ClassifyItem(id=f"{p}{label[0]}", lang="en", text=f"{premise}\nHypothesis: {hypothesis}", label=label)
        for p, (premise, *hypotheses) in enumerate(PREMISES)
        for label, hypothesis in zip(LABELS, hypotheses, strict=True)
    ]


class PerPairEngine:
    """The HF engine with context sharing off: every pair run whole, the baseline."""

    def __init__(self, engine: HFEngine) -> None:
        self.engine = engine
        self.fingerprint = engine.fingerprint
        self.batch_size = engine.batch_size

    def loglikelihood(self, requests: Sequence[tuple[str, str]], max_tokens: int | None = None) -> list[LogLikelihood]:
        return self.engine.loglikelihood(requests, max_tokens, share_contexts=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    engine = HFEngine(resolve_model(args.model), batch_size=args.batch_size)
    queries = items()
    scratch = Path(tempfile.mkdtemp(prefix="polyrise-bench-choice-"))
    runs = 0

    def score(which: HFEngine | PerPairEngine, part: list[ClassifyItem]) -> list[ClassifyPrediction]:
        nonlocal runs
        runs += 1
        generator = Generator(which, GenerationCache(scratch / f"run{runs}.sqlite"))  # empty: nothing cached
        return classify(generator, part, k=args.shots, demos=queries, seed=0, normalize="chars")

    rows = {"per pair": PerPairEngine(engine), "shared": engine}
    load_before = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, {engine.model.dtype}, load average {load_before[0]:.2f}"
    )
    print(f"versions: {format_versions(library_versions())}")
    draw = DemoPool(queries).draw
    prompts = [build_prompt(q, draw(q, args.shots, seed=0)) for q in queries]  # what `classify` builds
    lengths = [len(engine.tokenizer(p)["input_ids"]) for p in prompts]
    labels = {label: len(engine.tokenizer(" " + label)["input_ids"]) for label in LABELS}
    print(f"prompt tokens: mean {statistics.mean(lengths):.0f}, max {max(lengths)}; label tokens: {labels}")
    for name, which in rows.items():
        started = time.perf_counter()
        score(which, queries[:6])
        print(f"warm-up {name}: {time.perf_counter() - started:.1f} s")

    seconds: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    outputs: dict[str, list[ClassifyPrediction]] = {}
    for r in range(args.repeats):  # interleaved rounds, alternating order, so drifting load hits both alike
        for name in list(rows) if r % 2 == 0 else list(rows)[::-1]:
            started, cpu_started = time.perf_counter(), time.process_time()
            outputs[name] = score(rows[name], queries)
            seconds[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
        print(f"round {r + 1}: " + ", ".join(f"{name} {seconds[name][-1]:.2f} s" for name in rows))

    base, shared = outputs["per pair"], outputs["shared"]
    same = sum(a.pred == b.pred for a, b in zip(base, shared, strict=True))
    diff = max(abs(a.scores[label] - b.scores[label]) for a, b in zip(base, shared, strict=True) for label in LABELS)
    accuracy = sum(p.correct for p in shared) / len(shared)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    paired = statistics.median(a / b for a, b in zip(seconds["per pair"], seconds["shared"], strict=True))
    print()
    print(f"{len(queries)} queries x {len(LABELS)} labels, {args.shots}-shot, batch size {args.batch_size}")
    for name in rows:
        runs_s = " / ".join(f"{s:.2f}" for s in seconds[name])
        print(f"{name}: median {median[name]:.2f} s (runs {runs_s}), CPU {statistics.median(cpu[name]):.2f} s")
    cpu_ratio = statistics.median(cpu["per pair"]) / statistics.median(cpu["shared"])
    print(f"median of per-round ratios: {paired:.2f}x; CPU-time ratio: {cpu_ratio:.2f}x; accuracy: {accuracy:.3f}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(
        f"speed-up vs per-pair scoring: {median['per pair'] / median['shared']:.2f}x, "
        f"identical predictions: {same}/{len(queries)}, max |diff|: {diff:.2g}"
    )


if __name__ == "__main__":
    main()
