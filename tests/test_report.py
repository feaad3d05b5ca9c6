"""The report renders from a fixture run dir: tables per metric with intervals, paired changes, gap to English,
embedded plots, and the per-sample data the HTML embeds (the page itself in a browser: test_report_browser.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_runs import NASTY, sample_run

from polyrise.errors import PolyriseError
from polyrise.evaluation import item_samples
from polyrise.evaluation.choice import ChoicePrediction, choice_accuracy
from polyrise.evaluation.fewshot import ClassifyPrediction
from polyrise.evaluation.math import MathPrediction
from polyrise.evaluation.reflik import ReferenceNLL
from polyrise.evaluation.translation import TranslationRow
from polyrise.io import read_jsonl, write_jsonl
from polyrise.records import DroppedPrompt, Response
from polyrise.reporting import DISTINGUISHABLE, collect_scores, write_report
from polyrise.stats import bootstrap_interval


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


def _picks(lang: str, correct: list[bool]) -> list[ChoicePrediction]:
    return [
        ChoicePrediction(id=str(i), lang=lang, pred=0 if right else 1, label=0, logliks=[0.0, -1.0])
        for i, right in enumerate(correct)
    ]


def test_report_shows_intervals_and_marks_paired_changes(tmp_path):
    half = [True] * 20 + [False] * 20
    rows = {
        "M0": _picks("en", half) + _picks("de", [False] * 40),
        "M1": _picks("en", half) + _picks("de", [True] * 30 + [False] * 10),
        "M2": _picks("en", half[::-1]) + _picks("de", [True] * 30 + [False] * 10),  # en: other items right
    }
    scores = {label: choice_accuracy(preds) for label, preds in rows.items()}
    judged = {"en": {"win_rate": 0.6, "win_rate_ci_low": 0.4, "win_rate_ci_high": 0.8, "n": 5}}
    for it, labels in (("iter_0", ("M0", "M1")), ("iter_1", ("M1", "M2"))):
        (tmp_path / it / "eval").mkdir(parents=True)
        judge = {label: judged if label != "M0" else {} for label in labels}  # M0 is judged against nothing
        data = {"xnli": {label: scores[label] for label in labels}, "judge": judge}
        (tmp_path / it / "eval" / "scores.json").write_text(json.dumps(data))
    for label, it in (("M0", "iter_0"), ("M1", "iter_0"), ("M2", "iter_1")):  # each in the iteration that made it
        write_jsonl(tmp_path / it / "eval" / f"xnli_{label}.jsonl", rows[label])
        answers = [Response(id="1", lang="en", prompt="q", output="a")]
        write_jsonl(tmp_path / it / "eval" / f"judge_{label}.jsonl", answers)
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text()

    de = [scores[label]["de"] for label in ("M0", "M1", "M2")]
    cells = " | ".join(f"{s['accuracy']:.3f} [{s['accuracy_ci_low']:.3f}, {s['accuracy_ci_high']:.3f}]" for s in de)
    assert f"| de | {cells} | 40 |" in md  # every value with its interval, and n
    assert de[0]["accuracy_ci_low"] == de[0]["accuracy_ci_high"] == 0.0
    assert "| M0→M1 | M1→M2 | n |" in md

    # de: 30 of 40 items turn right, every one of them on the same item: the interval excludes 0
    diffs = np.array([1.0] * 30 + [0.0] * 10)
    low, high = bootstrap_interval(diffs, 0, "de")
    assert f"| de | +0.750 [{low:+.3f}, {high:+.3f}] {DISTINGUISHABLE} | +0.000 [+0.000, +0.000] | 40 |" in md
    # en M1→M2: the same accuracy, but on other items; paired, the change is 0 within a wide interval
    [en_line] = [line for line in md.splitlines() if line.startswith("| en | +0.000 [+0.000, +0.000] | +0.000 [")]
    low, high = bootstrap_interval(np.array([-1.0] * 20 + [1.0] * 20), 0, "en")
    assert en_line == f"| en | +0.000 [+0.000, +0.000] | +0.000 [{low:+.3f}, {high:+.3f}] | 40 |" and low < 0 < high
    assert "M0→M1 not paired: judge_M0.jsonl holds no per-item values, judge_M1.jsonl holds no per-item values." in md
    assert "| en | - | 0.600 [0.400, 0.800] | 0.600 [0.400, 0.800] | 5 |" in md  # judge: M0 has no win rate
    assert DISTINGUISHABLE in html_path.read_text()


def test_missing_rows_are_said_not_guessed(run_dir):
    md = write_report(run_dir)[0].read_text()
    assert "M0→M1 not paired: mgsm_M0.jsonl is missing, mgsm_M1.jsonl is missing." in md
    assert "M1→M2 not paired: mgsm_M1.jsonl is missing, mgsm_M2.jsonl is missing." in md


def test_item_samples_reads_the_rows_of_each_task(tmp_path):
    rows = {
        "choice": [ChoicePrediction(id="1", lang="en", pred=0, label=0, logliks=[0.0, -1.0])],
        "classify": [ClassifyPrediction(id="1", lang="en", pred="yes", label="no", scores=None)],
        "reflik": [ReferenceNLL(id="1", lang="en", nll=6.0, tokens=3)],
        "translation": [
            TranslationRow(
                id="1",
                src_lang="en",
                lang="de",
                source="Hi",
                hypothesis="Hallo",
                reference="Hallo",
                chrf=100.0,
                failed=False,
            )
        ],
        "mgsm": [MathPrediction(id="1", lang="en", output="5", gold="5", pred="5")],
        "judge": [Response(id="1", lang="en", prompt="q", output="a")],
    }
    found = {}
    for task, task_rows in rows.items():
        write_jsonl(tmp_path / f"{task}.jsonl", task_rows)
        samples = item_samples(tmp_path / f"{task}.jsonl")
        found[task] = None if samples is None else {row: sorted(metrics) for row, metrics in samples.items()}
    assert found == {
        "choice": {"en": ["accuracy"]},
        "classify": {"en": ["accuracy"]},
        "reflik": {"en": ["nll", "ppl"]},
        "translation": {"en-de": ["bleu", "chrf++"]},
        "mgsm": {"en": ["accuracy"]},
        "judge": None,  # answers; the win rate is itself a comparison
    }
    assert item_samples(tmp_path / "choice.jsonl")["en"]["accuracy"].values.tolist() == [1.0]
    (tmp_path / "empty.jsonl").write_text("")
    assert item_samples(tmp_path / "empty.jsonl") is None


def test_heldout_off_target_change_is_paired_and_clones_are_not_measurable(tmp_path):
    """A run's held-out answers: M0 answers Spanish prompts in English, M1 in Spanish; the change is paired over
    the same prompts, judged with the run's `langid` settings; a clone's row says "not measurable"."""
    from polyrise.evaluation.fidelity import off_target_rates

    english = "The capital of Australia is Canberra, a planned city chosen as a compromise between two others."
    spanish = "La capital de Australia es Canberra, una ciudad planificada elegida como compromiso entre otras dos."
    answers = {
        "M0": [Response(id=str(i), lang="es", prompt="q", output=english if i < 8 else spanish) for i in range(10)],
        "M1": [Response(id=str(i), lang="es", prompt="q", output=spanish) for i in range(10)],
    }
    for label in answers:
        answers[label].append(Response(id="0", lang="qaa", prompt="q", output="blorp snark vintu ablo kres"))
    (tmp_path / "iter_0" / "eval").mkdir(parents=True)
    scores = {"heldout": {label: off_target_rates(rows) for label, rows in answers.items()}}
    (tmp_path / "iter_0" / "eval" / "scores.json").write_text(json.dumps(scores))
    for label, rows in answers.items():
        write_jsonl(tmp_path / "iter_0" / "eval" / f"heldout_{label}.jsonl", rows)
    (tmp_path / "config.yaml").write_text("langid:\n  min_words: 5\n")
    md = write_report(tmp_path)[0].read_text()
    low, high = bootstrap_interval(np.array([-1.0] * 8 + [0.0] * 2), 0, "es")
    assert f"| es | {-0.8:+.3f} [{low:+.3f}, {high:+.3f}] {DISTINGUISHABLE} | 10 |" in md
    assert "| qaa | not measurable | not measurable | 0 |" in md
    (tmp_path / "config.yaml").write_text("langid:\n  min_words: 1000\n")  # nothing long enough to tell
    assert "heldout_M0.jsonl holds no per-item values" in write_report(tmp_path)[0].read_text()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[1, 2]", "expected {task: {model: {row: metrics}}}, got a list"),
        ('{"mgsm": [1]}', "mgsm: expected {model: {row: {metric: value}}}"),
        ('{"mgsm": {"M0": {"en": 0.5}}}', "mgsm: expected {model: {row: {metric: value}}}"),
    ],
)
def test_scores_of_the_wrong_shape_are_one_error_naming_the_file(tmp_path, content, says):
    (tmp_path / "scores.json").write_text(content)
    with pytest.raises(
        PolyriseError, match=rf"^{tmp_path / 'scores.json'}: " + says.replace("{", r"\{").replace("[", r"\[")
    ):
        write_report(tmp_path)


def test_a_copied_iteration_dir_is_ignored(run_dir):
    import shutil

    before = write_report(run_dir)[0].read_text()
    shutil.copytree(run_dir / "iter_0", run_dir / "iter_0.bak")
    assert write_report(run_dir)[0].read_text() == before


def _embedded(page: str) -> dict:
    """The per-sample data of a report.html, as its script reads it."""
    [block] = re.findall(r'<script type="application/json" id="polyrise-data">(.*?)</script>', page, re.S)
    return json.loads(block)


def test_html_embeds_every_pair_and_evaluation_row_escaped(tmp_path):
    run = sample_run(tmp_path)
    page = write_report(run)[1].read_text()
    data = _embedded(page)
    pairs = [(p["iter"], p["lang"], p["id"], p["status"], p["correct"]) for p in data["pairs"]]
    assert pairs == [
        (0, "es", "g1", "kept", [True, False]),  # reward.jsonl: chosen right, rejected wrong
        (0, "en/es", "g1", "kept", None),
        (0, "de", "g2", "kept", None),
        (0, "es", "g2", "wrong_language", None),
        (0, "de", "g3", "translation_failure", None),
        (1, "es", "g4", "kept", None),
    ]
    assert data["pairs"][4]["chosen"] is None and data["pairs"][4]["rejected"] == "Sieben."
    evals = [(r["iter"], r["model"], r["task"], r["lang"], r["verdict"], r["detected"]) for r in data["evals"]]
    assert evals == [
        (0, "M0", "heldout", "es", "off-target", "en"),
        (0, "M1", "heldout", "es", "on-target", "es"),
        (0, "M0", "mgsm", "en", "right", None),  # four words: too short to tell the language
        (0, "M0", "mgsm", "es", "wrong", None),
        (0, "M1", "mgsm", "en", "right", None),
        (0, "M1", "mgsm", "es", "right", None),
        (1, "M2", "mgsm", "en", "wrong", None),
        (1, "M2", "mgsm", "es", "right", None),
    ]
    assert data["evals"][3]["gold"] == "5" and data["evals"][3]["output"] == "La respuesta es 7."
    assert data["left_out"] == {"pairs": 0, "evals": 0}
    # a model's `</script>`, markup and quotes reach the page only inside the JSON, escaped, and come back intact
    assert data["pairs"][5]["chosen"] == data["evals"][6]["output"] == NASTY
    assert page.count("</script>") == 2 and "<b>bold</b>" not in page and "<!--" not in page
    assert re.search(r"https?://", page) is None  # nothing to fetch: one self-contained file


def test_html_caps_rows_per_group_and_clips_long_texts(tmp_path, monkeypatch):
    import polyrise.reporting.samples

    monkeypatch.setattr(polyrise.reporting.samples, "MAX_ROWS", 1)
    monkeypatch.setattr(polyrise.reporting.samples, "MAX_CHARS", 10)
    run = sample_run(tmp_path)
    extra = MathPrediction(id="2", lang="es", output="Son 4.", gold="4")
    write_jsonl(
        run / "iter_0" / "eval" / "mgsm_M0.jsonl",
        [*read_jsonl(run / "iter_0" / "eval" / "mgsm_M0.jsonl", MathPrediction), extra],
    )
    data = _embedded(write_report(run)[1].read_text())
    assert [(r["model"], r["lang"], r["id"]) for r in data["evals"] if r["task"] == "mgsm"][:2] == [
        ("M0", "en", "1"),
        ("M0", "es", "1"),
    ]
    assert [(p["iter"], p["lang"], p["id"]) for p in data["pairs"]] == [
        (0, "es", "g1"),
        (0, "en/es", "g1"),
        (0, "de", "g2"),
        (1, "es", "g4"),
    ]
    assert data["left_out"] == {"pairs": 2, "evals": 1} and data["max_rows"] == 1
    assert data["pairs"][3]["chosen"] == f"{NASTY[:10]}… [clipped: {len(NASTY):,} characters]"


def test_a_bad_sample_row_is_one_error_and_writes_nothing(tmp_path):
    run = sample_run(tmp_path)
    with (run / "iter_0" / "pairs_dropped.jsonl").open("a") as fh:
        fh.write('{"id": "g9", "lang": "es"}\n')
    with pytest.raises(PolyriseError, match=r"pairs_dropped\.jsonl:3"):
        write_report(run)
    assert not (run / "report.md").exists() and not (run / "report.html").exists()


def test_html_shows_the_dropped_prompts_beside_the_pairs(tmp_path):
    run = sample_run(tmp_path)
    junk = DroppedPrompt(
        id="g7", lang="de", source="Name two languages.", translation="<German:</German>", reason="protocol_tags"
    )
    failed = DroppedPrompt(id="g8", lang="es", source="Count to 3.", translation=None, reason="translation_failure")
    write_jsonl(run / "iter_0" / "prompts_dropped.jsonl", [junk, failed])
    data = _embedded(write_report(run)[1].read_text())
    shown = [p for p in data["pairs"] if p["status"].startswith("prompt ")]
    assert [(p["iter"], p["lang"], p["id"], p["status"], p["prompt"], p["sides"]) for p in shown] == [
        (0, "de", "g7", "prompt protocol_tags", "Name two languages.", ["translation"]),
        (0, "es", "g8", "prompt translation_failure", "Count to 3.", ["translation"]),
    ]
    assert [p["translation"] for p in shown] == ["<German:</German>", None]


def test_question_alignment_marks_trained_languages_and_embeds_its_question_pairs(tmp_path):
    """The method's `report_views`: a question-alignment run marks its trained languages `*` (and says so) and
    the page shows its question pairs, each a question and the same question in the target language."""
    from polyrise.records import QuestionPair

    config = {"method": "question-alignment", "languages": ["zh", "de"], "alignment": {"train": ["zh"]}}
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    (tmp_path / "iter_0" / "eval").mkdir(parents=True)
    pair = QuestionPair(id="q1", lang="zh", target="en", prompt="二加三是多少", completion="What is 2 + 3?")
    write_jsonl(tmp_path / "iter_0" / "question_pairs.jsonl", [pair])
    rows = {lang: {"accuracy": 0.5, "n": 4} for lang in ("en", "zh", "de")}
    (tmp_path / "iter_0" / "eval" / "scores.json").write_text(json.dumps({"mgsm": {"M0": rows, "M1": rows}}))
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text()
    assert "Question alignment: languages marked * (zh) were in training" in md
    assert "| zh * | 0.500 | 0.500 | 4 |" in md and "| de | 0.500 | 0.500 | 4 |" in md
    [shown] = _embedded(html_path.read_text())["pairs"]
    assert (shown["lang"], shown["status"], shown["sides"], shown["completion"]) == (
        "zh-en",
        "kept",
        ["completion"],
        "What is 2 + 3?",
    )
