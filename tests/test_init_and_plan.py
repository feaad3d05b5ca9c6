"""`polyrise init` writes a commented config that loads; `polyrise run --dry-run` plans with the runner's own
manifest logic and writes nothing; `--name`/`--output-dir` override the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_pipeline import _config
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.presets import PRESET_DIR, preset_names, write_preset

EXAMPLES = Path(__file__).parents[1] / "examples"


def _comments(text: str) -> list[str]:
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


@pytest.mark.parametrize("preset", ["quickstart", "paper", "sandbox"])
def test_each_preset_writes_a_commented_config_that_loads(tmp_path, preset):
    out = tmp_path / f"{preset}.yaml"
    result = CliRunner().invoke(
        app, ["init", "--preset", preset, "--model", "org/model-1", "--languages", "sw,th", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cfg = load_config(out)
    assert cfg.model.spec == "org/model-1"
    assert cfg.languages == ["sw", "th"]
    assert all(task.langs == [cfg.source_lang, "sw", "th"] for task in cfg.evaluation if task.langs)
    template = (PRESET_DIR / f"{preset}.yaml").read_text()
    assert len(_comments(template)) >= 3
    header, *kept = _comments(out.read_text())
    assert kept == _comments(template)  # every comment kept, in place
    assert header.startswith(f"# `polyrise init --preset {preset}` with model.spec and the languages of your choice")
    # everything else is the preset's: the same config but for the three substituted keys
    expected = yaml.safe_load(template) | {"languages": ["sw", "th"]}
    written = yaml.safe_load(out.read_text())
    assert written["model"] | {"spec": "x"} == expected["model"] | {"spec": "x"}
    assert {k: v for k, v in written.items() if k not in ("model", "evaluation")} == {
        k: v for k, v in expected.items() if k not in ("model", "evaluation")
    }


def test_presets_are_the_examples_and_defaults_keep_them():
    assert preset_names() == ["paper", "quickstart", "sandbox"]
    assert (PRESET_DIR / "paper.yaml").read_text() == (EXAMPLES / "paper-llama3-8b.yaml").read_text()


def test_init_refuses_to_overwrite_and_checks_model_and_languages(tmp_path):
    out = tmp_path / "c.yaml"
    write_preset(out, "quickstart")
    assert load_config(out).model.spec == "embedded:smollm2-135m-instruct"
    with pytest.raises(PolyriseError, match=r"c\.yaml exists; pass --force"):
        write_preset(out, "quickstart", languages=["de"])
    write_preset(out, "quickstart", languages=["de"], force=True)
    assert load_config(out).languages == ["de"]

    other = tmp_path / "other.yaml"
    for kwargs, message in [
        ({"model": "not a model"}, r"--model 'not a model': not embedded:<name>, a model directory or a Hugging Face"),
        ({"model": "embedded:nope"}, r"unknown embedded model; known: smollm2-135m-instruct"),
        ({"model": str(tmp_path / "missing")}, r"--model: model path .* does not exist"),
        ({"languages": ["es", "es"]}, r"other\.yaml: languages: duplicate language codes"),
        ({"languages": ["en"]}, r"source_lang 'en' is also listed in languages"),
    ]:
        with pytest.raises(PolyriseError, match=message):
            write_preset(other, "quickstart", **kwargs)
    result = CliRunner().invoke(app, ["init", "--out", str(other), "--languages", "es,xx"])
    assert "unknown language code 'xx'" in str(result.exception)
    assert not other.exists()


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def _plan(result) -> dict[str, str]:
    """stage → status, from the printed stage table."""
    rows = re.findall(r"(iter_\d+/\w+)\s*│\s*([^│]+?)\s*│", result.output)
    return dict(rows)


def test_dry_run_writes_nothing_and_reuses_the_runners_plan(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, stage_processes=False, iterations=2)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert _tree(tmp_path) == before  # no run dir, no cache, nothing
    plan = _plan(result)
    assert plan["iter_0/prompts"] == "to run"
    assert plan["iter_0/generate"] == "to run (after iter_0/prompts)"
    assert plan["iter_0/pairs"] == "to run (after iter_0/prompts, iter_0/generate, iter_0/translate)"
    assert plan["iter_1/prompts"] == "to run (after iter_0/train)"  # M1 does not exist yet: not hashed
    assert list(plan)[-1] == "iter_1/heldout_M2"
    assert "name: tiny" in result.output  # the resolved config
    # 4 prompts, 2 languages: 12 answers, 16 translations of answers, at most 16 pairs = 4 steps of 4
    work = dict(re.findall(r"│ ([a-z -]+?)\s*│\s*(\d+) │", result.output))
    assert work == {
        "source prompts": "4",
        "prompt translations": "8",
        "answers": "12",
        "answer translations": "16",
        "pairs": "16",
        "training steps": "4",
        "held-out answers per model": "6",
    }


def test_dry_run_of_a_finished_run_shows_it_done_and_an_edit_to_rerun(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, stage_processes=False)
    assert CliRunner().invoke(app, ["run", str(config)]).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    before = _tree(run_dir)
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert set(_plan(result).values()) == {"done"}
    assert len(_plan(result)) == 7  # heldout_M0, prompts, generate, translate, pairs, train, heldout_M1

    data = yaml.safe_load(config.read_text())
    data["training"]["beta"] = 0.2
    config.write_text(yaml.safe_dump(data))
    plan = _plan(CliRunner().invoke(app, ["run", str(config), "--dry-run"]))
    assert {stage for stage, status in plan.items() if status != "done"} == {"iter_0/train", "iter_0/heldout_M1"}
    assert plan["iter_0/train"] == "to run"
    assert plan["iter_0/heldout_M1"] == "to run (after iter_0/train)"

    # --name and --output-dir are applied as edits of the file: another run dir, where nothing is done
    result = CliRunner().invoke(
        app, ["run", str(config), "--dry-run", "--name", "other", "--output-dir", str(tmp_path / "elsewhere")]
    )
    assert set(_plan(result).values()) - {"done"} and "done" not in _plan(result).values()
    assert "name: other" in result.output and f"output_dir: {tmp_path / 'elsewhere'}" in result.output
    assert _tree(run_dir) == before
    assert not (tmp_path / "elsewhere").exists()
