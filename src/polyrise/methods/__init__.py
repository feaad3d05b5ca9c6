"""Training methods. Each is one module of this package, named after its config value (`method: language-imbalance`
→ `language_imbalance.py`), exposing `METHOD`: a class, built on the run, that supplies the data and training
stages, the training settings, the stats and the console summary. The runner knows none of them: adding a method
is adding a module."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from polyrise.errors import PolyriseError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from polyrise.config import RunConfig, TrainingSettings
    from polyrise.records import Record
    from polyrise.runner import Runner, Stage


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


@dataclass(frozen=True)
class MethodViews:
    """What the report needs to know of a run's method: the languages it trained on (marked `*` in the tables, with
    `note` saying so) and where its training examples are."""

    trained: tuple[str, ...] = ()
    note: str | None = None
    pairs: PairFiles | None = None


class Method(Protocol):
    """What a method supplies to the runner."""

    name: ClassVar[str]
    settings: ClassVar[type[TrainingSettings]]
    """The class of its `training` section (DPO's or SFT's settings, ...)."""

    def __init__(self, run: Runner) -> None: ...

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """Raise ValueError on a config this method cannot run (its own sections missing or misused)."""
        ...

    def prepare(self) -> None:
        """Load what every iteration needs (prompt sets), so bad sources fail before any stage runs."""
        ...

    def stages(self, t: int) -> list[Stage]:
        """Iteration `t`'s data stages and its training stage (`run.train_stage`), in order."""
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
    def report_views(cls, config: RunConfig) -> MethodViews:
        """What the report of a run with `config` shows of this method (`polyrise report`)."""
        ...


def method_names() -> list[str]:
    """The methods this installation has, as written in a config."""
    import polyrise.methods as package

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(package.__path__))


def load_method(name: str) -> type[Method]:
    """The method a config names (`language-imbalance` → `polyrise.methods.language_imbalance.METHOD`)."""
    module_name = f"{__name__}.{name.replace('-', '_')}"
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise PolyriseError(f"{name!r} is not a method name; known: {', '.join(method_names())}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise PolyriseError(f"unknown method {name!r}; known: {', '.join(method_names())}") from None
    return module.METHOD
