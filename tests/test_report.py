"""The report renders from a fixture run dir: tables per metric, gap to English, embedded plots."""

from __future__ import annotations

import json

import pytest

from polyrise.errors import PolyriseError
from polyrise.report import collect_scores, write_report


@pytest.fixture
def run_dir(tmp_path):
    it0, it1 = tmp_path / "iter_0" / "eval", tmp_path / "iter_1" / "eval"
    it0.mkdir(parents=True)
    it1.mkdir(parents=True)
    mgsm = lambda en, es: {"en": {"accuracy": en, "n": 10}, "es": {"accuracy": es, "n": 10}}  # noqa: E731
    (it0 / "scores.json").write_text(
        json.dumps(
            {
                "mgsm": {"M0": mgsm(0.5, 0.1), "M1": mgsm(0.5, 0.3)},
                "heldout": {
                    "M0": {"en": {"off_target": 0.0, "n": 8}, "de": {"off_target": 0.5, "n": 8}},
                    "M1": {"en": {"off_target": 0.0, "n": 8}, "de": {"off_target": 0.25, "n": 8}},
                },
            }
        )
    )
    (it1 / "scores.json").write_text(json.dumps({"mgsm": {"M1": mgsm(0.5, 0.3), "M2": mgsm(0.6, 0.4)}}))
    return tmp_path


def test_collects_every_iteration(run_dir):
    scores = collect_scores(run_dir)
    assert sorted(scores["mgsm"]) == ["M0", "M1", "M2"]
    assert scores["heldout"]["M1"]["de"]["off_target"] == 0.25


def test_report_tables_gaps_and_plots(run_dir):
    md_path, html_path = write_report(run_dir)
    md = md_path.read_text()
    assert "## mgsm: accuracy (higher is better)" in md
    assert "| es | 0.100 | 0.300 | 0.400 |" in md
    assert "| es | 0.400 | 0.200 | 0.200 |" in md  # gap to English: 0.5-0.1, 0.5-0.3, 0.6-0.4
    assert "## heldout: off_target (lower is better)" in md
    assert "| de | 0.500 | 0.250 |" in md
    plots = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert plots == [
        "heldout_off_target_by_language.png",
        "heldout_off_target_gap.png",
        "mgsm_accuracy_by_language.png",
        "mgsm_accuracy_gap.png",
    ]
    page = html_path.read_text()
    assert page.count('src="data:image/png;base64,') == 4  # readable without a server
    assert "plots/" not in page


def test_no_or_bad_scores_is_an_error(tmp_path):
    with pytest.raises(PolyriseError, match=r"no scores\.json"):
        collect_scores(tmp_path)
    (tmp_path / "scores.json").write_text("{bad")
    with pytest.raises(PolyriseError, match=r"scores\.json:1: invalid JSON"):
        collect_scores(tmp_path)


def test_metric_directions_and_headlines_come_from_the_task_registry(tmp_path):
    reflik = {label: {"en": {"nll": v, "ppl": 2.0, "n": 3}} for label, v in (("M0", 2.0), ("M1", 1.5))}
    (tmp_path / "scores.json").write_text(json.dumps({"reflik": reflik}))
    md = write_report(tmp_path)[0].read_text()
    assert "## reflik: nll (lower is better)" in md  # reflik.METRICS: nll is lower-is-better and a headline
    assert "ppl" not in md  # declared, but not a headline
