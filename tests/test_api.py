"""The Python API (`polyrise.api`, exposed lazily as `polyrise.*`): the pieces the CLI used to hold, called
directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import polyrise
from polyrise import api
from polyrise.errors import PolyriseError
from polyrise.records import TextToTranslate


def test_import_polyrise_loads_no_torch_and_the_api_is_at_the_top_level():
    code = "import sys, polyrise; print(sorted({'torch', 'transformers', 'polyrise.api'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert polyrise.run is api.run and polyrise.evaluate is api.evaluate and polyrise.report is api.report
    assert set(polyrise.__all__) <= set(dir(polyrise))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = polyrise.nope


def test_the_report_and_export_functions_are_not_shadowed_by_modules():
    """`polyrise.report` stays the function after every module is imported (the modules are `reporting` and
    `exporting`: importing a submodule `polyrise.report` would replace the attribute)."""
    import polyrise.cli  # every subcommand and what they import
    import polyrise.exporting
    import polyrise.reporting

    assert callable(polyrise.report) and callable(polyrise.export)


def test_merge_scores_adds_tasks_and_labels_and_replaces_the_same_entry(tmp_path):
    out = tmp_path / "eval"
    api.merge_scores(out, "mgsm", "M0", {"en": {"accuracy": 0.5}})
    api.merge_scores(out, "mgsm", "M1", {"en": {"accuracy": 0.6}})
    path = api.merge_scores(out, "langid", "outputs", {"es": {"off_target": 0.1}})
    api.merge_scores(out, "mgsm", "M0", {"en": {"accuracy": 0.7}})
    assert json.loads(path.read_text()) == {
        "mgsm": {"M0": {"en": {"accuracy": 0.7}}, "M1": {"en": {"accuracy": 0.6}}},
        "langid": {"outputs": {"es": {"off_target": 0.1}}},
    }


def test_score_merges_into_scores_json_as_eval_does(tmp_path):
    """`score` used to overwrite scores.json; now re-scoring two files (or after an `eval`) into one dir adds up."""
    rows = [{"id": "1", "lang": "en", "output": "The answer is 5.", "gold": 5}]
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    api.merge_scores(out, "judge", "M1", {"en": {"win_rate": 0.5}})  # what an earlier `eval` left
    first = api.score("mgsm", tmp_path / "a.jsonl", out=out)
    api.score("langid", tmp_path / "b.jsonl", out=out)
    merged = json.loads((out / "scores.json").read_text())
    assert set(merged) == {"judge", "mgsm", "langid"} and set(merged["mgsm"]) == {"a"}
    assert first["en"]["accuracy"] == merged["mgsm"]["a"]["en"]["accuracy"] == 1.0 and set(merged["langid"]) == {"b"}
    assert (out / "langid_rows.jsonl").is_file()
    with pytest.raises(PolyriseError, match="unknown task 'bleu' for `score`"):
        api.score("bleu", tmp_path / "a.jsonl")


@pytest.mark.parametrize(("text", "part"), [(None, None), ("0/2", slice(0, None, 2)), (" 2/3 ", slice(2, None, 3))])
def test_parse_shard(text, part):
    assert api.parse_shard(text) == part


@pytest.mark.parametrize("text", ["2/2", "0/0", "x", "1", "-1/2", "1/2/3", "½/2"])
def test_a_bad_shard_is_one_error(text):
    with pytest.raises(PolyriseError) as error:
        api.parse_shard(text)
    assert str(error.value) == f"--shard {text}: expected K/N with 0 <= K < N, e.g. --shard 0/2 and --shard 1/2"


def test_translation_jobs_take_prompts_and_responses_into_the_other_languages(tmp_path):
    rows = [
        TextToTranslate(id="p", lang="en", instruction="Say hi."),
        TextToTranslate(id="r", lang="es", output="Hola."),
    ]
    jobs = api.translation_jobs(rows, ["en", "es", "de"], tmp_path / "in.jsonl")
    assert [(j.id, j.kind, j.src_lang, j.lang, j.text) for j in jobs] == [
        ("p", "prompt", "en", "es", "Say hi."),
        ("p", "prompt", "en", "de", "Say hi."),
        ("r", "response", "es", "en", "Hola."),
        ("r", "response", "es", "de", "Hola."),
    ]
    with pytest.raises(PolyriseError, match=r"in.jsonl: row 'x' has neither `instruction` nor `output`"):
        api.translation_jobs([TextToTranslate(id="x", lang="en")], ["es"], tmp_path / "in.jsonl")


def test_eval_task_from_settings_names_the_option():
    task = api.eval_task({"task": "mgsm", "limit": 3}, ["few_shot=2"])
    assert (task.task, task.limit, task.few_shot) == ("mgsm", 3, 2)
    with pytest.raises(PolyriseError, match="--labels: not an option of task 'mgsm'"):
        api.eval_task({"task": "mgsm", "labels": ["a"]})


def test_a_run_config_for_several_machines_is_refused_before_any_work(tmp_path):
    accelerate = Path("examples/accelerate/multi-node.yaml")
    config = tmp_path / "run.yaml"
    config.write_text(f"name: x\noutput_dir: {tmp_path / 'runs'}\nlanguages: [es]\n")
    with pytest.raises(
        PolyriseError, match="trains on 2 machines, and a run without a `cluster` trains on this one only"
    ):
        api.run(config, accelerate_config=accelerate)
    with pytest.raises(PolyriseError, match="trains on 2 machines"):
        api.plan(polyrise.load_config(config), accelerate_config=accelerate)
    assert not (tmp_path / "runs").exists()
    cfg = api.load_run_config(polyrise.load_config(config), name="y", iterations=2)
    assert (cfg.name, cfg.iterations, cfg.run_dir) == ("y", 2, tmp_path / "runs" / "y")


def test_model_labels_from_entries():
    assert api.model_labels(None) == {api.DEFAULT_MODEL: api.DEFAULT_MODEL}
    assert api.model_labels(["before=a/m0", "runs/x/iter_0/model/"]) == {
        "before": "a/m0",
        "model": "runs/x/iter_0/model/",
    }
    assert api.model_labels({"a": "b"}) == {"a": "b"}
    with pytest.raises(PolyriseError, match="--model: label 'm' given twice"):
        api.model_labels(["m=a", "m=b"])
