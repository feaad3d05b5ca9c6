"""Cross-lingual transfer of a gain from trained to unseen languages."""

from __future__ import annotations

import json

import pytest
import yaml

from polyrise.analysis.transfer import load_scores, transfer, write_transfer
from polyrise.errors import PolyriseError


def _scores(base: dict[str, float], tuned: dict[str, float], metric: str = "accuracy") -> dict:
    return {
        "M0": {lang: {metric: v, "n": 10} for lang, v in base.items()},
        "M1": {lang: {metric: v, "n": 10} for lang, v in tuned.items()},
    }


def test_gain_and_transfer_ratio():
    by_model = _scores(
        {"en": 0.5, "zh": 0.1, "de": 0.2, "fr": 0.3, "average": 0.3},
        {"en": 0.5, "zh": 0.3, "de": 0.3, "fr": 0.2, "average": 0.35},
    )
    rows = transfer(by_model, "accuracy", "M0", "M1", ["zh"])
    assert list(rows) == ["zh", "en", "de", "fr"]  # trained first, averages and directions left out
    assert rows["zh"]["gain"] == pytest.approx(0.2) and rows["zh"]["transfer"] is None
    assert rows["de"]["transfer"] == pytest.approx(0.5)
    assert rows["fr"]["transfer"] == pytest.approx(-0.5)
    assert rows["en"]["transfer"] == pytest.approx(0.0)


def test_directions_to_and_from_english_are_compared_within_their_group():
    by_model = _scores(
        {"zh-en": 10.0, "de-en": 20.0, "en-zh": 1.0, "en-de": 10.0, "de-fr": 5.0},
        {"zh-en": 14.0, "de-en": 22.0, "en-zh": 2.0, "en-de": 8.0, "de-fr": 9.0},
        "chrf++",
    )
    rows = transfer(by_model, "chrf++", "M0", "M1", ["zh"])
    assert list(rows) == ["zh-en", "de-en", "en-zh", "en-de"]  # de-fr has no English side
    assert rows["de-en"]["group"] == "L-en" and rows["de-en"]["transfer"] == pytest.approx(0.5)  # 2 / 4
    assert rows["en-de"]["group"] == "en-L" and rows["en-de"]["transfer"] == pytest.approx(-2.0)  # -2 / 1


def test_lower_is_better_metrics_flip_the_sign_and_zero_gain_is_undefined():
    off = _scores({"zh": 0.5, "de": 0.4}, {"zh": 0.25, "de": 0.3}, "off_target")
    rows = transfer(off, "off_target", "M0", "M1", ["zh"])
    assert rows["zh"]["gain"] == pytest.approx(0.25) and rows["de"]["transfer"] == pytest.approx(0.4)
    flat = _scores({"zh": 0.5, "de": 0.4}, {"zh": 0.5, "de": 0.3})
    assert transfer(flat, "accuracy", "M0", "M1", ["zh"])["de"]["transfer"] is None
    with pytest.raises(PolyriseError, match="no scores of model 'M2'"):
        transfer(flat, "accuracy", "M0", "M2", ["zh"])


def test_run_dirs_give_their_trained_languages_and_files_are_written(tmp_path):
    run = tmp_path / "run"
    (run / "iter_0" / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {"method": "question-alignment", "languages": ["zh", "de", "fr"], "alignment": {"train": ["zh"]}}
        )
    )
    mgsm = _scores({"en": 0.4, "zh": 0.1, "de": 0.1, "fr": 0.2}, {"en": 0.4, "zh": 0.3, "de": 0.2, "fr": 0.2})
    (run / "iter_0" / "eval" / "scores.json").write_text(json.dumps({"mgsm": mgsm}))
    scores, trained = load_scores([run])
    assert trained == ["zh"]
    results, files = write_transfer(scores, trained, "M0", "M1", tmp_path / "out")
    assert results["mgsm"]["accuracy"]["de"]["transfer"] == pytest.approx(0.5)
    assert {f.name for f in files} == {"transfer.json", "transfer.md", "transfer_mgsm_accuracy.png"}
    assert all(f.stat().st_size > 0 for f in files)
    assert "| mgsm | accuracy | zh * |" in (tmp_path / "out" / "transfer.md").read_text()

    with pytest.raises(PolyriseError, match="pass --trained"):
        write_transfer(scores, [], "M0", "M1", tmp_path / "out2")
    with pytest.raises(PolyriseError, match="no task has per-language scores"):
        write_transfer(scores, ["zh", "de", "fr", "en"], "M0", "M1", tmp_path / "out3")  # nothing unseen
    with pytest.raises(PolyriseError, match="model label 'M0' is in both"):
        load_scores([run, run / "iter_0" / "eval" / "scores.json"])
    with pytest.raises(PolyriseError, match="no such run directory"):
        load_scores([tmp_path / "missing"])


def test_cli_transfer_from_two_scores_files(tmp_path):
    from typer.testing import CliRunner

    from polyrise.cli import app

    base = {"translation": {"base": {"zh-en": {"chrf++": 10.0}, "zh": {"accuracy": 0.2}, "de": {"accuracy": 0.3}}}}
    tuned = {"translation": {"tuned": {"zh": {"accuracy": 0.6}, "de": {"accuracy": 0.4}}}}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(tuned))
    args = ["analyze", "transfer", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--base", "base"]
    result = CliRunner().invoke(app, [*args, "--tuned", "tuned", "--trained", "zh", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert saved["results"]["translation"]["accuracy"]["de"]["transfer"] == pytest.approx(0.25)
    assert "0.25" in result.output


def test_every_registered_metric_gains_in_its_own_direction():
    """The directions come from the task registry: a fall is a gain exactly where its metric is lower-is-better."""
    from polyrise.evaluation import HEADLINE_METRICS, METRICS

    assert {m.name for m in METRICS.values() if m.lower_is_better} >= {"nll", "off_target", "ppl"}
    assert "ppl" not in HEADLINE_METRICS and {"accuracy", "win_rate", "chrf++", "nll"} <= set(HEADLINE_METRICS)
    for metric in METRICS.values():
        rows = transfer(
            _scores({"zh": 2.0, "de": 2.0}, {"zh": 1.0, "de": 1.5}, metric.name), metric.name, "M0", "M1", ["zh"]
        )
        assert rows["zh"]["gain"] == pytest.approx(1.0 if metric.lower_is_better else -1.0), metric
        assert rows["de"]["transfer"] == pytest.approx(0.5)
