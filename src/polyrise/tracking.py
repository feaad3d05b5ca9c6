"""Experiment tracking (`tracking:` in a run config): TensorBoard, trackio, Weights & Biases or MLflow.

Two kinds of tracker runs, in the same project (TensorBoard: under `<run dir>/tensorboard/`):
- the trainer's per-step metrics (loss, rewards/margins, ...) through transformers' own `report_to`
  integrations: one tracker run per iteration's training, `<name>-iter_<t>-train` (step = training step);
- polyrise's per-iteration metrics (`Tracker`): one tracker run per polyrise run, `<name>`, step = the
  iteration t: its pairs kept and dropped per language (`pairs/...`), its training summary (`train/...`), the
  reward accuracy of its pairs, and the measurements of M(k) at step k (`heldout/...`, `<eval task>/...`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from polyrise.errors import PolyriseError, missing_extra
from polyrise.settings import TrackingSettings


def check(settings: TrackingSettings) -> None:
    """The backend's package is installed (checked before a run starts); its extra is named after it."""
    backend = settings.backend
    if backend != "none" and (problem := missing_extra(backend, backend, f"tracking.backend: {backend}")):
        raise PolyriseError(problem)


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in nested JSON (stats, scores) as `a/b/c` keys; NaN (nothing measured) is left out."""
    flat: dict[str, float] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
            flat[name] = float(value)
    return flat


@contextmanager
def trainer_reporting(settings: TrackingSettings, run_dir: Path, run_name: str) -> Iterator[dict[str, Any]]:
    """The `TrainingArguments` that send the trainer's metrics to the tracker as the run `run_name` ({} for
    none). While the block runs, the environment variables that some integrations read instead are set."""
    backend = settings.backend
    if backend == "none":
        yield {}
        return
    env = {
        "tensorboard": {"TENSORBOARD_LOGGING_DIR": str(run_dir / "tensorboard" / run_name)},
        "wandb": {"WANDB_PROJECT": settings.project},
        "mlflow": {"MLFLOW_EXPERIMENT_NAME": settings.project},
    }.get(backend, {})
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:  # `project` is trackio's; the others name their run `run_name`
        yield {"report_to": [backend], "run_name": run_name, "project": settings.project}
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Tracker:
    """polyrise's per-iteration metrics of one run (module docstring), on the configured backend."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, name: str) -> None:
        self.backend = settings.backend
        if self.backend == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._run: Any = SummaryWriter(str(run_dir / "tensorboard" / name))
        elif self.backend == "trackio":
            import trackio

            trackio.init(project=settings.project, name=name, resume="allow")
            self._run = trackio
        elif self.backend == "wandb":
            import wandb

            self._run = wandb.init(project=settings.project, name=name)
        elif self.backend == "mlflow":
            import mlflow

            mlflow.set_experiment(settings.project)
            self._run = mlflow.start_run(run_name=name)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.backend == "tensorboard":
            for key, value in metrics.items():
                self._run.add_scalar(key, value, step)
            self._run.flush()
        elif self.backend == "mlflow":
            import mlflow

            mlflow.log_metrics(metrics, step=step)
        else:  # a wandb run and the trackio module log alike
            self._run.log(metrics, step=step)

    def close(self) -> None:
        if self.backend == "mlflow":
            import mlflow

            mlflow.end_run()
        elif self.backend == "tensorboard":
            self._run.close()
        else:
            self._run.finish()
