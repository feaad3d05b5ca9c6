"""The evaluation tasks: `polyrise.plugins.TASKS` names each task's settings class; its module declares `run`,
`METRICS` and `VIEW` (how its rows and scores are shown). Here they are joined: the metric directions the report and
the transfer analysis read, `parse_task` (an `evaluation:` entry of a run config, `polyrise eval`'s options),
`task_view` (which view shows a file of per-sample rows) and `evaluate_model`, which the runner and the CLI call.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.evaluation import fidelity, reward
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.evaluation.judge import JudgeTask
from polyrise.generation import Generator, open_engine
from polyrise.io import iter_jsonl, read_jsonl
from polyrise.langid import LangIdSettings
from polyrise.plugins import TASKS, load
from polyrise.stats import RowSamples

__all__ = [
    "HEADLINE_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "Metric",
    "Scores",
    "TaskSettings",
    "TaskView",
    "evaluate_model",
    "item_samples",
    "parse_task",
    "run_task",
    "task_class",
    "task_module",
    "task_view",
]


def task_class(name: str) -> type[TaskSettings]:
    """The settings class of the task `name` (an unknown name is an error listing the known ones)."""
    cls: type[TaskSettings] = load("task", TASKS, name)
    return cls


def task_module(name: str) -> ModuleType:
    """The module that declares the task `name`: its settings class, `run`, `METRICS`, `VIEW`."""
    return importlib.import_module(task_class(name).__module__)


KEYED_VIEWS: dict[str, TaskView] = {view.key: view for view in (fidelity.VIEW, reward.VIEW) if view.key}
"""The views of the run's own measurements, by their fixed key in the scores (`heldout`, `reward`)."""


def _metrics(modules: Sequence[ModuleType]) -> dict[str, Metric]:
    found: dict[str, Metric] = {}
    for module in modules:
        for metric in module.METRICS:
            if found.setdefault(metric.name, metric) != metric:
                raise RuntimeError(f"metric {metric.name!r} is declared twice, differently: {metric}")
    return found


METRICS = _metrics([*(task_module(name) for name in TASKS), fidelity, reward])
"""Every metric a task, the held-out measurement or the reward measurement reports, by name."""
HEADLINE_METRICS = tuple(name for name, metric in METRICS.items() if metric.headline)
"""Metrics that get a table and plots; counts (n, skipped, ...) stay in the JSON."""
LOWER_IS_BETTER = frozenset(name for name, metric in METRICS.items() if metric.lower_is_better)


def task_view(key: str, path: Path) -> TaskView | None:
    """The view of the scores `key`'s per-sample rows in `path`: a measurement's of its own key (`heldout`), else
    the task's whose `VIEW.row` has exactly the first row's fields; None when none has (or the file has no rows)."""
    if key in KEYED_VIEWS:
        return KEYED_VIEWS[key]
    first = next(iter_jsonl(path), None)
    if first is None:
        return None
    views = (task_module(name).VIEW for name in TASKS)
    return next((v for v in views if v.row is not None and set(first[1]) == set(v.row.model_fields)), None)


def item_samples(path: Path, key: str = "", langid: LangIdSettings | None = None) -> RowSamples | None:
    """The per-item samples (row → metric → `stats.Sample`) of a file of the scores `key`'s per-sample rows, read
    by its `task_view` (judged with `langid` where the view judges languages); None when its rows hold no per-item
    values, or the file has no rows. A bad row is an error naming `file:line`."""
    view = task_view(key, path)
    if view is None or view.row is None or view.samples is None:
        return None
    return view.samples(read_jsonl(path, view.row), langid or LangIdSettings()) or None


def parse_task(data: Any) -> TaskSettings:
    """Validate one task's settings, as the class its `task` key names; raises pydantic's ValidationError (locations
    are the task's own keys), or a PolyriseError for a missing or unknown `task`."""
    if not isinstance(data, Mapping) or "task" not in data:
        raise PolyriseError(f"an evaluation needs a `task`: one of {', '.join(TASKS)}")
    return task_class(str(data["task"])).model_validate(data)


def run_task(
    task: TaskSettings,
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
    scores: Scores = task_module(task.task).run(task, context)
    return scores


def evaluate_model(
    tasks: Sequence[TaskSettings],
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
        if isinstance(task, JudgeTask) and task.judge and (task.reference or baseline is not None):
            key = task.judge.model_dump_json()
            if key not in judges:
                judges[key] = Generator(open_engine(task.judge), generator.cache)
            judge_generator = judges[key]
        scores[task.key] = run_task(
            task, generator, langs, out_dir, label, seed=seed, judge=judge_generator, baseline=baseline, langid=langid
        )
    return scores
