"""Wrong-language DPO: the language judge and the pair rule by hand, config errors, and one iteration end to end on
a small sandbox."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from polyrise.config import RunConfig, load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.langid import LangIdSettings
from polyrise.methods.language_imbalance import FilterSettings
from polyrise.methods.wrong_language_dpo import (
    DROP_REASONS,
    WrongLanguageSettings,
    build_pairs,
    in_language,
    language_share,
    read_vocabularies,
)
from polyrise.records import DroppedPair, PreferencePair, Response, Samples
from polyrise.runner import Runner
from polyrise.sandbox.study import study_config, vocabulary_spec, write_vocabularies
from polyrise.sandbox.world import make_clones

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sandbox.yaml"
LANGID = LangIdSettings()
WORDS = frozenset({"ba", "ko", "mi"})


def test_language_share_by_words_and_by_the_detector():
    assert language_share("3 + 4 = 7. Ba ko mi.", "qaa", LANGID, WORDS) == 1.0
    assert language_share("Ba ko has 7 apples.", "qaa", LANGID, WORDS) == pytest.approx(2 / 4)
    assert language_share("3 + 4 = 7.", "qaa", LANGID, WORDS) is None  # no word: nothing to judge
    english = "The weather is lovely today and we are going to the park together."
    spanish = "El tiempo es muy agradable hoy y vamos a ir juntos al parque."
    assert language_share(english, "en", LANGID) == 1.0
    assert language_share(spanish, "en", LANGID, others=["es"]) == 0.0
    # two decided lines, counted by their words: 13 English words of 13 + 13
    assert language_share(f"{english}\n{spanish}", "en", LANGID, others=["es"]) == pytest.approx(13 / 26)
    assert language_share("Hi.", "en", LANGID) is None  # a line under min_words is not decided
    assert in_language("Ba ko has 7 apples.", "qaa", LANGID, WORDS) is False
    assert in_language("Ba ko has 7 apples.", "qaa", LANGID, WORDS, min_share=0.5) is True
    assert in_language("7.", "qaa", LANGID, WORDS) is None


def _pairs(answers: dict[tuple[str, str], str], samples=None, **settings):
    prompts = {key: f"prompt {key[0]} in {key[1]}" for key in answers}
    responses = [Response(id=i, lang=lang, prompt=prompts[(i, lang)], output=y) for (i, lang), y in answers.items()]
    rows = None if samples is None else [Samples(id=i, lang="qaa", prompt="p", outputs=ys) for i, ys in samples.items()]
    rejected = "english" if samples is None else "sampled"
    return build_pairs(
        prompts,
        responses,
        rows,
        "en",
        ["qaa"],
        WrongLanguageSettings(rejected=rejected, **settings),
        FilterSettings(),
        LANGID,
        {"qaa": WORDS},
    )


def test_pair_rule_with_the_english_answer_rejected():
    answers = {
        ("kept", "en"): "3 + 4 = 7. Tom has 7 apples.",
        ("kept", "qaa"): "3 + 4 = 7. Ba ko 7 mi.",
        ("english", "en"): "2 + 2 = 4. Tom has 4 pens.",
        ("english", "qaa"): "2 + 2 = 4. Tom has 4 pens.",  # M(t) answered the prompt in L in English
        ("mixed", "en"): "1 + 1 = 2. Ben has 2 cups.",
        ("mixed", "qaa"): "1 + 1 = 2. Ba ko 2 cups.",
        ("numbers", "en"): "1 + 2 = 3. Mia has 3 eggs.",
        ("numbers", "qaa"): "1 + 2 = 3.",  # no word to judge
        ("same", "en"): "5 - 1 = 4. Ba ko 4 mi.",  # the English answer is in L: nothing wrong to reject
        ("same", "qaa"): "5 - 1 = 4. Ba ko 4 mi.",
        ("short", "en"): "3 + 3 = 6. Lucy has 6 shells and Anna has none of them at all.",
        ("short", "qaa"): "Ba.",  # kept by the language rules, dropped by LIDR's length-ratio filter
        ("no-english", "qaa"): "Ko mi.",  # the prompt has no English answer
    }
    pairs, stats, dropped = _pairs(answers)
    [pair] = pairs
    assert (pair.id, pair.lang, pair.via) == ("kept", "qaa", "qaa")
    assert (pair.chosen, pair.rejected) == (answers[("kept", "qaa")], answers[("kept", "en")])
    assert pair.prompt == "prompt kept in qaa"
    reasons = {d.id: d.reason for d in dropped}
    assert reasons == {
        "english": "off_target_chosen",
        "mixed": "off_target_chosen",
        "numbers": "undecided_chosen",
        "same": "no_wrong_language_answer",
        "short": "length_ratio",
        "no-english": "no_wrong_language_answer",
    }
    assert stats["qaa"]["candidates"] == 7 and stats["qaa"]["kept"] == 1
    assert stats["qaa"]["dropped"] == {r: list(reasons.values()).count(r) for r in DROP_REASONS}
    # a lower bar: the mixed answer, 2 of its 3 words in L, becomes a chosen side
    pairs, _, _ = _pairs(answers, min_share=0.5)
    assert {p.id for p in pairs} == {"kept", "mixed"}


def test_pair_rule_with_a_sampled_wrong_language_answer():
    answers = {("a", "qaa"): "Ba ko 7.", ("b", "qaa"): "Ko mi 3.", ("a", "en"): "7."}
    samples = {"a": ["Ba 7.", "", "Tom has 7.", "Ben has 8."], "b": ["Mi ko 3.", "3."]}
    pairs, stats, dropped = _pairs(answers, samples=samples)
    [pair] = pairs
    assert (pair.id, pair.chosen, pair.rejected) == ("a", "Ba ko 7.", "Tom has 7.")  # the first judged outside L
    [drop] = dropped
    assert (drop.id, drop.reason, drop.rejected) == (
        "b",
        "no_wrong_language_answer",
        None,
    )  # undecided "3." is no proof
    assert stats["qaa"]["kept"] == 1


def test_vocabulary_settings_and_files(tmp_path):
    with pytest.raises(ValueError, match="needs `\\{lang\\}`"):
        WrongLanguageSettings(vocabulary=tmp_path / "words.txt")
    with pytest.raises(PolyriseError, match="'qaa' cannot be judged: py3langid does not know it and no `vocabulary`"):
        read_vocabularies(None, ["es", "qaa"])
    write_vocabularies(tmp_path)
    spec = vocabulary_spec(tmp_path)
    words = read_vocabularies(spec, ["es", "qaa", "qab"])
    assert set(words) == {"qaa", "qab"}  # Spanish is left to the detector
    clones = make_clones()
    assert words["qaa"] == {w.lower() for w in clones["qaa"].lexicon.values()}
    (tmp_path / "vocabulary" / "qab.txt").unlink()
    with pytest.raises(PolyriseError, match=r"qab\.txt does not exist"):
        read_vocabularies(spec, ["qaa", "qab"])


def test_one_iteration_end_to_end_on_a_small_sandbox(small_sandbox, tmp_path):
    box, prompts = small_sandbox
    base = load_config(EXAMPLE)
    write_vocabularies(tmp_path)
    data = study_config(base, box, 0, "wrong-language-dpo", tmp_path, 1).model_dump(mode="json")
    data["prompts"]["source"] = str(prompts)
    # this small M0 repeats one answer greedily and mixes English words into its clone answers: sample, lower the bar
    data["generation"]["answer"]["temperature"] = 1.0
    data["wrong_language"]["min_share"] = 0.25
    config = RunConfig.model_validate(data)
    assert config.filters == base.filters and config.training == base.training  # LIDR's filters and DPO + NLL
    runner = Runner(config, Console(file=io.StringIO()))
    runner.run()
    it = runner.layout.iter_dir(0)
    manifest = json.loads((runner.run_dir / "manifest.json").read_text())["stages"]
    assert list(manifest) == [
        "iter_0/eval_M0",
        "iter_0/prompts",
        "iter_0/generate",
        "iter_0/pairs",
        "iter_0/train",
        "iter_0/eval_M1",
    ]
    answers = {(r.id, r.lang): r.output for r in read_jsonl(it / "responses.jsonl", Response)}
    pairs = read_jsonl(it / "pairs.jsonl", PreferencePair)
    dropped = read_jsonl(it / "pairs_dropped.jsonl", DroppedPair)
    stats = json.loads((it / "pairs_stats.json").read_text())
    assert pairs, stats
    assert len(pairs) + len(dropped) == sum(s["candidates"] for s in stats.values()) == 24
    words = read_vocabularies(vocabulary_spec(tmp_path), ["qaa", "qab"])
    for p in pairs:  # chosen: M0's answer in L, judged in L; rejected: its answer to the English prompt
        assert p.chosen == answers[(p.id, p.lang)] and p.rejected == answers[(p.id, "en")]
        assert language_share(p.chosen, p.lang, LANGID, words[p.lang]) >= 0.25
    assert {s["reward"]["n"] for s in stats.values() if "reward" in s}  # labelled against the gold answers
    assert manifest["iter_0/train"]["counts"]["examples"] == len(pairs)
    assert (it / "model" / "config.json").is_file()

    # rejected: sampled reruns only what that setting decides: k samples per prompt in L, the pairs, the training
    data["wrong_language"] |= {"rejected": "sampled", "samples": 3}
    sampled = Runner(RunConfig.model_validate(data), Console(file=io.StringIO()))
    sampled.run()
    again = json.loads((runner.run_dir / "manifest.json").read_text())["stages"]
    assert set(again) == {*manifest, "iter_0/sample"}
    for name in ("iter_0/eval_M0", "iter_0/prompts", "iter_0/generate"):
        assert again[name] == manifest[name]
    samples = {(s.id, s.lang): s.outputs for s in read_jsonl(it / "samples.jsonl", Samples)}
    assert len(samples) == 24 and {len(ys) for ys in samples.values()} == {3}
    for p in read_jsonl(it / "pairs.jsonl", PreferencePair):  # the first sample judged outside L
        off = [y for y in samples[(p.id, p.lang)] if language_share(y, p.lang, LANGID, words[p.lang]) is not None]
        off = [y for y in off if language_share(y, p.lang, LANGID, words[p.lang]) < 0.25]
        assert p.chosen == answers[(p.id, p.lang)] and p.rejected == off[0]
