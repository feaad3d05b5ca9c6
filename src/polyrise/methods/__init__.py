"""Training methods. Each is one module of this package whose class supplies everything of the method: its config
sections, its stages, its training data and trainer, its stats, scores and console summary. Nothing outside the
module names a method: the runner, the CLI, the report and the export ask it. `method: <name>` is looked up in
`polyrise.plugins.METHODS` (name → "module:Class")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel
from rich.console import RenderableType

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.plugins import METHODS, load
from polyrise.settings import ModelSettings
from polyrise.training.settings import TrainingSettings

if TYPE_CHECKING:  # models imports torch
    from polyrise.models import ResolvedModel
    from polyrise.records import Record


@dataclass(frozen=True)
class PairFiles:
    """Which files of an iteration dir (`iter_<t>/`) hold a method's training examples, and how the report's
    Pairs tab shows them: each example's prompt, then its `sides` side by side."""

    kept: str
    """The examples trained on (a JSONL of `record`)."""
    record: type[Record]
    sides: tuple[str, ...]
    """The record's fields shown under its prompt (`chosen`, `rejected`; a question pair's `completion`)."""
    row: Callable[[Any], str]
    """An example's row: its language (`es`), `en/es` (an English pair built from Spanish answers), `zh-en`."""
    dropped: str | None = None
    """The candidates a filter dropped (`records.DroppedPair`, with its reason)."""
    labels: str | None = None
    """Each kept pair's sides right or wrong against the prompt's gold answer (`evaluation.reward.RewardLabel`)."""
    dropped_prompts: str | None = None
    """The self-translated prompts a check dropped before any example was made of them (`records.DroppedPrompt`)."""


@dataclass(frozen=True)
class MethodViews:
    """What the report needs to know of a run's method: the languages it trained on (marked `*` in the tables, with
    `note` saying so) and where its training examples are."""

    trained: tuple[str, ...] = ()
    note: str | None = None
    pairs: PairFiles | None = None


class Method(Protocol):
    """What a method supplies to the runner, the CLI, the report and the export."""

    name: ClassVar[str]
    training: ClassVar[type[TrainingSettings]]
    """The class of its `training` section (DPO's or SFT's settings, ...)."""
    sections: ClassVar[dict[str, Any]]
    """Its own config sections, key → type: a class (absent: its defaults, or an error naming the section when it
    has required keys) or `Class | None` (absent: None). A section of another method is an error."""
    record: ClassVar[type[BaseModel]]
    """The record of its training data (with `trl_example()`: what its trainer and `polyrise export` get)."""
    data_file: ClassVar[str]
    """The file of an iteration dir holding its training data (`pairs.jsonl`, ...)."""
    shown: ClassVar[tuple[str, ...]]
    """The trainer's metrics recorded in the manifest and shown (besides the number of examples)."""

    def __init__(self, run: RunContext) -> None: ...

    @classmethod
    def check(cls, config: RunSettings) -> None:
        """Raise ValueError on a config this method cannot run (beyond its sections' own validation)."""
        ...

    @classmethod
    def train(
        cls,
        model: ResolvedModel,
        rows: list[Any],
        out: Path,
        settings: TrainingSettings,
        model_settings: ModelSettings,
        *,
        seed: int,
        cache: Path | None,
        report: dict[str, Any],
    ) -> dict[str, float]:
        """Train `model` on `rows` (its `record`s) into `out`: the run's training stage and `polyrise train`.
        `cache` may hold reusable computations (reference log-probs); `report` are trainer tracking arguments."""
        ...

    def prepare(self) -> None:
        """Load what every iteration needs (prompt sets), so bad sources fail before any stage runs."""
        ...

    def stages(self, t: int) -> list[Stage]:
        """Iteration `t`'s data stages and its training stage (`run.train_stage(t)`), in order."""
        ...

    def estimate(self) -> dict[str, int]:
        """The work of one iteration before it runs (`polyrise run --dry-run`): request and row counts by name,
        `pairs` the most training examples it can make."""
        ...

    def stats(self, t: int) -> dict[str, Any]:
        """Iteration `t`'s data statistics (what was kept and dropped), as written to the run dir."""
        ...

    def scores(self, t: int) -> dict[str, Any]:
        """The method's own measurements of iteration `t` (e.g. the reward's accuracy), by task then model, merged
        into `iter_t/eval/scores.json`."""
        ...

    def summary_table(self, summary: dict[str, Any]) -> RenderableType:
        """The console summary of one iteration (`summary`: iteration, stats, off_target, scores)."""
        ...

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """What the report of a run with `config` shows of this method (`polyrise report`)."""
        ...


def method_names() -> list[str]:
    """The methods this installation has, as written in a config."""
    return sorted(METHODS)


def load_method(name: str) -> type[Method]:
    """The method a config names (`language-imbalance` → `LanguageImbalance`)."""
    method: type[Method] = load("method", METHODS, name)
    return method
