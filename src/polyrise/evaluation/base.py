"""What every evaluation task module builds on: the settings every task shares, how a run is described, metrics.

A task module (`math`, `judge`, `choice`, `translation`, `fewshot`, `reflik`) declares a settings class derived
from `TaskSettings` with `task: Literal["<name>"]`, its `METRICS`, and `run(task, context) -> Scores`; the
registry in `polyrise.evaluation` joins them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from polyrise.errors import missing_extra
from polyrise.langid import LangIdSettings
from polyrise.languages import get_language
from polyrise.settings import Section

if TYPE_CHECKING:
    from polyrise.generation import Generator

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
    limit: int | None = Field(default=None, ge=1)
    """The first N items per language."""

    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    """(module, extra) pairs the task needs beyond polyrise's dependencies: checked when its settings load."""

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
