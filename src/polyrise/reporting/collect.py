"""What a report reads from a run dir: the scores of every iteration, the per-item samples behind them, the run's
`langid` settings and what its method shows (`Method.report_views`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from polyrise.config import RunConfig, load_config
from polyrise.errors import PolyriseError
from polyrise.evaluation import item_samples
from polyrise.io import path_component_problem
from polyrise.langid import LangIdSettings
from polyrise.layout import RunLayout
from polyrise.methods import MethodViews, load_method
from polyrise.stats import RowSamples

Scores = dict[str, dict[str, dict[str, dict[str, float]]]]
"""task → model label (M0, M1, ...) → row (a language, a direction, "average") → metric → value."""


def model_order(label: str) -> tuple[int, str]:
    """Sort key of model labels: M0, M1, ..., M10 in number order, other labels after them."""
    return (int(label[1:]), label) if label[:1] == "M" and label[1:].isdigit() else (10**6, label)


def iteration(path: Path) -> int | None:
    """The iteration of `iter_<t>` (or of `iter_<t>/eval`); None for a run's top dir, a bare eval dir or a copy
    such as `iter_0.bak`."""
    name = path.parent.name if path.name == "eval" else path.name
    return int(name.split("_")[1]) if re.fullmatch(r"iter_\d+", name) else None


def eval_dirs(run_dir: Path) -> list[Path]:
    """The run dir (or an eval dir) and every `iter_*/eval/`, in iteration order."""
    found = [p for p in run_dir.glob("iter_*/eval") if iteration(p) is not None]
    return [run_dir, *sorted(found, key=lambda p: iteration(p) or 0)]


def collect_scores(run_dir: Path) -> Scores:
    """Merge `scores.json` of the run dir (or an eval dir) and of every `iter_*/eval/`; later iterations win."""
    merged: Scores = {}
    for path in (d / "scores.json" for d in eval_dirs(run_dir)):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise PolyriseError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(data, dict):
            raise PolyriseError(f"{path}: expected {{task: {{model: {{row: metrics}}}}}}, got a {type(data).__name__}")
        for task, by_model in data.items():
            if not isinstance(by_model, dict) or not all(
                isinstance(rows, dict) and all(isinstance(cells, dict) for cells in rows.values())
                for rows in by_model.values()
            ):
                raise PolyriseError(f"{path}: {task}: expected {{model: {{row: {{metric: value}}}}}}")
            for name in (task, *by_model):
                if problem := path_component_problem(name):
                    raise PolyriseError(f"{path}: key {problem}: it names a per-sample file")
            for label, rows in by_model.items():
                merged.setdefault(task, {})[label] = rows
    if not merged and not run_dir.is_dir():
        raise PolyriseError(f"{run_dir}: no such directory")
    if not merged:
        raise PolyriseError(f"{run_dir}: no scores.json found (expected scores.json or iter_*/eval/scores.json)")
    return merged


def run_langid(run_dir: Path) -> LangIdSettings:
    """The `langid:` settings of the run (its `config.yaml`), which judged its answers; the defaults elsewhere."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return LangIdSettings()
    try:
        return LangIdSettings(**(yaml.safe_load(path.read_text()) or {}).get("langid", {}))
    except (yaml.YAMLError, ValidationError, AttributeError) as e:
        raise PolyriseError(f"{path}: langid: {e}") from None


def method_views(run_dir: Path) -> MethodViews:
    """What the run's method shows in a report, by the run's `config.yaml` (the default config's without one)."""
    path = RunLayout(run_dir).config
    config = load_config(path) if path.is_file() else RunConfig()
    return load_method(config.method).report_views(config)


def trained_languages(run_dir: Path) -> list[str]:
    """The languages the run's method trained on (question alignment's), marked `*` in its report; else none."""
    return list(method_views(run_dir).trained)


def item_samples_of(run_dir: Path, task: str, label: str, langid: LangIdSettings) -> RowSamples | str:
    """The per-item samples of `task` on model `label`, from its per-sample rows `<task>_<label>.jsonl` (in the last
    eval dir that has them; answers judged with the run's `langid` settings); else why there are none."""
    name = f"{task}_{label}.jsonl"
    paths = [d / name for d in eval_dirs(run_dir) if (d / name).is_file()]
    if not paths:
        return f"{name} is missing"
    samples = item_samples(paths[-1], task, langid)
    return f"{name} holds no per-item values" if samples is None else samples
