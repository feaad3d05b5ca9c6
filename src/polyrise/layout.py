"""Every path of a run directory, in one place: the runner, the methods, the report, the export and the study
all ask a `RunLayout` instead of joining names by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ITERATION = re.compile(r"iter_(\d+)")


HELDOUT_STAGE = "heldout_M"
EVAL_STAGE = "eval_M"
"""The names (+ k) of M<k>'s measurement stages, alike in every method's run (`iter_<t>/eval_M<k>`)."""


@dataclass(frozen=True)
class RunLayout:
    """The files of the run directory `root` (`output_dir/name`)."""

    root: Path

    @property
    def config(self) -> Path:
        """The resolved config that ran; stage processes rebuild the run from it."""
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def cache(self) -> Path:
        """The generation cache (a killed stage resumes from it)."""
        return self.root / "generations.sqlite"

    @property
    def lock(self) -> Path:
        """Locked (flock) by the run using the dir, and holding its PID."""
        return self.root / ".run.lock"

    @property
    def stage_result(self) -> Path:
        """Transient: a stage process's counts or error, read and removed by the parent."""
        return self.root / ".stage-result.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def report(self, suffix: str) -> Path:
        """`report.md` or `report.html`."""
        return self.root / f"report.{suffix}"

    def stage_log(self, stage: str) -> Path:
        """Where the libraries' output during stage `stage` goes (`logs/iter_0/generate.log`)."""
        return self.root / "logs" / f"{stage}.log"

    def iter_dir(self, t: int) -> Path:
        return self.root / f"iter_{t}"

    def file(self, t: int, name: str) -> Path:
        """A data file of iteration `t` (`pairs.jsonl`, ...): the methods name theirs."""
        return self.iter_dir(t) / name

    def model_dir(self, t: int) -> Path:
        """Where iteration `t` writes M(t+1)."""
        return self.iter_dir(t) / "model"

    def eval_dir(self, k: int) -> Path:
        """Where M(k)'s held-out answers and evaluations live: the dir of the iteration that made it."""
        return self.iter_dir(max(k - 1, 0)) / "eval"

    def heldout_file(self, k: int) -> Path:
        return self.eval_dir(k) / f"heldout_M{k}.jsonl"

    def model_scores(self, k: int) -> Path:
        """M(k)'s evaluation scores, by task."""
        return self.eval_dir(k) / f"M{k}_scores.json"

    def scores(self, t: int) -> Path:
        """Iteration `t`'s `scores.json`: M(t)'s and M(t+1)'s measurements and the method's own."""
        return self.iter_dir(t) / "eval" / "scores.json"

    def iterations(self) -> list[int]:
        """The iterations that have a directory, in order (not `iter_0.bak` or other copies)."""
        found = [int(m.group(1)) for p in self.root.glob("iter_*") if (m := _ITERATION.fullmatch(p.name))]
        return sorted(found)

    @staticmethod
    def iteration_of(stage: str) -> int:
        """The iteration of a stage name (`iter_2/train` → 2)."""
        return int(stage.split("/")[0].removeprefix("iter_"))
