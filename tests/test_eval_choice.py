"""Multiple-choice log-likelihood scoring on tiny Llamas, choice loaders and presets, and the lm-eval bridge."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from engines import biased_llama, scorer

from polyrise.errors import PolyriseError
from polyrise.evaluation.choice import (
    PRESETS,
    ChoiceItem,
    ChoicePrediction,
    choice_accuracy,
    dataset_to_items,
    load_choice_jsonl,
    score_choices,
)
from polyrise.evaluation.harness import run_harness
from polyrise.generation import Generator, LogLikelihood
from polyrise.generation.cache import GenerationCache
from polyrise.generation.hf import encode_pair


def _unigram_llama(tokenizer, logprobs: dict[str, float]):
    """A Llama whose next-token distribution ignores the input: log P(tok) = logprobs[text of tok].

    The hidden state is multiplied by an all-zero lm_head, so the logits are the lm_head's bias; the rest of
    the probability mass goes to the EOS token.
    """
    bias = {}
    for text, lp in logprobs.items():
        [tok] = tokenizer(text)["input_ids"]
        bias[tok] = lp
    bias[tokenizer.eos_token_id] = math.log(1 - sum(math.exp(lp) for lp in logprobs.values()))
    return biased_llama(tokenizer, bias, default=-1e4)


def _item(context: str, choices: list[str], label: int = 0, item_id: str = "1", lang: str = "en") -> ChoiceItem:
    return ChoiceItem(id=item_id, lang=lang, context=context, choices=choices, label=label)


def test_strongly_preferred_token_wins(tokenizer):
    model = _unigram_llama(tokenizer, {" yes": math.log(0.9), " no": math.log(0.01), " maybe": math.log(0.01)})
    items = [_item("Is the sky blue?", [" no", " yes", " maybe"], label=1)]
    for normalize in ("chars", "tokens", None):
        [pred] = score_choices(scorer(model, tokenizer), items, normalize=normalize)
        assert pred.pred == 1 and pred.correct
    assert pred.logliks == pytest.approx([math.log(0.01), math.log(0.9), math.log(0.01)], abs=1e-4)


def test_length_normalisation_changes_the_pick(tokenizer):
    """ " x" (2 chars, 1 token) has the higher total; " yes yes yes" (12 chars, 3 tokens) the higher mean."""
    model = _unigram_llama(tokenizer, {" x": -4.0, " yes": -2.0, " international": -3.0})
    items = [
        _item("Pick one:", [" x", " yes yes yes"], item_id="a"),
        # " yes" beats " international" per token (-2 vs -3) but not per character (-0.5 vs -0.21)
        _item("Pick one:", [" yes", " international"], item_id="b"),
    ]
    raw = score_choices(scorer(model, tokenizer), items, normalize=None)
    assert [p.logliks for p in raw] == [pytest.approx([-4, -6], abs=1e-3), pytest.approx([-2, -3], abs=1e-3)]
    assert [p.pred for p in raw] == [0, 0]
    assert [p.pred for p in score_choices(scorer(model, tokenizer), items, normalize="chars")] == [1, 1]
    assert [p.pred for p in score_choices(scorer(model, tokenizer), items, normalize="tokens")] == [1, 0]
    with pytest.raises(PolyriseError, match="normalize"):
        score_choices(scorer(model, tokenizer), items, normalize="bytes")  # type: ignore[arg-type]


ITEMS = [
    _item("The sky is", [" blue", " green", " made of cheese and old socks"], 0, "1"),
    _item("", [" Yes, it rains.", " No."], 1, "2"),  # empty context: conditioned on BOS
    _item("Question: 2 + 2 =\nAnswer: ", ["4", "5", "22"], 0, "3", "de"),  # trailing space moves to the choice
    _item(
        "A much longer context that spans many more tokens than the others, so the batch needs padding",
        [" because", " therefore"],
        0,
        "4",
        "de",
    ),
    _item("Der Himmel ist", [" blau", " grün"], 0, "5", "de"),
]


def _reference_logliks(model, tokenizer, item: ChoiceItem) -> list[float]:
    """Unbatched, unpadded log P(choice | context), straight from the model."""
    out = []
    for choice in item.choices:
        ids, n_ctx = encode_pair(tokenizer, item.context, choice)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        out.append(sum(lp[p - 1, ids[p]].item() for p in range(n_ctx, len(ids))))
    return out


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_batched_scores_equal_one_at_a_time(tiny_model, tokenizer):
    batched = score_choices(scorer(tiny_model, tokenizer, 5), ITEMS)
    single = [score_choices(scorer(tiny_model, tokenizer, 1), [item])[0] for item in ITEMS]
    for b, s, item in zip(batched, single, ITEMS, strict=True):
        assert (b.id, b.lang, b.label) == (item.id, item.lang, item.label)
        torch.testing.assert_close(torch.tensor(b.logliks), torch.tensor(s.logliks), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            torch.tensor(b.logliks), torch.tensor(_reference_logliks(tiny_model, tokenizer, item)), atol=1e-4, rtol=1e-4
        )
        assert b.pred == s.pred


class _RecordingEngine:
    """Scores a continuation by minus its length and records the requests of every call."""

    fingerprint = "recording"
    batch_size = 2

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def loglikelihood(self, requests, max_tokens=None):
        self.requests += requests
        return [LogLikelihood(-float(len(c)), (-float(len(c)),)) for _, c in requests]


def test_requests_go_longest_context_first_with_an_items_choices_together(tmp_path):
    engine = _RecordingEngine()
    preds = score_choices(Generator(engine, GenerationCache(tmp_path / "c.sqlite")), ITEMS, normalize=None)
    assert [len(c) for c, _ in engine.requests] == sorted((len(c) for c, _ in engine.requests), reverse=True)
    by_length = sorted(ITEMS, key=lambda item: -len(item.context))
    assert engine.requests == [(item.context, c) for item in by_length for c in item.choices]
    assert [(p.id, p.lang) for p in preds] == [(item.id, item.lang) for item in ITEMS]  # item order kept
    assert [p.logliks for p in preds] == [[-float(len(c)) for c in item.choices] for item in ITEMS]


def test_tokenizer_padding_side_does_not_matter(tiny_model, tokenizer):
    before = tokenizer.padding_side
    try:
        results = {}
        for side in ("left", "right"):
            tokenizer.padding_side = side
            results[side] = [p.logliks for p in score_choices(scorer(tiny_model, tokenizer, 3), ITEMS)]
    finally:
        tokenizer.padding_side = before
    flat = {side: [ll for lls in results[side] for ll in lls] for side in results}
    torch.testing.assert_close(torch.tensor(flat["left"]), torch.tensor(flat["right"]))


def test_encode_pair_splits_like_lm_eval(tokenizer):
    ids, n_ctx = encode_pair(tokenizer, "The answer is ", "yes")
    assert ids == tokenizer("The answer is yes")["input_ids"]
    assert ids[n_ctx:] == tokenizer(" yes")["input_ids"]  # the trailing space went to the continuation
    ids, n_ctx = encode_pair(tokenizer, "", " Yes")
    assert (ids[0], n_ctx) == (tokenizer.bos_token_id, 1)


def test_choice_accuracy_per_language():
    preds = [
        ChoicePrediction(id="1", lang="en", pred=0, label=0, logliks=[0.0, -1.0]),
        ChoicePrediction(id="2", lang="en", pred=1, label=0, logliks=[-1.0, 0.0]),
        ChoicePrediction(id="1", lang="de", pred=1, label=1, logliks=[-1.0, 0.0]),
    ]
    assert choice_accuracy(preds) == {
        "en": {"accuracy": 0.5, "accuracy_ci_low": 0.0, "accuracy_ci_high": 1.0, "n": 2},  # resamples: 0, 0.5, 1
        "de": {"accuracy": 1.0, "accuracy_ci_low": 1.0, "accuracy_ci_high": 1.0, "n": 1},
    }


# ------------------------------------------------------------------------------------------------ loading


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def test_load_choice_jsonl_template_fills_lang_and_id(tmp_path):
    _write(tmp_path / "en.jsonl", [{"context": "Sky", "choices": [" blue", " red"], "label": 0}])
    _write(
        tmp_path / "de.jsonl",
        [{"id": "q7", "context": "Himmel", "choices": [" blau", " rot"], "label": 1}, ""],
    )
    items = load_choice_jsonl(tmp_path / "{lang}.jsonl", ["en", "de"])
    assert [(i.id, i.lang, i.context, i.label) for i in items] == [("1", "en", "Sky", 0), ("q7", "de", "Himmel", 1)]


def test_load_choice_jsonl_single_file_filters_languages(tmp_path):
    row = {"id": "1", "context": "c", "choices": ["a", "b"], "label": 0}
    _write(tmp_path / "all.jsonl", [{**row, "lang": "en"}, {**row, "lang": "fr"}])
    assert [i.lang for i in load_choice_jsonl(tmp_path / "all.jsonl")] == ["en", "fr"]
    assert [i.lang for i in load_choice_jsonl(tmp_path / "all.jsonl", ["fr"])] == ["fr"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"context": "c", "choices": ["a", "b"], "label": 0', "invalid JSON"),
        ({"id": "1", "context": "c", "choices": ["a", "b"], "label": 2}, "label 2 is not an index"),
        ({"id": "1", "context": "c", "choices": ["a"], "label": 0}, "at least two choices"),
        ({"id": "1", "context": "c", "choices": ["a", "b"], "label": 0, "answer": 1}, "answer"),
        ({"id": "1", "context": "c", "choices": ["a", "b"]}, "label"),
    ],
)
def test_load_choice_jsonl_errors_name_file_and_line(tmp_path, row, message):
    good = {"id": "0", "lang": "en", "context": "c", "choices": ["a", "b"], "label": 0}
    bad = row if isinstance(row, str) else {"lang": "en", **row}
    _write(tmp_path / "x.jsonl", [good, bad])
    with pytest.raises(PolyriseError, match=rf"x\.jsonl:2: .*{message}"):
        load_choice_jsonl(tmp_path / "x.jsonl")


def test_load_choice_jsonl_missing_file_and_template_without_langs(tmp_path):
    with pytest.raises(PolyriseError, match="no such file"):
        load_choice_jsonl(tmp_path / "{lang}.jsonl", ["en"])
    with pytest.raises(PolyriseError, match="list of languages"):
        load_choice_jsonl(tmp_path / "{lang}.jsonl")


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def test_xnli_rows_become_three_verbalised_choices():
    rows = [
        {"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": 0},
        {"premise": "He left early", "hypothesis": "Nobody left.", "label": 2},
    ]
    items = dataset_to_items(_dataset(rows), "en", PRESETS["xnli"].template)
    assert items[0] == ChoiceItem(
        id="0",
        lang="en",
        context="The cat sat on the mat, right?",
        choices=[" Yes, a cat is sitting.", " Also, a cat is sitting.", " No, a cat is sitting."],
        label=0,
    )
    assert (items[1].id, items[1].context, items[1].label) == ("1", "He left early, right?", 2)


def test_xcopa_rows_use_cause_and_effect_connectors():
    rows = [
        {"idx": 1, "premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
         "choice2": "He got a hole in his sock.", "question": "cause", "label": 0, "changed": False},
        {"idx": 2, "premise": "I tipped the bottle.", "choice1": "The liquid fell out.",
         "choice2": "The bottle broke.", "question": "effect", "label": 0, "changed": False},
    ]  # fmt: skip
    items = dataset_to_items(_dataset(rows), "it", PRESETS["xcopa"].template, limit=5)
    assert [(i.id, i.lang, i.context) for i in items] == [
        ("1", "it", "The man broke his toe because"),
        ("2", "it", "I tipped the bottle therefore"),
    ]
    assert items[0].choices == [" he dropped a hammer on his foot.", " he got a hole in his sock."]


def test_pawsx_rows_skip_empty_sentences_and_respect_limit():
    rows = [
        {"id": 10, "sentence1": "A is B.", "sentence2": "B is A.", "label": 1},
        {"id": 11, "sentence1": "", "sentence2": "Empty first sentence.", "label": 0},
        {"id": 12, "sentence1": "X", "sentence2": "Y", "label": 0},
        {"id": 13, "sentence1": "P", "sentence2": "Q", "label": 0},
    ]
    items = dataset_to_items(_dataset(rows), "de", PRESETS["pawsx"].template, limit=2)
    assert [i.id for i in items] == ["10", "12"]
    assert items[0].context == "A is B, right?"
    assert items[0].choices == [" No, b is A.", " Yes, b is A."]
    assert items[0].label == 1


def test_template_naming_a_missing_field_is_an_error():
    from polyrise.evaluation.choice import ChoiceTemplate

    template = ChoiceTemplate(context="{question}", choices=(" {a}", " {b}"))
    with pytest.raises(PolyriseError, match="needs field 'question'"):
        dataset_to_items([{"a": "x", "b": "y", "label": 0}], "en", template)
    by_column = ChoiceTemplate(context="{q}", choices="options", label_column="answer")
    [item] = dataset_to_items([{"q": "Q?", "options": [" a", " b", " c"], "answer": 2}], "en", by_column)
    assert (item.choices, item.label) == ([" a", " b", " c"], 2)


# ------------------------------------------------------------------------------------------- lm-eval bridge


@pytest.mark.parametrize("task", ["mgsm_direct_de", "mgsm_native_cot_en", "mgsm_direct", "ja_leaderboard_mgsm"])
def test_harness_refuses_mgsm(task):
    with pytest.raises(PolyriseError, match=r"polyrise eval --task mgsm"):
        run_harness("does-not-matter", ["xnli_en", task])


def test_harness_without_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(PolyriseError, match=r"pip install 'polyrise\[eval\]'"):
        run_harness("does-not-matter", ["xnli_en"])
