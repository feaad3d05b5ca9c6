"""The evaluation task registry: one module per task declares its settings, its `run` and its `METRICS`; here they
are joined into the `EvalTask` union (the `evaluation:` entries of a run config, `polyrise eval`'s options), the
metric directions the report and the transfer analysis read, and `evaluate_model`, which the runner and the CLI
both call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from polyrise.evaluation import choice, fewshot, fidelity, judge, math, reflik, reward, translation
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings
from polyrise.generation import Generator, open_engine
from polyrise.io import iter_jsonl, read_jsonl
from polyrise.langid import LangIdSettings
from polyrise.stats import RowSamples

__all__ = [
    "HEADLINE_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "TASKS",
    "EvalTask",
    "Metric",
    "Scores",
    "TaskSettings",
    "evaluate_model",
    "item_samples",
    "parse_task",
    "run_task",
    "untagged",
]

EvalTask = Annotated[
    math.MathTask
    | judge.JudgeTask
    | choice.ChoiceTask
    | translation.TranslationTask
    | fewshot.ClassifyTask
    | reflik.ReflikTask,
    Field(discriminator="task"),
]
"""One evaluation: the settings class of the task its `task` key names."""

TASKS: dict[str, ModuleType] = {
    "mgsm": math,
    "judge": judge,
    "choice": choice,
    "translation": translation,
    "classify": fewshot,
    "reflik": reflik,
}
"""Task name → the module that declares it (its settings, `run`, `METRICS`; `ROW` and `row_samples` when its
per-sample rows hold per-item values: see `item_samples`)."""


def _metrics(modules: Sequence[ModuleType]) -> dict[str, Metric]:
    found: dict[str, Metric] = {}
    for module in modules:
        for metric in module.METRICS:
            if found.setdefault(metric.name, metric) != metric:
                raise RuntimeError(f"metric {metric.name!r} is declared twice, differently: {metric}")
    return found


METRICS = _metrics([*TASKS.values(), fidelity, reward])
"""Every metric a task, the held-out measurement or the reward measurement reports, by name."""
HEADLINE_METRICS = tuple(name for name, metric in METRICS.items() if metric.headline)
"""Metrics that get a table and plots; counts (n, skipped, ...) stay in the JSON."""
LOWER_IS_BETTER = frozenset(name for name, metric in METRICS.items() if metric.lower_is_better)


def item_samples(path: Path) -> RowSamples | None:
    """The per-item samples (row → metric → `stats.Sample`) of a file of a task's per-sample rows, read by the
    module whose `ROW` has exactly the first row's fields, through its `row_samples`; None when no task's rows
    of that shape hold per-item values, or the file has no rows. A bad row is an error naming `file:line`."""
    first = next(iter_jsonl(path), None)
    if first is None:
        return None
    for module in TASKS.values():
        row = getattr(module, "ROW", None)
        if row is not None and set(first[1]) == set(row.model_fields):
            samples: RowSamples = module.row_samples(read_jsonl(path, row))
            return samples
    return None


_TASK_ADAPTER: TypeAdapter[EvalTask] = TypeAdapter(EvalTask)


def parse_task(data: Mapping[str, Any]) -> EvalTask:
    """Validate one task's settings (`task` names which); raises pydantic's ValidationError, whose locations
    `untagged` turns into the task's own keys."""
    return _TASK_ADAPTER.validate_python(data)


def untagged(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """An error location inside an `EvalTask` without the task name that pydantic's tagged union puts first."""
    return tuple(loc[1:]) if loc and loc[0] in TASKS else tuple(loc)


def run_task(
    task: EvalTask,
    generator: Generator,
    langs: list[str],
    out_dir: Path,
    label: str,
    *,
    seed: int = 0,
    judge: Generator | None = None,
    baseline: tuple[Path, str] | None = None,
    langid: LangIdSettings | None = None,
) -> Scores:
    """Evaluate the generator's model (called `label`) on `task` in `task.langs or langs`; writes the per-sample
    rows to `out_dir/<task.key>_<label>.jsonl` and returns {row (language or direction): metrics}.

    `judge` judges the `judge` task; `baseline` = (dir, label) names an evaluated model whose answers there the
    model is judged against when the task has no `reference`; `langid` judges the language of answers.
    """
    context = TaskRun(generator, task.langs or langs, out_dir, label, seed, judge, baseline, langid or LangIdSettings())
    scores: Scores = TASKS[task.task].run(task, context)
    return scores


def evaluate_model(
    tasks: Sequence[EvalTask],
    generator: Generator,
    langs: list[str],
    out_dir: Path,
    label: str,
    *,
    seed: int = 0,
    baseline: tuple[Path, str] | None = None,
    langid: LangIdSettings | None = None,
) -> dict[str, Scores]:
    """Run every task on the generator's model; returns {task key: scores} (see `run_task`).

    Each distinct judge is opened once, sharing the generator's cache, and only when a task will judge: against
    its reference, or head-to-head against `baseline` = (dir, label), e.g. M(t)'s eval dir and "M<t>".
    """
    judges: dict[str, Generator] = {}
    scores: dict[str, Scores] = {}
    for task in tasks:
        judge_generator = None
        if isinstance(task, judge.JudgeTask) and task.judge and (task.reference or baseline is not None):
            key = task.judge.model_dump_json()
            if key not in judges:
                judges[key] = Generator(open_engine(task.judge), generator.cache)
            judge_generator = judges[key]
        scores[task.key] = run_task(
            task, generator, langs, out_dir, label, seed=seed, judge=judge_generator, baseline=baseline, langid=langid
        )
    return scores
