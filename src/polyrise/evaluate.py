"""Evaluation stage: run one configured task on a model, write per-sample JSONL, return per-language scores."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from polyrise.config import EvalTask, SamplingSettings
from polyrise.errors import PolyriseError
from polyrise.generation import Generator, answer_prompts
from polyrise.io import read_jsonl, write_jsonl
from polyrise.records import Response

Scores = dict[str, dict[str, Any]]


def outputs_path(out_dir: Path, task: EvalTask, label: str) -> Path:
    """Where the per-sample rows of `task` on the model called `label` are written."""
    return out_dir / f"{task.key}_{label}.jsonl"


def run_task(
    task: EvalTask,
    generator: Generator,
    langs: list[str],
    out_dir: Path,
    label: str,
    *,
    seed: int = 0,
    judge: Generator | None = None,
    baseline: str | None = None,
) -> Scores:
    """Evaluate the generator's model on `task`; returns {row (language or direction): metrics}.

    For `judge` without a `reference`, the model's answers are judged against the answers of the model
    labelled `baseline` in the same `out_dir` (M(t+1) vs M(t)); with neither, only the answers are written.
    """
    langs = task.langs or langs
    params = SamplingSettings(max_new_tokens=task.max_new_tokens)
    out = outputs_path(out_dir, task, label)
    if task.task == "mgsm":
        from polyrise.evaluation.math import evaluate_math, load_math

        problems = load_math(task.source or "gsm-symbolic", langs, limit=task.limit)
        predictions, scores = evaluate_math(generator, problems, params, task.few_shot)
        write_jsonl(out, predictions)
        return scores
    if task.task in ("choice", "classify"):
        from polyrise.evaluation.choice import (
            PRESETS,
            choice_accuracy,
            first_per_lang,
            load_choice_jsonl,
            load_preset,
            score_choices,
        )

    if task.task == "choice":
        engine = generator.engine
        if not hasattr(engine, "model"):
            raise PolyriseError("multiple-choice scoring needs log-likelihoods: use a local (HF) model")
        if task.source in PRESETS:
            items = [item for lang in langs for item in load_preset(task.source, lang, limit=task.limit)]
        else:
            items = first_per_lang(load_choice_jsonl(task.source, langs), task.limit)
        normalize = None if task.normalize == "none" else task.normalize
        predictions = score_choices(engine.model, engine.tokenizer, items, engine.batch_size, normalize)
        write_jsonl(out, predictions)
        return choice_accuracy(predictions)
    if task.task == "classify":
        from polyrise.evaluation import fewshot

        engine = generator.engine
        if not hasattr(engine, "model"):
            raise PolyriseError("few-shot classification needs the model's logits: use a local (HF) model")
        items = fewshot.load_classify_jsonl(task.source, langs, task.labels)
        pool = fewshot.load_classify_jsonl(task.demos, langs, task.labels) if task.demos else items
        predictions = fewshot.classify(
            engine.model,
            engine.tokenizer,
            first_per_lang(items, task.limit),
            fewshot.label_set([*items, *pool], task.labels),
            k=task.few_shot,
            demos=pool,
            seed=seed,
            constrain=task.constrain,
            normalize=None if task.normalize == "none" else task.normalize,
            batch_size=engine.batch_size,
        )
        write_jsonl(out, predictions)
        return fewshot.fewshot_accuracy(predictions)
    if task.task == "reflik":
        from polyrise.evaluation.judge import load_alpaca_eval_outputs
        from polyrise.evaluation.reflik import reference_nll, reflik_scores

        references = load_alpaca_eval_outputs(task.source, langs, task.limit)
        rows = reference_nll(generator.engine, references, task.max_new_tokens, generator.cache)
        write_jsonl(out, rows)
        return reflik_scores(rows)
    if task.task == "translation":
        from polyrise.evaluation.translation import load_parallel, self_translation_quality

        source_lang = "en" if "en" in langs else langs[0]
        rows = load_parallel(task.source, langs, task.limit)
        targets = [lang for lang in langs if lang != source_lang]
        return self_translation_quality(generator, rows, source_lang, targets, params)
    return _judge_task(task, generator, langs, out_dir, label, params, seed, judge, baseline)


def _judge_task(
    task: EvalTask,
    generator: Generator,
    langs: list[str],
    out_dir: Path,
    label: str,
    params: SamplingSettings,
    seed: int,
    judge: Generator | None,
    baseline: str | None,
) -> Scores:
    from polyrise.evaluation import judge as judging

    prompts = judging.load_instructions(task.source, langs, task.limit)
    responses = answer_prompts(generator, prompts, params, desc="answering instructions")
    write_jsonl(outputs_path(out_dir, task, label), responses)
    judging.write_alpaca_eval_outputs(
        out_dir / f"{task.key}_{label}" / "{lang}" / "model_outputs.json", responses, label
    )
    if task.reference:
        items = judging.items_vs_reference(responses, task.reference)
    elif baseline is not None and outputs_path(out_dir, task, baseline).is_file():
        items = judging.items_head_to_head(responses, read_jsonl(outputs_path(out_dir, task, baseline), Response))
    else:
        return {}
    if judge is None:
        raise PolyriseError("the judge task needs a judge model")
    assert task.judge is not None
    verdicts = judging.judge(judge, items, SamplingSettings(max_new_tokens=task.judge.max_new_tokens))
    write_jsonl(out_dir / f"{task.key}_{label}_judgements.jsonl", [asdict(v) for v in verdicts])
    return judging.win_rates(verdicts, seed=seed)
