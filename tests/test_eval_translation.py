"""Translation quality: sacrebleu scores, parallel data loading, and self-translation scored through an Engine."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from polyrise.errors import PolyriseError
from polyrise.evaluation.translation import (
    ParallelRow,
    bleu_tokenize,
    corpus_samples,
    corpus_scores,
    load_parallel,
    self_translation_quality,
)
from polyrise.generation import ChatRequest, Generator
from polyrise.generation.cache import GenerationCache
from polyrise.languages import get_language
from polyrise.settings import SamplingSettings
from polyrise.stats import bootstrap_distribution, ci_keys, resample_indices

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # /work/shared/data beside the repo
ALPAGASUS = SHARED_DATA / "alpagasus-1k"
ALPAGASUS_LANGS = ["ar", "de", "en", "es", "fr", "it", "ja", "ko", "ru", "th", "zh"]

HYPS = ["The cat sat on the mat.", "It is raining heavily today", "A quick brown dog jumps."]
REFS = ["The cat sat on the mat.", "It rains heavily today.", "The quick brown fox jumps over the lazy dog."]


def test_identical_texts_score_100():
    scores = corpus_scores(REFS, REFS)
    assert scores["chrf++"] == pytest.approx(100.0)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["n"] == 3
    assert corpus_scores(["今天天气很好。"], ["今天天气很好。"], lang="zh")["bleu"] == pytest.approx(100.0)


def test_scores_match_sacrebleu_directly():
    scores = corpus_scores(HYPS, REFS, lang="en")
    assert scores["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a").score)
    assert scores["bleu_tokenize"] == "13a"
    # Pinned values (sacrebleu 2.6 defaults), so a silent change of metric settings shows up here.
    assert (round(scores["chrf++"], 2), round(scores["bleu"], 2)) == (58.83, 42.89)
    assert 0 < scores["bleu"] < scores["chrf++"] < 100


def test_bleu_tokenizer_follows_target_language():
    assert bleu_tokenize("zh") == "zh"
    assert bleu_tokenize("th") == "char"
    assert bleu_tokenize("de") == bleu_tokenize(None) == "13a"
    assert bleu_tokenize("ja") in {"ja-mecab", "char"}  # mecab only with sacrebleu[ja]
    assert bleu_tokenize("ko") in {"ko-mecab", "char"}
    # Without a tokenizer, Thai BLEU of a one-word difference is 0; per character it is not.
    th = corpus_scores(["วันนี้อากาศดีมาก"], ["วันนี้อากาศดี"], lang="th")
    assert th["bleu_tokenize"] == "char" and th["bleu"] > 0


def test_corpus_scores_edge_cases():
    with pytest.raises(PolyriseError, match="2 hypotheses but 1 references"):
        corpus_scores(["a", "b"], ["a"])
    empty = corpus_scores([], [])
    assert empty["n"] == 0 and empty["chrf++"] != empty["chrf++"]  # NaN


# ------------------------------------------------------------------------------------------------ parallel


def _write(path: Path, rows: list[dict | str]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def test_load_parallel_joins_on_id_in_first_language_order(tmp_path):
    _write(tmp_path / "en.jsonl", [{"id": i, "instruction": f"text {i}"} for i in ("b", "a", "c", "d")])
    _write(tmp_path / "de.jsonl", [{"id": i, "instruction": f"Text {i}"} for i in ("a", "b", "d")] + [""])
    rows = load_parallel(tmp_path / "{lang}.jsonl", ["en", "de"])
    assert rows == [
        ParallelRow("b", {"en": "text b", "de": "Text b"}),
        ParallelRow("a", {"en": "text a", "de": "Text a"}),
        ParallelRow("d", {"en": "text d", "de": "Text d"}),
    ]  # "c" has no German text
    assert [r.id for r in load_parallel(str(tmp_path / "{lang}.jsonl"), ["en", "de"], limit=2)] == ["b", "a"]


def test_load_parallel_reads_json_arrays_with_integer_ids(tmp_path):
    """The X-AlpacaEval shape: one JSON array per language, integer ids."""
    (tmp_path / "en.json").write_text(json.dumps([{"id": 1, "instruction": "Hi"}, {"id": 2, "instruction": "Bye"}]))
    (tmp_path / "de.json").write_text(json.dumps([{"id": 2, "instruction": "Tschüss", "dataset": "x"}]))
    assert load_parallel(tmp_path / "{lang}.json", ["en", "de"]) == [ParallelRow("2", {"en": "Bye", "de": "Tschüss"})]
    (tmp_path / "de.json").write_text(json.dumps([{"id": 2}]))
    with pytest.raises(PolyriseError, match=r"de\.json: item 0: instruction: Field required"):
        load_parallel(tmp_path / "{lang}.json", ["en", "de"])
    (tmp_path / "de.json").write_text(json.dumps({"id": 2}))
    with pytest.raises(PolyriseError, match="expected a JSON array of objects"):
        load_parallel(tmp_path / "{lang}.json", ["en", "de"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "1", "instruction": "x"}, {"id": "1", "instruction": "y"}], r"en\.jsonl:2: duplicate id '1'"),
        ([{"id": "1", "instruction": "x"}, {"id": "2"}], r"en\.jsonl:2: instruction: Field required"),
        ([{"id": [3], "instruction": "x"}], r"en\.jsonl:1: id: Input should be a valid string"),
        ([{"id": "1", "lang": "de", "instruction": "x"}], r"en\.jsonl:1: lang 'de' in the file of language 'en'"),
        (["not json"], r"en\.jsonl:1: invalid JSON"),
    ],
)
def test_load_parallel_errors_name_file_and_line(tmp_path, rows, message):
    _write(tmp_path / "en.jsonl", rows)
    with pytest.raises(PolyriseError, match=message):
        load_parallel(tmp_path / "{lang}.jsonl", ["en"])


def test_load_parallel_bad_arguments(tmp_path):
    with pytest.raises(PolyriseError, match=r"\{lang\} placeholder"):
        load_parallel(tmp_path / "en.jsonl", ["en"])
    with pytest.raises(PolyriseError, match="no such file"):
        load_parallel(tmp_path / "{lang}.jsonl", ["en"])


@pytest.mark.skipif(not ALPAGASUS.is_dir(), reason="shared reference data not present")
def test_load_parallel_on_alpagasus():
    rows = load_parallel(ALPAGASUS / "{lang}.jsonl", ALPAGASUS_LANGS)
    assert len(rows) == 1000
    assert rows[0].id == "alpagasus-0" and set(rows[0].texts) == set(ALPAGASUS_LANGS)
    assert rows[0].texts["ja"] == "健康を維持するためのヒントを3つ挙げてください。"
    limited = load_parallel(ALPAGASUS / "{lang}.jsonl", ["en", "zh"], limit=5)
    assert [r.id for r in limited] == [f"alpagasus-{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------- self-translation

_TARGET = re.compile(r"into (\w+)\.")


class TranslatingEngine:
    """An Engine that 'translates' by table lookup of (text, target language name); unknown → no translation."""

    fingerprint = "table"
    batch_size = 4

    def __init__(self, table: dict[tuple[str, str], str]) -> None:
        self.table = table
        self.requests: list[ChatRequest] = []

    def render(self, request: ChatRequest) -> str:
        return request.messages[-1]["content"] + "|" + request.prefix

    def complete(self, requests: Sequence[ChatRequest], params: SamplingSettings) -> list[str]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            content = r.messages[-1]["content"]
            text = content.rsplit("<sentence>", 1)[1].removesuffix("</sentence>")  # the last one is the text
            target = _TARGET.search(content).group(1)
            found = self.table.get((text, target))
            out.append(f"{found}</translated>" if found is not None else "</translated>")
        return out


PARALLEL = [
    ParallelRow("1", {"en": "Good morning.", "de": "Guten Morgen.", "es": "Buenos días."}),
    ParallelRow("2", {"en": "Where is the station?", "de": "Wo ist der Bahnhof?", "es": "¿Dónde está la estación?"}),
]


def test_self_translation_quality_scores_both_directions(tmp_path):
    de, es, en = (get_language(c).name for c in ("de", "es", "en"))
    table = {
        ("Good morning.", de): "Guten Morgen.",
        ("Where is the station?", de): "Wo ist der Bahnhof?",
        ("Guten Morgen.", en): "Good morning.",
        # "Wo ist der Bahnhof?" → English fails (no text extracted)
        ("Good morning.", es): "Buen día.",
        ("Where is the station?", es): "¿Dónde está la estación?",
        ("Buenos días.", en): "Good day.",
        ("¿Dónde está la estación?", en): "Where is the station?",
    }
    engine = TranslatingEngine(table)
    gen = Generator(engine, GenerationCache(tmp_path / "c.sqlite"))
    params = SamplingSettings(max_new_tokens=32)
    rows, result = self_translation_quality(gen, PARALLEL, "en", ["de", "en", "es"], params)

    assert list(result) == ["en-de", "en-es", "de-en", "es-en"]
    assert len(engine.requests) == 8 and all(r.prefix == "<translated>\n" for r in engine.requests)
    en_de = result["en-de"]
    assert {k: en_de[k] for k in ("chrf++", "bleu", "n", "bleu_tokenize", "failed")} == {
        "chrf++": pytest.approx(100.0), "bleu": pytest.approx(100.0), "n": 2, "bleu_tokenize": "13a", "failed": 0
    }  # fmt: skip
    # every resample is a perfect translation for chrF++; BLEU of a resample of one 3-token sentence is 0
    assert en_de["chrf++_ci_low"] == en_de["chrf++_ci_high"] == pytest.approx(100.0)
    assert en_de["bleu_ci_low"] == 0.0
    # The failed translation is scored as an empty hypothesis, and counted.
    expected = corpus_scores(["Good morning.", ""], ["Good morning.", "Where is the station?"], "en", key="de-en")
    assert result["de-en"] == {**expected, "failed": 1}
    assert result["de-en"]["chrf++"] < 100
    es = ["Buen día.", "¿Dónde está la estación?"]
    expected_es = corpus_scores(es, [r.texts["es"] for r in PARALLEL], "es", key="en-es")
    assert result["en-es"] == {**expected_es, "failed": 0}
    assert result["es-en"]["failed"] == 0 and result["es-en"]["n"] == 2

    # one row per sentence and direction; the failed translation is an empty hypothesis, marked
    assert [(r.src_lang, r.lang, r.id) for r in rows] == [
        (src, tgt, row.id) for src, tgt in [("en", "de"), ("en", "es"), ("de", "en"), ("es", "en")] for row in PARALLEL
    ]
    [failed] = [r for r in rows if r.failed]
    assert (failed.id, failed.src_lang, failed.source, failed.hypothesis) == ("2", "de", "Wo ist der Bahnhof?", "")
    for r in rows:
        assert r.reference == next(p.texts[r.lang] for p in PARALLEL if p.id == r.id)
        assert r.chrf == pytest.approx(sacrebleu.sentence_chrf(r.hypothesis, [r.reference], word_order=2).score)

    again = self_translation_quality(gen, PARALLEL, "en", ["de", "es"], params)
    assert again == (rows, result) and len(engine.requests) == 8  # all from the generation cache


def test_translation_task_writes_a_row_per_sentence_and_direction(tmp_path):
    from polyrise.evaluation import parse_task, run_task

    for lang in ("en", "de"):
        rows = [{"id": r.id, "instruction": r.texts[lang]} for r in PARALLEL]
        (tmp_path / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    de, en = get_language("de").name, get_language("en").name
    table = {("Good morning.", de): "Guten Tag.", ("Guten Morgen.", en): "Good morning."}
    gen = Generator(TranslatingEngine(table), GenerationCache(tmp_path / "c.sqlite"))
    task = parse_task({"task": "translation", "source": str(tmp_path / "{lang}.jsonl"), "max_new_tokens": 16})
    scores = run_task(task, gen, ["en", "de"], tmp_path / "out", "M1")

    rows = [json.loads(line) for line in (tmp_path / "out" / "translation_M1.jsonl").read_text().splitlines()]
    assert len(rows) == len(PARALLEL) * 2  # en-de and de-en
    assert set(rows[0]) == {"id", "src_lang", "lang", "source", "hypothesis", "reference", "chrf", "failed"}
    assert [r["failed"] for r in rows] == [False, True, False, True]
    for direction in ("en-de", "de-en"):
        src, tgt = direction.split("-")
        part = [r for r in rows if (r["src_lang"], r["lang"]) == (src, tgt)]
        hypotheses, references = [r["hypothesis"] for r in part], [r["reference"] for r in part]
        expected = corpus_scores(hypotheses, references, lang=tgt, key=direction)
        assert scores[direction] == {**expected, "failed": 1}  # the corpus score is that of the rows


def test_self_translation_quality_needs_every_language(tmp_path):
    gen = Generator(TranslatingEngine({}), GenerationCache(tmp_path / "c.sqlite"))
    rows = [ParallelRow("1", {"en": "Hi"})]
    with pytest.raises(PolyriseError, match="row '1' has no text in fr"):
        self_translation_quality(gen, rows, "en", ["fr"], SamplingSettings())


def test_corpus_intervals_resample_sentences_and_recompute_the_corpus_score():
    hyps = ["The cat sat on a mat.", "It rains a lot today.", "A brown dog jumps high.", "See you later.", "Hi."]
    refs = ["The cat sat on the mat.", "It rains heavily today.", "The quick brown fox jumps.", "See you.", "Hello."]
    samples = corpus_samples([str(i) for i in range(len(hyps))], hyps, refs, "en")
    direct = {"chrf++": CHRF(word_order=2), "bleu": BLEU(tokenize="13a")}
    for name, metric in direct.items():
        sample = samples[name]
        assert sample.statistic(sample.values) == pytest.approx(metric.corpus_score(hyps, [refs]).score)
        boots = bootstrap_distribution(sample.values, 2, "en-de", statistic=sample.statistic, n_boot=50)
        expected = [
            metric.corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
            for idx in resample_indices(len(hyps), 2, "en-de", 50)
        ]
        assert boots == pytest.approx(expected)
    scores = corpus_scores(hyps, refs, "en", seed=2, key="en-de")
    for name in direct:
        low, high = (scores[k] for k in ci_keys(name))
        assert low <= scores[name] <= high and low < high
