"""What every evaluation task module builds on: the settings every task shares, how a run is described, metrics.

A task module (`math`, `judge`, `choice`, `translation`, `fewshot`, `reflik`) declares a settings class derived
from `TaskSettings` with `task: Literal["<name>"]`, its `METRICS`, `run(task, context) -> Scores` and its `VIEW`
(a `TaskView`: how the report reads and shows its per-sample rows); the registry in `polyrise.evaluation` joins
them. The held-out off-target measurement (`fidelity`) and the reward measurement (`reward`) declare `METRICS` and
a `VIEW` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from polyrise.errors import missing_extra
from polyrise.io import path_component_problem
from polyrise.langid import LangIdSettings
from polyrise.languages import get_language
from polyrise.settings import MAX_COUNT, Section

if TYPE_CHECKING:
    from pydantic import BaseModel

    from polyrise.generation import Generator
    from polyrise.stats import RowSamples

Scores = dict[str, dict[str, Any]]
"""row (a language, a direction such as en-de) → metric → value."""


class TaskSettings(Section):
    """One evaluation, run by `polyrise eval` or on every model of `polyrise run`; the settings all tasks share."""

    task: str
    """The task's name; each task's settings narrow it to a `Literal`, the discriminator of `EvalTask`."""
    source: str
    """The task's data (see the task's own `source`); a path may hold `{lang}`, read once per language."""
    name: str | None = None
    """Key of the scores and of the per-sample files (default: the task)."""
    langs: list[str] | None = None
    """Default: the run's source and target languages."""
    limit: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """The first N items per language."""

    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(module, extra) pairs the task needs beyond polyrise's dependencies: checked when its settings load."""

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str | None) -> str | None:
        if name is not None and (problem := path_component_problem(name)):
            raise ValueError(f"{problem}: it names the task's per-sample files")
        return name

    @field_validator("langs")
    @classmethod
    def _known_langs(cls, codes: list[str] | None) -> list[str] | None:
        for code in codes or []:
            get_language(code)
        return codes

    @model_validator(mode="after")
    def _installed(self) -> TaskSettings:
        for module, extra in self.requires:
            if problem := missing_extra(module, extra, f"the {self.task} task"):
                raise ValueError(problem)
        return self

    @property
    def key(self) -> str:
        """The task's key in `scores.json` and the stem of its per-sample files."""
        return self.name or self.task


@dataclass(frozen=True)
class Metric:
    """A metric a task reports per row, the direction in which it is better, and whether reports show it."""

    name: str
    lower_is_better: bool = False
    headline: bool = True
    """Shown in the report's tables and plots; the other metrics (counts, intervals) stay in the JSON."""


@dataclass(frozen=True)
class TaskRun:
    """One model's evaluation: its generator, the languages, where its rows go, and what it is compared with."""

    generator: Generator
    langs: list[str]
    out_dir: Path
    label: str
    seed: int = 0
    judge: Generator | None = None
    """The judge of the `judge` tasks (one engine per distinct judge, opened by `evaluate_model`)."""
    baseline: tuple[Path, str] | None = None
    """(dir, label) of an evaluated model to judge head-to-head against."""
    langid: LangIdSettings = field(default_factory=LangIdSettings)
    """How the language of answers is judged (the run's `langid:` settings)."""

    def rows_path(self, task: TaskSettings, label: str | None = None, out_dir: Path | None = None) -> Path:
        """The per-sample rows of `task` on the model `label` (default: this one) in `out_dir` (default: ours)."""
        return (out_dir or self.out_dir) / f"{task.key}_{label or self.label}.jsonl"


Verdicts = Callable[[Path, Sequence[Any], "LangIdSettings"], list[str | None]]
"""(a file of a task's per-sample rows, its rows, the run's langid settings) → each row's verdict, or None."""


@dataclass(frozen=True)
class TaskView:
    """How the report reads and shows a task's per-sample rows (`<key>_<model>.jsonl`) and its metrics: which
    fields of its `row` record hold the prompt, the answer and the gold, which make the row's language, how the
    per-item values are read (to pair two models) and how a row's verdict is read."""

    metrics: tuple[Metric, ...]
    """The metrics its scores hold (the report's table titles and directions)."""
    row: type[BaseModel] | None = None
    """The record of its per-sample rows; None: it has none (a measurement kept elsewhere)."""
    prompt: str | None = None
    answer: str | None = None
    """A free-text answer: shown, and the languages the detector finds in it shown with it."""
    pick: str | None = None
    """A picked label (the task has no free-text answer): shown as the output."""
    gold: str | None = None
    lang: tuple[str, ...] = ("lang",)
    """The fields whose values, joined by "-", are the row's language (a translation's `en-de`)."""
    samples: Callable[[list[Any], LangIdSettings], RowSamples] | None = None
    """The per-item values of its rows (row → metric → `stats.Sample`), what the report pairs between models."""
    verdicts: Verdicts | None = None
    """Each row's verdict (win / tie / loss, on / off target, failed); None: right / wrong from the per-item
    `accuracy` of `samples`, where it has one."""
    key: str | None = None
    """The fixed key of its scores (a measurement of the run's own, such as `heldout`); None: the key is the
    evaluation's `name` and its rows are known by their fields."""

    @property
    def output(self) -> str | None:
        """The field shown as a row's output: its answer, else its pick; None: its rows have nothing to show."""
        return self.answer or self.pick

    def row_verdicts(self, path: Path, rows: Sequence[Any], langid: LangIdSettings) -> list[str | None]:
        """Each row's verdict (see `verdicts`)."""
        if self.verdicts is not None:
            return self.verdicts(path, rows, langid)
        samples = self.samples(list(rows), langid) if self.samples is not None else {}
        right = {
            (lang, item): bool(value)
            for lang, metrics in samples.items()
            if "accuracy" in metrics
            for item, value in zip(metrics["accuracy"].ids, metrics["accuracy"].values, strict=True)
        }
        return [
            None if (key := (row.lang, row.id)) not in right else "right" if right[key] else "wrong" for row in rows
        ]
