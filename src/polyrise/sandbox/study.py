"""Seeded sandbox studies: the unmodified pipeline on `polyrise sandbox build` worlds, over seeds and controls.

Every (seed, variant) is an ordinary `polyrise run` of a base config (e.g. `examples/sandbox.yaml`) whose model,
prompts and MGSM evaluation point at that seed's sandbox, with the variant's settings changed; the summary is
the exact-match task accuracy per variant, language and iterate as mean ± sample sd over the seeds, the reward's
accuracy per variant and iteration, the off-target rate of the answers in each clone, and each variant's wall
time and tokens generated. The `icr` variants run Implicit Cross-Lingual
Rewarding instead: the policy is the sandbox's English-aligned `aligned/`, the reference its `model/`. The
`wrong-language-dpo` and GRPO variants judge a clone's language by its word list (`vocabulary/<code>.txt` in the
study dir, the clones' lexicons: the same for every seed).
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from polyrise.config import RunConfig, load_config
from polyrise.console import make_console
from polyrise.context import RunSettings
from polyrise.errors import PolyriseError
from polyrise.evaluation.fidelity import SavedOutput
from polyrise.io import atomic_open, read_jsonl, write_json
from polyrise.langid import LangIdSettings
from polyrise.layout import EVAL_STAGE, HELDOUT_STAGE, RunLayout
from polyrise.methods import load_method
from polyrise.methods.wrong_language_dpo import in_language, read_vocabularies
from polyrise.reporting import collect_scores, model_order
from polyrise.sandbox.build import SANDBOX_JSON, AlignSettings, build_sandbox
from polyrise.sandbox.world import make_clones
from polyrise.settings import MAX_COUNT
from polyrise.training.settings import TrainingSettings
from polyrise.versions import format_versions

NO_FILTERS = {"min_length_ratio": 1e-3, "max_length_ratio": 1e3, "repeated_line_limit": MAX_COUNT}
"""Pair filters at their loosest bounds: they keep every pair whose lengths differ less than a thousandfold (empty
and identical pairs, which carry no preference, still drop)."""
ICR = "implicit-cross-lingual"
WRONG_LANGUAGE = "wrong-language-dpo"
GRPO = "cross-lingual-grpo"
GRPO_TRAINING = {"num_generations": 4, "beta": 0.04, "temperature": 1.0}
"""The GRPO variants' trainer settings besides the base config's shared ones (the completions as long as the base's
answers): groups of 4 completions, DeepSeekMath's KL weight, sampling at temperature 1."""
VARIANTS: dict[str, dict[str, Any]] = {
    "rewarding": {},
    "swapped": {"training": {"swap_preferences": True}},
    "nll0": {"training": {"nll_weight": 0.0}},
    "no-filters": {"filters": NO_FILTERS},
    "icr": {"method": ICR, "implicit_reward": {"reference_after_first": "fixed"}},
    "icr-previous": {"method": ICR, "implicit_reward": {"reference_after_first": "previous"}},
    "icr-random": {"method": ICR, "implicit_reward": {"pairing": "random"}},
    "icr-no-length-control": {"method": ICR, "implicit_reward": {"length_control": False}},
    "icr-native-instruction": {"method": ICR, "implicit_reward": {"variant": "multilingual"}},
    "wrong-language-dpo": {"method": WRONG_LANGUAGE, "wrong_language": {"rejected": "english"}},
    "cross-lingual-grpo": {
        "method": GRPO,
        "training": GRPO_TRAINING | {"rewards": {"language": 1.0, "english_agreement": 1.0}},
    },
    "grpo-gold": {"method": GRPO, "training": GRPO_TRAINING | {"rewards": {"language": 1.0, "gold": 1.0}}},
}
"""Changes to the base config: the method as configured (`rewarding`), its controls, Implicit Cross-Lingual
Rewarding (`icr`: the reward's reference fixed at the aligned model's base; `icr-previous`: the previous iterate
after M0), its control pairing two of the k samples at random (`icr-random`) and its ablations (no length control;
the native instead of the English instruction), wrong-language DPO (M(t)'s English answer rejected), cross-lingual
GRPO with the label-free rewards (language + agreement with M(t)'s English answer) and its oracle control (language
+ the gold answer)."""


def vocabulary_spec(out: Path) -> Path:
    """Where a study in `out` keeps the clones' word lists (`write_vocabularies`), `{lang}` for the code."""
    return out / "vocabulary" / "{lang}.txt"


def write_vocabularies(out: Path) -> None:
    """Each clone's words, one a line (its lexicon, lower-cased): how the wrong-language DPO and GRPO variants
    judge that an answer is in a clone."""
    for code, clone in make_clones().items():
        with atomic_open(str(vocabulary_spec(out)).replace("{lang}", code)) as fh:
            fh.write("".join(f"{w}\n" for w in sorted({w.lower() for w in clone.lexicon.values()})))


def source_variant(variant: str) -> str:
    """The plain variant of `variant`'s method (`icr` for the icr ablations, else `rewarding`)."""
    return "icr" if variant.startswith("icr") else "rewarding"


def variant_changes(variant: str) -> dict[str, Any]:
    """The config sections a study variant changes; an unknown name is an error listing the known ones."""
    if variant not in VARIANTS:
        raise PolyriseError(f"unknown study variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def study_config(base: RunConfig, sandbox_dir: Path, seed: int, variant: str, out: Path, iterations: int) -> RunConfig:
    """`base` with `variant`'s changes, run on the sandbox in `sandbox_dir` (its model, train prompts and eval set)."""
    info = json.loads((sandbox_dir / SANDBOX_JSON).read_text())
    data = base.model_dump(mode="json")
    for section, changes in variant_changes(variant).items():
        data[section] = {**(data.get(section) or {}), **changes} if isinstance(changes, dict) else changes
    method = load_method(data["method"])
    keep = set(RunSettings.model_fields) | set(method.sections)
    data = {key: value for key, value in data.items() if key in keep}  # the base's method's own sections go
    if not isinstance(base.training, method.training):  # another trainer: the shared keys, then the variant's
        shared = set(TrainingSettings.model_fields)
        changes = variant_changes(variant).get("training", {})
        data["training"] = {k: v for k, v in data["training"].items() if k in shared} | changes
    if data["method"] == WRONG_LANGUAGE:
        data["wrong_language"] = {**data["wrong_language"], "vocabulary": str(vocabulary_spec(out))}
    if data["method"] == GRPO:
        completion = {"max_completion_length": base.generation.answer.max_new_tokens}
        data["training"] = completion | data["training"] | {"vocabulary": str(vocabulary_spec(out))}
    icr = data["method"] == ICR
    if icr:  # the English-aligned policy against the model it was tuned from; k answers as long as the base's
        sampling = {"temperature": 0.9, "top_p": 1.0, "max_new_tokens": base.generation.answer.max_new_tokens}
        data["implicit_reward"] = {
            "sampling": sampling,
            **data["implicit_reward"],
            "reference": str(sandbox_dir / "model"),
        }
    data.update(
        name=f"seed{seed}-{variant}",
        output_dir=str(out / "runs"),
        seed=seed,
        iterations=iterations,
        model={**data["model"], "spec": str(sandbox_dir / ("aligned" if icr else "model"))},
        prompts={**data["prompts"], "source": str(sandbox_dir / "prompts" / "train.jsonl")},
        evaluation=[
            {
                "task": "mgsm",
                "source": str(sandbox_dir / "eval" / "{lang}.jsonl"),
                "langs": info["languages"],
                "max_new_tokens": next(
                    (getattr(t, "max_new_tokens", 48) for t in base.evaluation if t.task == "mgsm"), 48
                ),
            }
        ],
    )
    return RunConfig.model_validate(data)


def run_study(
    out: Path,
    base_config: Path,
    seeds: Sequence[int],
    variants: Sequence[str],
    iterations: int,
    console: Console | None = None,
    *,
    align_pairs: int | None = None,
) -> dict[str, Any]:
    """Build (or reuse) each seed's sandbox in `out/sandbox-seed<S>`, its English alignment on `align_pairs` pairs
    (default `AlignSettings`'), run every variant on it, and summarise all runs found in `out/runs`
    (`summarize_study`). A killed study resumes: sandboxes with a `sandbox.json` are reused (one aligned with
    another strength is an error: a study dir holds one) and the runs resume from their stage caches."""
    from polyrise.runner import run_pipeline

    console = console or make_console()
    for variant in variants:  # fail before any sandbox is built
        variant_changes(variant)
    base = load_config(base_config)
    align = AlignSettings() if align_pairs is None else AlignSettings(pairs=align_pairs)
    for seed in seeds:  # fail before any sandbox is built or run is started
        _check_alignment(out / f"sandbox-seed{seed}", align)
    write_vocabularies(out)
    configs = []
    for seed in seeds:
        sandbox_dir = out / f"sandbox-seed{seed}"
        if not (sandbox_dir / SANDBOX_JSON).is_file():
            console.print(f"[bold]building the sandbox for seed {seed}[/] (English alignment: {align.pairs} pairs)")
            build_sandbox(sandbox_dir, seed, align=align, console=console)
        ordered = sorted(variants, key=lambda v: v != source_variant(v))  # the controls reuse its generations
        configs += [(v, study_config(base, sandbox_dir, seed, v, out, iterations)) for v in ordered]
    for variant, cfg in configs:
        console.print(f"[bold]study run {cfg.name}[/] ({cfg.iterations} iterations)")
        _share_generations(out / "runs" / f"seed{cfg.seed}-{source_variant(variant)}", cfg.run_dir)
        run_pipeline(cfg, console)
    return summarize_study(out)


def _check_alignment(sandbox_dir: Path, align: AlignSettings) -> None:
    """An error if the sandbox in `sandbox_dir` exists with another English alignment than `align`."""
    path = sandbox_dir / SANDBOX_JSON
    if not path.is_file():
        return
    aligned = json.loads(path.read_text()).get("aligned", {})
    built = {key: aligned.get(key) for key in asdict(align)}
    if built != asdict(align):
        raise PolyriseError(
            f"{path}: its English alignment is {built}, not the {asdict(align)} asked for; "
            "a study dir holds one alignment strength"
        )


def _share_generations(source_run: Path, run_dir: Path) -> None:
    """Start a new control run with a copy of the same seed's `rewarding` (or `icr`) generation cache: before
    training, a control generates exactly what that run generated (cache keys hold the weights' fingerprint)."""
    source, target = source_run / "generations.sqlite", run_dir / "generations.sqlite"
    if run_dir == source_run or target.exists() or not source.is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".generations.sqlite.tmp"
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(tmp)) as dst:
        src.backup(dst)
    tmp.replace(target)


def method_tokens(manifest: dict[str, Any]) -> int | None:
    """The tokens a run's method generated (its stages' `generated_tokens`, the measurements not counted); None
    where no stage counted any (a run recorded before polyrise counted them; engines without a tokenizer)."""
    measurements = (EVAL_STAGE, HELDOUT_STAGE)  # alike in every variant
    stages = {name: e for name, e in manifest["stages"].items() if not name.split("/")[-1].startswith(measurements)}
    counted = [e["counts"]["generated_tokens"] for e in stages.values() if "generated_tokens" in e.get("counts", {})]
    return sum(counted) if counted else None


def off_target(run_dir: Path, vocabularies: dict[str, frozenset[str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Per (clone, M<k>): (off-target, judged) MGSM answers of the run (`iter_*/eval/mgsm_M<k>.jsonl`): an answer is
    off target unless every word of it is in its clone's word list (`in_language` with `min_share` 1); one without
    a word is not judged."""
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    layout = RunLayout(run_dir)
    paths = [p for t in layout.iterations() for p in sorted((layout.iter_dir(t) / "eval").glob("mgsm_M*.jsonl"))]
    for path in paths:
        label = path.stem.removeprefix("mgsm_")
        for row in read_jsonl(path, SavedOutput):
            if (words := vocabularies.get(row.lang)) is None:
                continue
            verdict = in_language(row.output, row.lang, LangIdSettings(), words)
            if verdict is not None:
                off, judged = counts.get((row.lang, label), (0, 0))
                counts[(row.lang, label)] = (off + (not verdict), judged + 1)
    return counts


REWARD_BESIDE = {
    "gap_baseline": (
        "The reward accuracy the language gap alone predicts (M<t>'s accuracies in en and L on the pairs' prompts, "
        "errors independent: the baseline the reward must beat, docs/pairs.md), mean ± sd over seeds"
    ),
    "both_right": "Share of the pairs with both sides right, mean ± sd over seeds",
    "both_wrong": "Share of the pairs with both sides wrong, mean ± sd over seeds",
}
"""The reward's measurements tabulated beside its accuracy, with their titles."""


def summarize_study(out: Path) -> dict[str, Any]:
    """Mean ± sd over seeds of MGSM accuracy for every variant, language and iterate in `out/runs/seed*-*`, of
    the accuracy of the reward each iteration trains on (pairs of M<t>'s answers, per pair row, with the informative
    pairs summed over seeds) and beside it the language gap's baseline and the both-right and both-wrong shares
    (`REWARD_BESIDE`, with the labelled pairs summed over seeds), of the off-target rate of the MGSM answers in
    each clone (`off_target`, the judged answers summed over seeds), of each run's wall time (its stages' seconds
    in the manifest) and the tokens its method generated (`method_tokens`), and of the English alignment's pair
    accuracies in the sandboxes' `sandbox.json`; writes
    `study.json`, `study.md` and `study.png` into `out`. Both name the library versions
    the sandboxes and runs were made with (`versions`: each distinct set once; none for runs from before versions
    were recorded)."""
    per_seed: dict[tuple[str, str, str], dict[int, float]] = {}
    reward: dict[tuple[str, str, str], dict[int, float]] = {}
    informative: dict[tuple[str, str, str], int] = {}
    beside: dict[str, dict[tuple[str, str, str], dict[int, float]]] = {metric: {} for metric in REWARD_BESIDE}
    labelled: dict[tuple[str, str, str], int] = {}
    seconds: dict[str, dict[int, float]] = {}
    tokens: dict[str, dict[int, float]] = {}
    off: dict[tuple[str, str, str], dict[int, float]] = {}
    judged: dict[tuple[str, str, str], int] = {}
    target: dict[tuple[str, str, str], dict[int, float]] = {}
    checked: dict[tuple[str, str, str], int] = {}
    clones = sorted(p.stem for p in (out / "vocabulary").glob("*.txt"))
    vocabularies = read_vocabularies(vocabulary_spec(out), clones)
    recorded = []
    alignment: dict[tuple[str, str], dict[int, float]] = {}
    align_pairs: set[int] = set()
    for path in sorted(out.glob(f"sandbox-seed*/{SANDBOX_JSON}")):
        info = json.loads(path.read_text())
        recorded.append(info.get("versions"))
        aligned = info.get("aligned", {})
        for split, measures in aligned.get("pair_accuracy", {}).items():
            align_pairs.add(aligned["pairs"])
            for measure, entry in measures.items():
                alignment.setdefault((measure, split), {})[info["seed"]] = entry["accuracy"]
    for run_dir in sorted((out / "runs").glob("seed*-*")):
        seed_part, variant = run_dir.name.split("-", 1)
        if not any(run_dir.glob("iter_*/eval/scores.json")):
            continue
        seed = int(seed_part[4:])
        scores = collect_scores(run_dir)
        for (lang, label), (n_off, n) in off_target(run_dir, vocabularies).items():
            off.setdefault((variant, lang, label), {})[seed] = n_off / n
            judged[(variant, lang, label)] = judged.get((variant, lang, label), 0) + n
        layout = RunLayout(run_dir)
        for t in layout.iterations():  # cross-lingual GRPO's agreement target, by gold
            path = layout.file(t, "grpo_stats.json")
            for lang, counts in (json.loads(path.read_text()) if path.is_file() else {}).items():
                if counts.get("english_checked"):
                    key = (variant, lang, f"M{t}")
                    target.setdefault(key, {})[seed] = counts["english_right"] / counts["english_checked"]
                    checked[key] = checked.get(key, 0) + counts["english_checked"]
        for task, into, metric in (("mgsm", per_seed, "accuracy"), ("reward", reward, "reward_accuracy")):
            for label, rows in scores.get(task, {}).items():
                for row, metrics in rows.items():
                    if not math.isnan(value := float(metrics[metric])):
                        into.setdefault((variant, row, label), {})[seed] = value
                        if task == "reward":
                            key = (variant, row, label)
                            informative[key] = informative.get(key, 0) + int(metrics["informative"])
                            labelled[key] = labelled.get(key, 0) + int(metrics["n"])
                            for name, by_key in beside.items():
                                if not math.isnan(other := float(metrics.get(name, math.nan))):
                                    by_key.setdefault(key, {})[seed] = other
        if (manifest := run_dir / "manifest.json").is_file():
            entries = json.loads(manifest.read_text())
            stages = entries["stages"].values()
            seconds.setdefault(variant, {})[seed] = sum(float(e.get("seconds", 0.0)) for e in stages)
            if (generated := method_tokens(entries)) is not None:
                tokens.setdefault(variant, {})[seed] = generated
            recorded += [e.get("versions") for e in stages]
    if not per_seed:
        raise PolyriseError(f"{out / 'runs'}: no evaluated study runs (seed<S>-<variant>) to summarise")
    change = {
        (variant, lang, label): {seed: acc - per_seed[(variant, lang, "M0")][seed] for seed, acc in values.items()}
        for (variant, lang, label), values in per_seed.items()
        if label != "M0" and (variant, lang, "M0") in per_seed
    }
    cells: dict[str, dict[str, object]] = {
        "|".join(key): {
            **_mean_sd(values),
            **{f"change_{k}": v for k, v in _mean_sd(change.get(key, {})).items() if key in change},
            "seeds": dict(sorted(values.items())),
        }
        for key, values in sorted(per_seed.items())
    }
    cells |= {
        "reward|" + "|".join(key): {
            **_mean_sd(values),
            "informative": informative[key],
            "seeds": dict(sorted(values.items())),
        }
        for key, values in sorted(reward.items())
    }
    cells |= {
        f"{name}|" + "|".join(key): {**_mean_sd(values), "pairs": labelled[key], "seeds": dict(sorted(values.items()))}
        for name, by_key in beside.items()
        for key, values in sorted(by_key.items())
    }
    cells |= {
        "off_target|" + "|".join(key): {
            **_mean_sd(values),
            "judged": judged[key],
            "seeds": dict(sorted(values.items())),
        }
        for key, values in sorted(off.items())
    }
    cells |= {
        "english_target|" + "|".join(key): {
            **_mean_sd(values),
            "prompts": checked[key],
            "seeds": dict(sorted(values.items())),
        }
        for key, values in sorted(target.items())
    }
    cells |= {
        f"{name}|{v}": {**_mean_sd(values), "seeds": dict(sorted(values.items()))}
        for name, by_variant in (("seconds", seconds), ("tokens", tokens))
        for v, values in by_variant.items()
    }
    cells |= {
        f"alignment|{measure}|{split}": {**_mean_sd(values), "seeds": dict(sorted(values.items()))}
        for (measure, split), values in alignment.items()
    }
    versions: list[dict[str, str]] = []  # the distinct ones, in the order first met
    for entry in recorded:
        if entry and entry not in versions:
            versions.append(entry)
    write_json(out / "study.json", cells | {"versions": versions})
    with atomic_open(out / "study.md") as fh:
        fh.write(_table("MGSM exact-match accuracy, mean ± sd over seeds (n = seeds with that iterate)", per_seed))
        fh.write("\n")
        fh.write(
            _table(
                "Change from M0 (the same seed's M0), mean ± sd over seeds [95% t-interval of the mean]",
                change,
                signed=True,
            )
        )
        if reward:
            fh.write("\n")
            title = (
                "Reward accuracy of the pairs each iteration trains on (M<t>: pairs of M<t>'s answers; row `en/L`: "
                "the English pairs built from L), mean ± sd over seeds; pairs: the informative pairs (exactly one "
                "side right) summed over seeds"
            )
            fh.write(_table(title, reward, pairs=informative))
            for name, by_key in beside.items():
                if by_key:
                    fh.write("\n")
                    fh.write(
                        _table(
                            f"{REWARD_BESIDE[name]}; pairs: labelled pairs summed over seeds", by_key, pairs=labelled
                        )
                    )
        if target:
            fh.write("\n")
            title = (
                "The English-agreement reward's target (M<t>'s greedy answer to the English prompt) right against "
                "the gold answer, share of the GRPO prompts with both, mean ± sd over seeds; prompts: summed over seeds"
            )
            fh.write(_table(title, target, pairs=checked, counted="prompts"))
        if off:
            fh.write("\n")
            title = (
                "Off-target rate of the MGSM answers in each clone (not every word in the clone's word list), mean ± "
                "sd over seeds; judged: the answers with a word, summed over seeds"
            )
            fh.write(_table(title, off, pairs=judged, counted="judged"))
        if seconds:
            fh.write(
                "\nCost per run, mean ± sd over seeds: wall time (the stages' seconds summed; a control starts from "
                "a copy of its seed's `rewarding` or `icr` generation cache) and the tokens its method generated "
                "(every iteration's answers, translations, samples and GRPO completions, cached ones included, the "
                "stop token not counted; the evaluations not counted; `-`: not recorded)\n\n"
            )
            fh.write("| variant | seconds | tokens generated |\n|---|---|---|\n")
            for variant, values in sorted(seconds.items(), key=lambda kv: (kv[0] != "rewarding", kv[0])):
                fh.write(f"| {variant} | {_cell(values, '.0f')} | {_cell(tokens.get(variant, {}), ',.0f')} |\n")
        if alignment:
            fh.write(
                f"\nThe English alignment ({', '.join(map(str, sorted(align_pairs)))} pairs; sandbox.json "
                "`aligned.pair_accuracy`): share of gold-vs-wrong English pairs whose gold answer the implicit reward "
                "(log aligned - log model) or M0's plain likelihood ranks first, on the alignment's own pairs and on "
                "held-out ones, mean ± sd over seeds\n\n| measure | pairs | accuracy |\n|---|---|---|\n"
            )
            for (measure, split), values in sorted(alignment.items()):
                fh.write(f"| {measure} | {split} | {_cell(values, '.3f')} |\n")
        fh.write(f"\nLibrary versions: {'; '.join(map(format_versions, versions)) or 'not recorded'}\n")
    _plot(out / "study.png", per_seed)
    return cells


def _mean_sd(values: dict[int, float]) -> dict[str, float]:
    """Mean, sample sd and the mean's 95% t-interval over the seeds (sd and interval NaN for one seed)."""
    if not values:
        return {}
    from scipy.stats import t as student

    mean = statistics.fmean(values.values())
    n = len(values)
    sd = statistics.stdev(values.values()) if n > 1 else math.nan
    half = float(student.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def _cell(values: dict[int, float], spec: str, interval: bool = False, extra: str = "") -> str:
    """`mean ± sd (n=seeds<extra>)` in the format `spec` (the sd unsigned), with `interval` the mean's 95%
    t-interval after the sd; `-` without values."""
    stats = _mean_sd(values)
    if not stats:
        return "-"
    text = format(stats["mean"], spec)
    if not math.isnan(stats["sd"]):
        text += f" ± {format(stats['sd'], spec.lstrip('+'))}"
        if interval:
            text += f" [{format(stats['ci_low'], spec)}, {format(stats['ci_high'], spec)}]"
    return f"{text} (n={len(values)}{extra})"


def _labels(per_seed: dict[tuple[str, str, str], dict[int, float]]) -> list[str]:
    return sorted({label for _, _, label in per_seed}, key=model_order)


def _table(
    title: str,
    data: dict[tuple[str, str, str], dict[int, float]],
    signed: bool = False,
    pairs: dict[tuple[str, str, str], int] | None = None,
    counted: str = "pairs",
) -> str:
    """A Markdown table: a row per (variant, language), a column per iterate, cells `mean ± sd (n=seeds)` (and
    `<counted>=N` from `pairs`); `signed` (a change): `mean ± sd [95% interval of the mean] (n=seeds)`."""
    labels = _labels(data)
    lines = [title, "", "| variant | lang | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for variant, lang in sorted({(v, lang) for v, lang, _ in data}, key=lambda k: (k[0] != "rewarding", k)):
        row = []
        for label in labels:
            key = (variant, lang, label)
            extra = f", {counted}={pairs[key]}" if pairs and key in data else ""
            row.append(_cell(data.get(key, {}), "+.3f" if signed else ".3f", interval=signed, extra=extra))
        lines.append(f"| {variant} | {lang} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, per_seed: dict[tuple[str, str, str], dict[int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({v for v, _, _ in per_seed}, key=lambda v: (v != "rewarding", v))
    langs = sorted({lang for _, lang, _ in per_seed}, key=lambda lang: (lang != "en", lang))
    labels = _labels(per_seed)
    fig, axes = plt.subplots(1, len(langs), figsize=(3.6 * len(langs), 3.2), sharey=True, squeeze=False)
    for ax, lang in zip(axes[0], langs, strict=True):
        for variant in variants:
            xs, means, sds = [], [], []
            for x, label in enumerate(labels):
                values = list(per_seed.get((variant, lang, label), {}).values())
                if values:
                    xs.append(x)
                    means.append(statistics.fmean(values))
                    sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=variant)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(lang)
        ax.set_xlabel("iterate")
    axes[0][0].set_ylabel("accuracy (mean ± sd over seeds)")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
