"""Few-shot classification: loader, demonstrations, constrained decoding that can only return a label, loglik
picks, and the run_task / CLI wiring, on tiny random Llamas."""

from __future__ import annotations

import json

import pytest
import torch
from engines import LocalScorer, ScriptedEngine, biased_llama, scorer

from polyrise.errors import PolyriseError
from polyrise.evaluation import run_task
from polyrise.evaluation.fewshot import (
    ClassifyItem,
    ClassifyTask,
    DemoPool,
    build_prompt,
    classify,
    fewshot_accuracy,
    label_set,
    load_classify_jsonl,
)
from polyrise.generation import Generator
from polyrise.generation.cache import GenerationCache
from polyrise.generation.constrained import LabelTrie, LabelTrieLogitsProcessor, generate_labels
from polyrise.generation.hf import encode_pair
from polyrise.io import first_per_lang
from polyrise.stats import bootstrap_interval


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _items(lang: str, n: int, labels=("pos", "neg")) -> list[ClassifyItem]:
    return [
        ClassifyItem(id=str(i), lang=lang, text=f"{lang} review {i}: " + "so " * (i % 4), label=labels[i % len(labels)])
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _token(tokenizer, text: str) -> int:
    [token] = tokenizer(text)["input_ids"]
    return token


# ---------------------------------------------------------------------------------------------- loading


def test_template_fills_lang_and_id_and_labels_default_to_the_sorted_set(tmp_path):
    _write(tmp_path / "en.jsonl", [{"text": "Great film", "label": "positive"}, {"text": "Dull", "label": "negative"}])
    _write(tmp_path / "de.jsonl", [{"id": 9, "text": "Geht so", "label": "neutral"}])
    items = load_classify_jsonl(tmp_path / "{lang}.jsonl", ["en", "de"])
    assert [(i.id, i.lang, i.text, i.label) for i in items] == [
        ("1", "en", "Great film", "positive"),
        ("2", "en", "Dull", "negative"),
        ("9", "de", "Geht so", "neutral"),
    ]
    assert label_set(items) == ["negative", "neutral", "positive"]
    assert label_set(items, ["positive", "negative"]) == ["positive", "negative"]
    for bad in (["a"], ["a", "a"], ["a", ""]):
        with pytest.raises(PolyriseError, match="at least two distinct non-empty labels"):
            label_set(items, bad)


def test_single_file_needs_lang_and_filters_languages(tmp_path):
    path = _write(
        tmp_path / "all.jsonl",
        [{"id": "a", "lang": "en", "text": "x", "label": "p"}, {"id": "b", "lang": "de", "text": "y", "label": "q"}],
    )
    assert [i.id for i in load_classify_jsonl(path, ["de"])] == ["b"]
    assert [i.id for i in load_classify_jsonl(path)] == ["a", "b"]
    _write(tmp_path / "nolang.jsonl", [{"id": "a", "text": "x", "label": "p"}])
    with pytest.raises(PolyriseError, match=r"nolang.jsonl:1: lang: Field required"):
        load_classify_jsonl(tmp_path / "nolang.jsonl")
    with pytest.raises(PolyriseError, match="needs the list of languages"):
        load_classify_jsonl(tmp_path / "{lang}.jsonl")


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"text": "a", "label": 1}', "label: Input should be a valid string"),
        ('{"text": "", "label": "p"}', "text: String should have at least 1 character"),
        ('{"text": "a", "label": "p", "gold": 1}', "gold: Extra inputs are not permitted"),
        ('{"lang": "de", "text": "a", "label": "p"}', "lang 'de' in the file of language 'en'"),
        ("{oops", "invalid JSON"),
    ],
)
def test_errors_name_file_and_line(tmp_path, row, message):
    (tmp_path / "en.jsonl").write_text('{"text": "ok", "label": "p"}\n\n' + row + "\n")
    with pytest.raises(PolyriseError) as err:
        load_classify_jsonl(tmp_path / "{lang}.jsonl", ["en"])
    assert f"en.jsonl:3: {message}" in str(err.value)


def test_label_outside_the_explicit_set_names_file_and_line(tmp_path):
    _write(tmp_path / "en.jsonl", [{"text": "a", "label": "yes"}, {"text": "b", "label": "maybe"}])
    with pytest.raises(PolyriseError) as err:
        load_classify_jsonl(tmp_path / "{lang}.jsonl", ["en"], labels=["yes", "no"])
    assert "en.jsonl:2: label 'maybe' is not one of 'yes', 'no'" in str(err.value)


def test_first_per_lang_keeps_the_first_items_of_every_language():
    items = _items("en", 5) + _items("de", 2)
    assert [(i.lang, i.id) for i in first_per_lang(items, 3)] == [
        ("en", "0"),
        ("en", "1"),
        ("en", "2"),
        ("de", "0"),
        ("de", "1"),
    ]
    assert first_per_lang(items, None) == items


# ---------------------------------------------------------------------------------------------- demonstrations


def test_demos_are_k_of_the_same_language_never_the_query_balanced_and_seeded():
    items = _items("en", 20) + _items("de", 20)
    pool = DemoPool(items)
    draws = {}
    for seed in (0, 1):
        draws[seed] = [pool.draw(query, 4, seed) for query in items]
        for query, demos in zip(items, draws[seed], strict=True):
            assert len(demos) == 4 and len({d.id for d in demos}) == 4
            assert all(d.lang == query.lang and d.text != query.text for d in demos)
            assert sorted(d.label for d in demos) == ["neg", "neg", "pos", "pos"]
    # the same seed gives the same demonstrations, whatever was drawn before; another seed others
    assert [DemoPool(items).draw(q, 4, 0) for q in reversed(items)] == list(reversed(draws[0]))
    assert draws[0] != draws[1]
    assert pool.draw(items[0], 0) == []


def test_a_separate_demo_pool_never_shows_the_query_text():
    query = ClassifyItem(id="q", lang="en", text="the query", label="pos")
    pool = DemoPool([query.model_copy(update={"id": "dup"}), *_items("en", 3)])
    for seed in range(10):
        assert "the query" not in [d.text for d in pool.draw(query, 3, seed)]


def test_too_few_demonstrations_is_an_error():
    items = _items("en", 3)
    with pytest.raises(PolyriseError, match="3-shot needs 3 demonstrations in 'en' besides item 0; there are 2"):
        DemoPool(items).draw(items[0], 3)
    with pytest.raises(PolyriseError, match="in 'de' besides item 0; there are 0"):
        DemoPool(items).draw(_items("de", 1)[0], 1)
    with pytest.raises(PolyriseError, match="2-shot needs 2"):
        classify(None, items[:2], k=2)


def test_prompt_is_plain_text_ending_in_answer():
    demos = [
        ClassifyItem(id="a", lang="en", text="Great {film}", label="yes"),
        ClassifyItem(id="b", lang="en", text="Bad", label="no"),
    ]
    query = ClassifyItem(id="q", lang="en", text="Fine?", label="yes")
    assert build_prompt(query, demos) == "Great {film}\nAnswer: yes\n\nBad\nAnswer: no\n\nFine?\nAnswer:"
    assert build_prompt(query, []) == "Fine?\nAnswer:"


# ---------------------------------------------------------------------------------------------- constrained decoding


def test_label_trie_allows_eos_only_after_a_complete_label():
    trie = LabelTrie({"a": [5], "ab": [5, 6], "c": [7, 8]}, eos_id=2)
    assert sorted(trie.allowed([])) == [5, 7]
    assert sorted(trie.allowed([5])) == [2, 6]  # "a" is complete, "ab" may go on
    assert trie.allowed([7]) == [8]
    assert not trie.finished([5]) and trie.finished([5, 2]) and trie.finished([5, 6]) and trie.finished([7, 8])
    assert trie.allowed([5, 6]) == [2]  # a finished row may only repeat EOS
    assert (trie.label([5, 2]), trie.label([5, 6]), trie.label([7, 8])) == ("a", "ab", "c")
    with pytest.raises(PolyriseError, match="do not start any label"):
        trie.allowed([6])
    with pytest.raises(PolyriseError, match="the same tokens"):
        LabelTrie({"a": [5], "b": [5]}, eos_id=2)
    with pytest.raises(PolyriseError, match="other than EOS"):
        LabelTrie({"a": [5, 2]}, eos_id=2)

    processor = LabelTrieLogitsProcessor([trie, trie], prompt_width=1)
    scores = processor(torch.tensor([[9, 5], [9, 7]]), torch.zeros(2, 10))
    assert torch.isfinite(scores).nonzero().tolist() == [[0, 2], [0, 6], [1, 8]]


LABEL_SETS = {
    "shared prefixes": ["yes", "yes sir", "yes sir please", "no"],
    "multi-token": ["entailment", "neutral", "contradiction", "是", "oui"],
}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("name", LABEL_SETS)
def test_generate_only_ever_returns_a_label(tiny_model, tokenizer, name, temperature):
    labels = LABEL_SETS[name]
    eos = tokenizer.eos_token_id
    prompts = [f"Text {i}: " + "more words " * (i % 5) + "\nAnswer:" for i in range(24)]
    seqs = {label: (lambda whole, n: whole[n:])(*encode_pair(tokenizer, prompts[0], " " + label)) for label in labels}
    assert max(map(len, seqs.values())) >= 3  # the sets really have multi-token labels
    results = generate_labels(LocalScorer(tiny_model, tokenizer, 5), prompts, labels, temperature=temperature, seed=3)
    for label, ids in results:
        assert label in labels
        body = ids[:-1] if ids[-1] == eos else ids
        assert tokenizer.decode(body) == " " + label and body == seqs[label]
        # EOS ends a label exactly when a longer label extends it
        extended = any(len(s) > len(body) and s[: len(body)] == body for s in seqs.values())
        assert (ids[-1] == eos) == extended
    if temperature > 0:
        assert len({label for label, _ in results}) >= 3
        if name == "shared prefixes":  # both ways on from a complete label that longer labels extend were taken
            assert {"yes", "yes sir"} <= {label for label, _ in results}
    again = generate_labels(LocalScorer(tiny_model, tokenizer, 5), prompts, labels, temperature=temperature, seed=3)
    assert again == results


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_returns_a_label_even_when_the_model_wants_something_else(tokenizer, temperature):
    eos, yes, sir, maybe = tokenizer.eos_token_id, *(_token(tokenizer, t) for t in (" yes", " sir", " maybe"))
    labels = ["yes", "yes sir"]
    prompts = ["Well?\nAnswer:"] * 3
    # EOS and " maybe" are masked at the start; after " yes", EOS beats " sir"
    model = biased_llama(tokenizer, {eos: 30.0, maybe: 40.0})
    assert (
        generate_labels(LocalScorer(model, tokenizer), prompts, labels, temperature=temperature)
        == [("yes", [yes, eos])] * 3
    )
    model = biased_llama(tokenizer, {sir: 30.0, maybe: 40.0})
    assert (
        generate_labels(LocalScorer(model, tokenizer), prompts, labels, temperature=temperature)
        == [("yes sir", [yes, sir])] * 3
    )


# ---------------------------------------------------------------------------------------------- classification


def _loglik(model, tokenizer, context: str, continuation: str) -> float:
    ids, n_ctx = encode_pair(tokenizer, context, continuation)
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return sum(logprobs[p - 1, ids[p]].item() for p in range(n_ctx, len(ids)))


def test_loglik_picks_the_argmax_of_the_label_logliks(tiny_model, tokenizer):
    labels = ["maybe so", "no", "yes"]
    items = _items("en", 6, labels=labels) + _items("de", 4, labels=labels)
    preds = classify(scorer(tiny_model, tokenizer, 4), items, labels, k=2, seed=7, normalize=None)
    pool = DemoPool(items)
    for item, pred in zip(items, preds, strict=True):
        prompt = build_prompt(item, pool.draw(item, 2, seed=7))
        direct = {label: _loglik(tiny_model, tokenizer, prompt, " " + label) for label in labels}
        assert (pred.id, pred.lang, pred.label) == (item.id, item.lang, item.label)
        assert pred.scores == pytest.approx(direct, abs=1e-4)
        assert pred.pred == max(labels, key=direct.__getitem__)


@pytest.mark.parametrize("constrain", ["loglik", "generate"])
def test_a_certain_label_is_always_picked_and_scored_per_language(tokenizer, constrain):
    model = biased_llama(tokenizer, {_token(tokenizer, " neutral"): 40.0})
    labels = ["contradiction", "entailment", "neutral"]
    items = _items("en", 6, labels=labels) + _items("fr", 3, labels=labels)
    preds = classify(scorer(model, tokenizer), items, k=1, constrain=constrain, normalize="chars")
    assert [p.pred for p in preds] == ["neutral"] * len(items)
    scores = fewshot_accuracy(preds)
    assert {lang: (s["accuracy"], s["n"]) for lang, s in scores.items()} == {"en": (1 / 3, 6), "fr": (1 / 3, 3)}
    assert all(s["accuracy_ci_low"] <= s["accuracy"] <= s["accuracy_ci_high"] for s in scores.values())


def test_greedy_generate_agrees_with_loglik_on_single_token_labels(tiny_model, tokenizer):
    labels = ["a", "b", "c", "d"]
    assert all(len(tokenizer(" " + label)["input_ids"]) == 1 for label in labels)
    items = _items("en", 12, labels=labels) + _items("de", 8, labels=labels)
    options = {"k": 2, "seed": 5}
    generated = classify(scorer(tiny_model, tokenizer, 3), items, constrain="generate", **options)
    scored = classify(scorer(tiny_model, tokenizer, 3), items, constrain="loglik", normalize=None, **options)
    assert [p.pred for p in generated] == [p.pred for p in scored]
    assert len({p.pred for p in scored}) > 1


def test_classify_rejects_labels_outside_the_set_and_unknown_modes(tokenizer):
    items = _items("en", 4)
    with pytest.raises(PolyriseError, match="label 'pos' is not one of"):
        classify(None, items, ["neg", "other"])
    with pytest.raises(PolyriseError, match="constrain must be"):
        classify(None, items, constrain="regex")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- wiring


@pytest.fixture(scope="module")
def generator(tiny_model_dir, tmp_path_factory):
    from polyrise.generation.hf import HFEngine
    from polyrise.models import resolve_model

    engine = HFEngine(resolve_model(str(tiny_model_dir)), batch_size=4)
    return Generator(engine, GenerationCache(tmp_path_factory.mktemp("cache") / "g.sqlite"))


def _data(tmp_path, n: int = 6) -> str:
    for lang in ("en", "de"):
        rows = [{"text": f"{lang} sample {i}", "label": ["good", "bad"][i % 2]} for i in range(n)]
        _write(tmp_path / f"{lang}.jsonl", rows)
    return str(tmp_path / "{lang}.jsonl")


@pytest.mark.parametrize("constrain", ["loglik", "generate"])
def test_run_task_writes_rows_and_accuracy_per_language(tmp_path, generator, constrain):
    task = ClassifyTask(source=_data(tmp_path), few_shot=2, limit=4, constrain=constrain)
    assert task.key == "classify"
    scores = run_task(task, generator, ["en", "de"], tmp_path / "out", "m", seed=1)
    rows = [json.loads(line) for line in (tmp_path / "out" / "classify_m.jsonl").read_text().splitlines()]
    assert [(r["lang"], r["id"]) for r in rows] == [(lang, str(i)) for lang in ("en", "de") for i in range(1, 5)]
    assert all(r["pred"] in ("bad", "good") for r in rows)
    assert all((r["scores"] is None) == (constrain == "generate") for r in rows)
    for lang in ("en", "de"):
        correct = [float(r["pred"] == r["label"]) for r in rows if r["lang"] == lang]
        low, high = bootstrap_interval(correct, 1, lang)  # the run's seed, keyed by the language
        assert scores[lang] == {"accuracy": sum(correct) / 4, "accuracy_ci_low": low, "accuracy_ci_high": high, "n": 4}


def test_run_task_with_demo_file_and_explicit_labels(tmp_path, generator):
    _write(tmp_path / "demos_en.jsonl", [{"text": f"demo {i}", "label": "meh"} for i in range(3)])
    task = ClassifyTask(
        source=_data(tmp_path),
        langs=["en"],
        few_shot=3,
        labels=["good", "bad", "meh"],
        demos=str(tmp_path / "demos_{lang}.jsonl"),
    )
    scores = run_task(task, generator, ["de"], tmp_path / "out", "m")
    rows = [json.loads(line) for line in (tmp_path / "out" / "classify_m.jsonl").read_text().splitlines()]
    assert scores["en"]["n"] == 6 and set(scores) == {"en"}
    assert all(set(r["scores"]) == {"good", "bad", "meh"} for r in rows)
    with pytest.raises(PolyriseError, match="4-shot needs 4 demonstrations in 'en' besides item 1; there are 3"):
        run_task(task.model_copy(update={"few_shot": 4}), generator, [], tmp_path / "out", "m")


def test_classify_needs_a_local_model_and_config_checks(tmp_path):
    scripted = Generator(ScriptedEngine({}), GenerationCache(tmp_path / "g.sqlite"))
    with pytest.raises(PolyriseError, match=r"masks the model's logits: it needs a local \(hf\) engine.*loglik"):
        run_task(ClassifyTask(source=_data(tmp_path), constrain="generate"), scripted, ["en"], tmp_path, "m")
    with pytest.raises(ValueError, match=r"source\n  Field required"):
        ClassifyTask()
    with pytest.raises(ValueError, match="at least 2 items"):
        ClassifyTask(source="x", labels=["yes"])
    with pytest.raises(ValueError, match="'loglik' or 'generate'"):
        ClassifyTask(source="x", constrain="regex")


def test_cli_eval_classify(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from polyrise.cli import app

    args = ["eval", "--task", "classify", "--model", str(tiny_model_dir), "--source", _data(tmp_path)]
    args += ["--langs", "en,de", "--few-shot", "1", "--labels", "good, bad", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--constrain", "generate", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert {lang: s["n"] for lang, s in scores["classify"]["model"].items()} == {"en": 6, "de": 6}
    rows = (tmp_path / "out" / "classify_model.jsonl").read_text().splitlines()
    assert len(rows) == 12 and all(json.loads(r)["pred"] in ("good", "bad") for r in rows)

    result = CliRunner().invoke(app, [*args, "--constrain", "regex"])
    assert result.exit_code == 1 and "--constrain: Input should be 'loglik' or 'generate'" in str(result.exception)
