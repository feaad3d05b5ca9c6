"""The generic runner: stages rerun exactly when the data they read changes, every model is measured once, a
method is a module the runner does not know, and the CLI's training honours the model settings."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from pydantic import BaseModel
from rich.console import Console
from test_pipeline import _config
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import write_jsonl
from polyrise.plugins import METHODS
from polyrise.records import PreferencePair
from polyrise.runner import Runner, Stage, run_pipeline
from polyrise.training.settings import DPOSettings, SFTSettings
from polyrise.versions import library_versions


def _run(config_path: Path) -> Runner:
    """Run a config through a Runner (as `run_pipeline` does) and return it, for its stage timings."""
    runner = Runner(load_config(config_path), Console(file=io.StringIO()))
    runner.run()
    return runner


def _ran(runner: Runner) -> set[str]:
    return {name for name, _, note in runner.timings if note != "skipped (up to date)"}


def _mgsm_files(tmp_path: Path) -> str:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for lang, q in [("en", "Tom has 2 apples and buys 3. How many?"), ("es", "Tom tiene 2 manzanas y compra 3.")]:
        (data / f"mgsm_{lang}.jsonl").write_text(json.dumps({"query": q, "response": "5"}) + "\n")
    return str(data / "mgsm_{lang}.jsonl")


def test_editing_an_evaluation_file_reruns_exactly_the_evaluations(tmp_path, tiny_model_dir):
    source = _mgsm_files(tmp_path)
    task = {"task": "mgsm", "source": source, "max_new_tokens": 4}
    path = _config(tmp_path, tiny_model_dir, languages=["es"], heldout=None, evaluation=[task], stage_processes=False)
    first = _run(path)
    assert {"iter_0/eval_M0", "iter_0/eval_M1", "iter_0/train"} <= _ran(first)
    scores_file = first.layout.iter_dir(0) / "eval" / "scores.json"
    assert json.loads(scores_file.read_text())["mgsm"]["M1"]["es"]["n"] == 1

    assert _ran(_run(path)) == set()  # nothing changed: nothing runs

    es = Path(source.replace("{lang}", "es"))
    es.write_text(es.read_text() + json.dumps({"query": "Ana tiene 4 peras y come 1.", "response": "3"}) + "\n")
    assert _ran(_run(path)) == {"iter_0/eval_M0", "iter_0/eval_M1"}
    scores = json.loads(scores_file.read_text())["mgsm"]
    assert scores["M0"]["es"]["n"] == scores["M1"]["es"]["n"] == 2  # not the stale scores of the old file


def test_editing_an_aligned_question_file_reruns_the_stages_that_read_it(tmp_path, tiny_model_dir):
    from test_alignment import _align_config, _aligned_files

    questions = _aligned_files(tmp_path)
    path = _align_config(tmp_path, tiny_model_dir, questions, method="question-alignment", evaluation=[])
    assert {"iter_0/questions", "iter_0/train", "iter_0/heldout_M0", "iter_0/heldout_M1"} <= _ran(_run(path))

    zh = Path(questions.replace("{lang}", "zh"))
    zh.write_text(zh.read_text().replace("猫在哪里", "狗在哪里"))
    # M0's answers do not depend on the questions; the pairs, the model trained on them and its answers do
    assert _ran(_run(path)) == {"iter_0/questions", "iter_0/train", "iter_0/heldout_M1"}


def test_every_model_is_evaluated_once_per_run(tmp_path, tiny_model_dir, monkeypatch):
    import polyrise.runner as runner_module

    choice = tmp_path / "choice_{lang}.jsonl"
    for lang in ("en", "es"):
        row = {"id": "c1", "context": "The sky is", "choices": [" blue", " loud"], "label": 0}
        Path(str(choice).replace("{lang}", lang)).write_text(json.dumps(row) + "\n")
    evaluated: list[str] = []
    real = runner_module.evaluate_model

    def counting(tasks, generator, langs, out_dir, label, **kwargs):
        evaluated.append(label)
        return real(tasks, generator, langs, out_dir, label, **kwargs)

    monkeypatch.setattr(runner_module, "evaluate_model", counting)
    tasks = [{"task": "choice", "source": str(choice), "name": "toy-choice"}]
    path = _config(tmp_path, tiny_model_dir, languages=["es"], iterations=2, evaluation=tasks, stage_processes=False)
    summaries = run_pipeline(load_config(path), Console(file=io.StringIO()))
    assert evaluated == ["M0", "M1", "M2"]
    # iteration 1 reports M1 with the scores iteration 0 computed for it
    assert summaries[1]["scores"]["toy-choice"]["M1"] == summaries[0]["scores"]["toy-choice"]["M1"]
    assert set(summaries[1]["scores"]["heldout"]) == {"M1", "M2"}


class _Note(BaseModel):
    iteration: int


class _CopyMethod:
    """A fourth method, unknown to the runner: one data stage, and a "training" that copies M(t)."""

    name = "copy"
    training = DPOSettings
    sections: ClassVar[dict[str, object]] = {"copy_note": str | None}  # its own config section
    record = _Note
    data_file = "note.jsonl"
    shown = ("copied",)

    def __init__(self, run) -> None:
        self.run = run

    @classmethod
    def check(cls, config) -> None:
        pass

    @staticmethod
    def train(model, rows, out, settings, model_settings, *, seed, cache, report) -> dict[str, float]:
        shutil.copytree(model.path, out)
        return {"copied": float(len(rows))}

    def prepare(self) -> None:
        pass

    def stages(self, t: int) -> list[Stage]:
        note = self.run.layout.file(t, self.data_file)

        def write_note() -> dict[str, int]:
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(json.dumps({"iteration": t}) + "\n")
            return {"notes": 1}

        data = Stage(f"iter_{t}/note", write_note, outputs=[note], loads_model=False)
        return [data, self.run.train_stage(t)]

    def estimate(self) -> dict[str, int]:
        return {"pairs": 1}

    def stats(self, t: int) -> dict[str, int]:
        return json.loads(self.run.layout.file(t, self.data_file).read_text())

    def scores(self, t: int) -> dict[str, object]:
        return {}

    def summary_table(self, summary):
        return f"copy iteration {summary['iteration']}"


def test_a_fourth_method_is_one_module_plus_its_map_line(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(METHODS, "copy", f"{__name__}:_CopyMethod")  # the one line in polyrise.plugins
    path = _config(tmp_path, tiny_model_dir, method="copy", stage_processes=False, copy_note="mine")
    config = load_config(path)
    assert config.copy_note == "mine"  # its own section, composed into the run config
    [summary] = run_pipeline(config, Console(file=io.StringIO()))
    assert summary["stats"] == {"iteration": 0}
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())["stages"]
    assert list(manifest) == ["iter_0/heldout_M0", "iter_0/note", "iter_0/train", "iter_0/heldout_M1"]
    assert manifest["iter_0/train"]["counts"] == {"examples": 1, "copied": 1.0}
    assert all(entry["versions"] == library_versions() for entry in manifest.values())  # each stage's libraries
    assert summary["off_target"].keys() == {"M0", "M1"}
    with pytest.raises(PolyriseError, match=r"copy_note: a `copy_note` section is only used by method 'copy'"):
        load_config(_config(tmp_path, tiny_model_dir, copy_note="mine"))


def test_unknown_methods_and_settings_of_another_trainer_are_config_errors(tmp_path, tiny_model_dir):
    with pytest.raises(PolyriseError, match=r"method: .*unknown method 'nope'; known: .*language-imbalance"):
        load_config(_config(tmp_path, tiny_model_dir, method="nope"))
    questions = tmp_path / "q_{lang}.jsonl"
    align = {"train": ["es"], "questions": {"source": str(questions)}}
    training = {"batch_size": 2, "beta": 0.5}
    with pytest.raises(PolyriseError, match=r"training\.beta: Extra inputs are not permitted"):
        load_config(_config(tmp_path, tiny_model_dir, method="question-alignment", alignment=align, training=training))
    cfg = load_config(_config(tmp_path, tiny_model_dir, method="question-alignment", alignment=align))
    assert type(cfg.training) is SFTSettings and "beta" not in SFTSettings.model_fields
    assert type(load_config(_config(tmp_path, tiny_model_dir)).training) is DPOSettings


def _safetensors_dtypes(path: Path) -> set[str]:
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def test_train_command_honours_the_model_settings(tmp_path, tiny_model_dir):
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        PreferencePair(id=f"p{i}", lang="en", via="es", prompt=f"Say {i}.", chosen=f"{i}.", rejected="No.")
        for i in range(2)
    ]
    write_jsonl(pairs, rows)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"training": {"batch_size": 2, "max_length": 64, "learning_rate": 1e-3}}))
    args = ["train", str(pairs), "--model", str(tiny_model_dir), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--dtype", "bfloat16", "-o", str(tmp_path / "bf16")])
    assert result.exit_code == 0, result.output
    assert _safetensors_dtypes(tmp_path / "bf16" / "model.safetensors") == {"BF16"}

    bad = CliRunner().invoke(app, [*args, "--dtype", "bf16", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "--dtype (model.dtype)" in str(bad.exception)
    assert not (tmp_path / "bad").exists()
