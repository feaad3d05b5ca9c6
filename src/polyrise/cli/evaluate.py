"""Measuring and publishing: `polyrise eval`, `score`, `harness`, `report`, `export`, `models`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from polyrise import api
from polyrise.cli.options import ApiKeyEnv, BaseUrl, EngineName, Model, comma_list, console, engine_settings

if TYPE_CHECKING:
    from polyrise.settings import EngineSettings


def eval_(
    task: Annotated[str, typer.Option(help="mgsm, judge, choice, translation, classify or reflik")],
    model: Model = api.DEFAULT_MODEL,
    source: Annotated[str | None, typer.Option(help="the task's data (mgsm default: gsm-symbolic)")] = None,
    langs: Annotated[str, typer.Option(help="comma-separated languages")] = "en,es,de,fr",
    limit: Annotated[int | None, typer.Option(help="first N items per language")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="mgsm, judge, translation: answer length; reflik: answer tokens scored")
    ] = None,
    few_shot: Annotated[int | None, typer.Option(help="mgsm, classify: demonstrations per item")] = None,
    name: Annotated[str | None, typer.Option(help="key of the scores and files (default: the task)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output dir (per-sample JSONL + scores.json)")] = Path(
        "eval"
    ),
    label: Annotated[str, typer.Option(help="name of this model in scores.json")] = "model",
    reference: Annotated[str | None, typer.Option(help="judge: alpaca_eval reference outputs ({lang})")] = None,
    baseline_model: Annotated[str | None, typer.Option(help="judge: head-to-head against this model")] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="judge: a model spec, or the model name at --judge-url")
    ] = None,
    judge_engine: Annotated[
        str | None, typer.Option(help="judge: hf, vllm or openai (default: openai with --judge-url)")
    ] = None,
    judge_url: Annotated[str | None, typer.Option(help="judge: OpenAI-compatible base URL")] = None,
    judge_api_key_env: str = "OPENAI_API_KEY",
    normalize: Annotated[str | None, typer.Option(help="choice, classify: chars, tokens or none")] = None,
    labels: Annotated[str | None, typer.Option(help="classify: comma-separated labels (default: the data's)")] = None,
    constrain: Annotated[str | None, typer.Option(help="classify: loglik or generate")] = None,
    demos: Annotated[str | None, typer.Option(help="classify: demonstrations JSONL; default: the other items")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="any task setting as KEY=VALUE (a YAML value; judge.KEY for the judge's)"),
    ] = None,
    batch_size: int = 16,
    seed: int = 0,
    engine: EngineName = "hf",
    base_url: BaseUrl = None,
    api_key_env: ApiKeyEnv = "OPENAI_API_KEY",
) -> None:
    """Evaluate a model on one task per language; merges its scores into <out>/scores.json.

    The options are the task's settings, checked by the same settings class as a run config's `evaluation:`
    entry (an option of another task is an error); `--set KEY=VALUE` gives any of them.
    """
    from polyrise.reporting import scores_table

    options: dict[str, object] = {
        "task": task,
        "source": source,
        "name": name,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "few_shot": few_shot,
        "reference": reference,
        "normalize": normalize,
        "labels": comma_list(labels) if labels is not None else None,
        "constrain": constrain,
        "demos": demos,
    }
    if judge_model or judge_url:
        judge_engine = judge_engine or ("openai" if judge_url else "hf")
        judge = engine_settings(judge_engine, judge_model, batch_size, judge_url, judge_api_key_env, flag="judge-")
        options["judge"] = judge.model_dump()
    evaluation = api.eval_task(options, settings or [])

    def engine_of(spec: str) -> EngineSettings:
        return engine_settings(engine, spec, batch_size, base_url, api_key_env)

    baseline = engine_of(baseline_model) if baseline_model is not None else None
    scores = api.evaluate(
        evaluation, engine_of(model), langs=comma_list(langs), out=out, label=label, baseline_model=baseline, seed=seed
    )
    console.print(scores_table(evaluation.key, {label: scores}))
    console.print(f"per-sample rows and scores in {out}/")


def score(
    task: Annotated[str, typer.Argument(help="langid or mgsm")],
    predictions: Annotated[Path, typer.Argument(help="JSONL rows with id, lang, output (and gold for mgsm)")],
    languages: Annotated[
        str | None,
        typer.Option(help="comma-separated languages a line may be identified as, besides each row's and English"),
    ] = None,
    min_words: Annotated[int, typer.Option(min=0, help="words a line needs to be identified")] = 5,
    min_confidence: Annotated[float, typer.Option(min=0.0, max=1.0, help="below it a line is undecided")] = 0.8,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap intervals")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write per-row verdicts here and merge into its scores.json")
    ] = None,
) -> None:
    """Re-score saved outputs without a model: language confusion per language (langid), or MGSM accuracy with it."""
    from polyrise.reporting import scores_table

    scores = api.score(
        task,
        predictions,
        languages=comma_list(languages) if languages is not None else None,
        min_words=min_words,
        min_confidence=min_confidence,
        seed=seed,
        out=out,
    )
    console.print(scores_table(task, {predictions.stem: scores}))
    if out is not None:
        console.print(f"scores in {out}/scores.json")


def harness(
    tasks: Annotated[str, typer.Option(help="comma-separated lm-evaluation-harness task names, e.g. xnli_en,xcopa_it")],
    model: Model = api.DEFAULT_MODEL,
    limit: Annotated[int | None, typer.Option(help="first N examples per task")] = None,
    batch_size: int = 8,
    device: str = "cpu",
    out: Annotated[Path, typer.Option("--out", "-o", help="results JSON")] = Path("harness_results.json"),
) -> None:
    """Run lm-evaluation-harness tasks on a model (needs the `eval` extra; MGSM goes through `polyrise eval`)."""
    console.print(api.harness(comma_list(tasks), model, limit=limit, batch_size=batch_size, device=device, out=out))


def report(run_dir: Annotated[Path, typer.Argument(help="a run directory (or an eval --out dir)")]) -> None:
    """Write report.md and report.html (tables per metric and language, plots) for a run."""
    md, page = api.report(run_dir)
    console.print(f"wrote {md} and {page}")


def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    iteration: Annotated[int, typer.Option(min=0, help="whose pairs: iter_N/pairs.jsonl or question_pairs.jsonl")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="save_to_disk into this directory")] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="push to this Hub dataset repo (token: HF_TOKEN or `hf auth login`)")
    ] = None,
    private: Annotated[bool, typer.Option(help="with --push-to-hub: a private repo")] = False,
    force: Annotated[bool, typer.Option(help="replace an existing --out")] = False,
) -> None:
    """Export an iteration's pairs as a Hugging Face dataset in TRL's format (DPOTrainer/SFTTrainer take it as is)."""
    dataset = api.export(run_dir, iteration, out=out, push_to_hub=push_to_hub, private=private, force=force)
    console.print(f"{dataset.num_rows} rows, columns {', '.join(dataset.column_names)}")
    if out is not None:
        console.print(f"saved to {out} (datasets.load_from_disk)")
    if push_to_hub is not None:
        console.print(f"pushed to https://huggingface.co/datasets/{push_to_hub}")


def models(
    spec: Annotated[str, typer.Argument(help="model spec")] = api.DEFAULT_MODEL,
) -> None:
    """Resolve a model spec (converting the embedded model once) and print where it lives."""
    from polyrise.models import resolve_model

    resolved = resolve_model(spec)
    console.print(f"{spec} → {resolved.path}" + (f" (adapter on {resolved.base.spec})" if resolved.base else ""))
    console.print(f"fingerprint: {resolved.fingerprint()}")
