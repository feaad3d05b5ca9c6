"""Benchmark: polyrise's DPO + NLL training path vs TRL's `DPOTrainer` with its defaults, same pairs, same settings.

Rows, each in its own process (so each has its own peak RSS), in this order:

1. TRL defaults: `trl.DPOTrainer` as TRL runs it out of the box (a reference forward in every step, chosen and
   rejected as two rows padded to the longest; full fine-tuning keeps a second, frozen model copy), with the run's
   hyperparameters (`training` of `--config`: learning rate, batch size, beta, NLL weight, max length, LoRA);
2. polyrise, cold: `polyrise.training.dpo.PackedDPOTrainer` with an empty reference cache (its reference pass,
   timed separately, is part of the run);
3. polyrise, warm: the same with the cache the cold run filled (a resumed run, another beta, a study control).

Both trainers get the same data order (seed), no checkpoints, a loss logged every step. Per row: seconds per step
(median of the steps, the first excluded as warm-up), the setup (tokenizing; for polyrise also the reference pass,
which a warm cache skips), the whole `train()`, peak RSS,
and the FLOPs of one step counted by `torch.utils.flop_counter` (forward + backward + TRL's reference forward, as
each path executes them, padding included) against this CPU's matmul throughput measured in the same run (the roof).

    python benchmarks/training.py [--pairs runs/quickstart/iter_0/pairs.jsonl] [--config examples/quickstart.yaml]
                                  [--method lora|full] [--steps 10]

The pairs come from a run (`polyrise run examples/quickstart.yaml` writes the default file).
The last line reads `speed-up vs TRL defaults: N.NNx, max per-step loss difference: X`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from polyrise.versions import format_versions, library_versions

ROWS = {"trl": "TRL DPOTrainer, defaults", "cold": "polyrise, empty reference cache", "warm": "polyrise, warm cache"}


def matmul_roof(seconds: float = 3.0) -> float:
    """This CPU's fp32 matmul throughput (FLOP/s) on a transformer-MLP-shaped product, all threads."""
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return done * 2 * 1024 * 576 * 1536 / (time.perf_counter() - start)


def _row(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train `args.steps` steps the `kind` way in this process; what the parent prints."""
    from transformers import TrainerCallback
    from trl import DPOTrainer

    from polyrise.config import load_config
    from polyrise.generation.cache import GenerationCache
    from polyrise.io import read_jsonl
    from polyrise.models import load_model, resolve_model
    from polyrise.records import PreferencePair
    from polyrise.training.dpo import PackedDPOTrainer, _preference_dataset, dpo_config
    from polyrise.training.runs import load_for_training

    cfg = load_config(args.config)
    settings = cfg.training.model_copy(update={"method": args.method})
    pairs = read_jsonl(args.pairs, PreferencePair)
    base = resolve_model(cfg.model.spec)
    tokenizer, model, peft_config = load_for_training(base, settings, "auto", None, False)
    overrides = {"max_steps": args.steps, "save_strategy": "no", "disable_tqdm": True}
    common = {"model": model, "train_dataset": _preference_dataset(pairs), "processing_class": tokenizer}
    common["peft_config"] = peft_config
    start = time.perf_counter()
    if kind == "trl":
        ref = None if peft_config else load_model(base, dtype="float32")
        trainer = DPOTrainer(
            ref_model=ref,
            args=dpo_config(settings, args.tmp / kind, cfg.seed, **overrides, precompute_ref_log_probs=False),
            **common,
        )
    else:
        cache = GenerationCache(args.tmp / f"reference-{args.method}.sqlite")
        key = json.dumps([base.fingerprint(), str(model.dtype)])
        trainer = PackedDPOTrainer(
            args=dpo_config(settings, args.tmp / kind, cfg.seed, **overrides),
            reference_cache=cache,
            reference_key=key,
            **common,
        )
    setup = time.perf_counter() - start

    batch = next(iter(trainer.get_train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)).backward()
    trainer.model.zero_grad(set_to_none=True)

    times: list[float] = []

    class Steps(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.began)

    trainer.add_callback(Steps())
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    return {
        "setup_s": setup,  # model load is outside; for polyrise this holds the reference pass
        "train_s": train_s,
        "step_s": times,
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "flops_per_step": counter.get_total_flops(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=Path("runs/quickstart/iter_0/pairs.jsonl"))
    parser.add_argument("--config", type=Path, default=Path("examples/quickstart.yaml"))
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print("RESULT " + json.dumps(_row(args.row, args)))
        return
    if not args.pairs.is_file():
        sys.exit(f"{args.pairs}: no such pairs file (run `polyrise run examples/quickstart.yaml` first)")

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"# versions: {format_versions(library_versions())}")
    print(f"# pairs {args.pairs}, config {args.config}, method {args.method}, {args.steps} steps")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ROWS:
            cmd = [sys.executable, __file__, "--row", kind, "--tmp", tmp, "--steps", str(args.steps)]
            cmd += ["--pairs", str(args.pairs), "--config", str(args.config), "--method", args.method]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{ROWS[kind]} failed:\n{done.stderr[-3000:]}")
            results[kind] = json.loads(lines[-1].removeprefix("RESULT "))
    roof = matmul_roof()

    print(f"matmul roof: {roof / 1e9:.1f} GFLOP/s (fp32, 1024x576 @ 576x1536)")
    print("| row | s/step (median) | setup s | train() s | GFLOP/step | share of roof | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for kind, label in ROWS.items():
        r = results[kind]
        step = statistics.median(r["step_s"][1:] or r["step_s"])
        flops = r["flops_per_step"]
        print(
            f"| {label} | {step:.2f} | {r['setup_s']:.1f} | {r['train_s']:.1f} | {flops / 1e9:.0f} "
            f"| {flops / step / roof:.0%} | {r['peak_rss_mb']:.0f} |"
        )
    print("per-step loss (TRL | polyrise cold | polyrise warm):")
    for i, losses in enumerate(zip(*(results[k]["losses"] for k in ROWS), strict=True), 1):
        print(f"  step {i}: " + " | ".join(f"{x:.6f}" for x in losses))
    diff = max(
        abs(a - b)
        for k in ("cold", "warm")
        for a, b in zip(results["trl"]["losses"], results[k]["losses"], strict=True)
    )
    median = {k: statistics.median(results[k]["step_s"][1:] or results[k]["step_s"]) for k in ROWS}
    cold_total = results["cold"]["setup_s"] + results["cold"]["train_s"]
    trl_total = results["trl"]["setup_s"] + results["trl"]["train_s"]
    print(f"whole training incl. setup and reference pass, cold cache: {trl_total / cold_total:.2f}x")
    print(f"speed-up vs TRL defaults: {median['trl'] / median['cold']:.2f}x, max per-step loss difference: {diff:.2e}")


if __name__ == "__main__":
    main()
