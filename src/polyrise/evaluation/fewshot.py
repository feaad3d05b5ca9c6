"""Few-shot in-context classification (XNLI / PAWS-X / sentiment-shaped data) with the answer restricted to labels.

Each query follows k demonstrations of its own language, as plain text (no chat template)::

    {demo text}
    Answer: {demo label}

    {query text}
    Answer:

and the answer is the continuation " " + label of one of the labels, picked either by the labels'
log-likelihoods (`constrain="loglik"`, choice.py's scoring) or by decoding token by token with every token
that does not continue some label masked out (`constrain="generate"`, a prefix trie of the labels' token
sequences in `LabelTrieLogitsProcessor`), so neither can answer anything but a label.

Local data is JSONL, one item per line::

    {"id": "7", "lang": "de", "text": "Der Film war großartig.", "label": "positive"}

`id` and `lang` may be left out in the files of a `{lang}` path template (as in choice.py). Unknown keys are errors.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress
from transformers import DynamicCache, LogitsProcessor

from polyrise.errors import PolyriseError
from polyrise.evaluation.choice import ChoiceItem, Normalize, choice_accuracy, encode_pair, load_items, score_choices

DEMO_TEMPLATE = "{text}\nAnswer: {label}\n\n"
QUERY_TEMPLATE = "{text}\nAnswer:"
"""The query's answer is the continuation " " + label."""

Constrain = Literal["loglik", "generate"]


class ClassifyItem(BaseModel):
    """One text to classify and its gold label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    lang: str
    text: str = Field(min_length=1)
    label: str = Field(min_length=1)


class ClassifyPrediction(BaseModel):
    """The label picked for one item; `scores`: each label's raw log-likelihood (loglik only)."""

    model_config = ConfigDict(frozen=True)

    id: str
    lang: str
    pred: str
    label: str
    scores: dict[str, float] | None = None

    @property
    def correct(self) -> bool:
        return self.pred == self.label


# ---------------------------------------------------------------------------------------------- loading


def load_classify_jsonl(
    path: str | Path, langs: Sequence[str] | None = None, labels: Collection[str] | None = None
) -> list[ClassifyItem]:
    """Read items from one JSONL file, or from a `{lang}` path template for each of `langs` (see choice.py).

    With `labels`, a row with any other label is an error naming `file:line`.
    """

    def known_label(item: ClassifyItem) -> str | None:
        if labels is None or item.label in labels:
            return None
        return f"label {item.label!r} is not one of {', '.join(map(repr, labels))}"

    return load_items(path, langs, ClassifyItem, known_label)


def label_set(items: Iterable[ClassifyItem], labels: Sequence[str] | None = None) -> list[str]:
    """`labels` (checked: at least two, distinct, non-empty) or else the sorted labels seen in `items`."""
    result = list(labels) if labels is not None else sorted({item.label for item in items})
    if len(result) < 2 or len(set(result)) < len(result) or not all(result):
        raise PolyriseError(f"classification needs at least two distinct non-empty labels, not {result}")
    return result


# ---------------------------------------------------------------------------------------------- prompts


class DemoPool:
    """Demonstration candidates, indexed by language and label so that drawing k per query is cheap."""

    def __init__(self, items: Iterable[ClassifyItem]) -> None:
        self._groups: dict[str, dict[str, list[ClassifyItem]]] = {}
        self._texts: Counter[tuple[str, str, str]] = Counter()
        for item in items:
            self._groups.setdefault(item.lang, {}).setdefault(item.label, []).append(item)
            self._texts[item.lang, item.label, item.text] += 1

    def draw(self, query: ClassifyItem, k: int, seed: int = 0) -> list[ClassifyItem]:
        """k items of the query's language, never one with the query's text, balanced over labels, shuffled.

        Seeded by (`seed`, language, id), so an item's demonstrations do not depend on the other queries.
        """
        if k == 0:
            return []
        groups = sorted(self._groups.get(query.lang, {}).items())
        excluded = [self._texts[query.lang, label, query.text] for label, _ in groups]
        available = sum(len(group) for _, group in groups) - sum(excluded)
        if available < k:
            raise PolyriseError(
                f"{k}-shot needs {k} demonstrations in {query.lang!r} besides item {query.id}; there are {available}"
            )
        rng = random.Random(f"{seed}/{query.lang}/{query.id}")
        shuffled = [
            [d for d in rng.sample(group, min(len(group), k + n)) if d.text != query.text][:k]
            for (_, group), n in zip(groups, excluded, strict=True)
        ]
        rng.shuffle(shuffled)
        # round robin over the labels, so every label is shown about equally often
        picked = [d for round_ in zip_longest(*shuffled) for d in round_ if d is not None][:k]
        rng.shuffle(picked)
        return picked


def build_prompt(query: ClassifyItem, demos: Iterable[ClassifyItem]) -> str:
    """The demonstrations with their labels, then the query waiting for its label."""
    shots = "".join(DEMO_TEMPLATE.format(text=d.text, label=d.label) for d in demos)
    return shots + QUERY_TEMPLATE.format(text=query.text)


# ---------------------------------------------------------------------------------------------- constrained decoding


class LabelTrie:
    """Prefix trie of the labels' token sequences: which tokens may come next, and which sequences are labels.

    EOS may follow a complete label (it ends a label that a longer one extends); a sequence is finished once it
    is a label no other label extends, or a label followed by EOS.
    """

    def __init__(self, sequences: Mapping[str, Sequence[int]], eos_id: int) -> None:
        self.eos_id = eos_id
        self.labels: dict[tuple[int, ...], str] = {}
        self.next: dict[tuple[int, ...], set[int]] = {}
        for label, seq in sequences.items():
            key = tuple(seq)
            if not key or eos_id in key:
                raise PolyriseError(f"label {label!r} must be one or more tokens other than EOS, not {list(key)}")
            if key in self.labels:
                raise PolyriseError(f"labels {self.labels[key]!r} and {label!r} have the same tokens {list(key)}")
            self.labels[key] = label
            for i in range(len(key)):
                self.next.setdefault(key[:i], set()).add(key[i])

    def finished(self, tokens: Sequence[int]) -> bool:
        key = tuple(tokens)
        return (bool(key) and key[-1] == self.eos_id) or (key in self.labels and key not in self.next)

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow `tokens`: those continuing a label, EOS after a label; only EOS once finished."""
        key = tuple(tokens)
        if self.finished(key):
            return [self.eos_id]
        if key not in self.next:
            raise PolyriseError(f"tokens {list(key)} do not start any label")
        return [*self.next[key], *([self.eos_id] if key in self.labels else [])]

    def label(self, tokens: Sequence[int]) -> str:
        """The label that finished `tokens` spell (a trailing EOS dropped)."""
        key = tuple(tokens)
        return self.labels[key[:-1] if key and key[-1] == self.eos_id else key]


class LabelTrieLogitsProcessor(LogitsProcessor):
    """Sets every token that may not follow a row's generated tokens (per its LabelTrie) to -inf.

    `input_ids` are the left-padded prompts (`prompt_width` columns) followed by the generated tokens.
    """

    def __init__(self, tries: Sequence[LabelTrie], prompt_width: int) -> None:
        self.tries = tries
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, (trie, ids) in enumerate(zip(self.tries, input_ids[:, self.prompt_width :].tolist(), strict=True)):
            allowed[row, trie.allowed(ids)] = True
        return scores.masked_fill(~allowed, -math.inf)


def _label_tokens(tokenizer: Any, prompt: str, labels: Sequence[str]) -> tuple[list[int], dict[str, list[int]]]:
    """The prompt's ids and each label's ids as the continuation " " + label, split as `encode_pair` does."""
    split = {label: encode_pair(tokenizer, prompt, " " + label) for label in labels}
    prompts = {tuple(whole[:n]) for whole, n in split.values()}
    if len(prompts) > 1:
        raise PolyriseError(f"the labels merge differently with the end of the prompt {prompt[-40:]!r}")
    return list(prompts.pop()), {label: whole[n:] for label, (whole, n) in split.items()}


@torch.inference_mode()
def _generate_batch(
    model: Any, prompts: list[list[int]], tries: list[LabelTrie], pad_id: int, temperature: float, rng: torch.Generator
) -> list[list[int]]:
    """Left-padded constrained decoding of one batch; each row's tokens up to where its trie says finished."""
    device = model.device
    width = max(map(len, prompts))
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    processor = LabelTrieLogitsProcessor(tries, width)
    cache = DynamicCache(config=model.config)
    step_ids = input_ids
    for _ in range(1 + max(len(key) for trie in tries for key in trie.labels)):  # enough to finish every label
        out = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        scores = processor(input_ids, out.logits[:, -1, :].float())
        if temperature > 0:
            step_ids = torch.multinomial((scores / temperature).softmax(-1), 1, generator=rng)
        else:
            step_ids = scores.argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, step_ids], dim=1)
        generated = input_ids[:, width:].tolist()
        if all(trie.finished(ids) for trie, ids in zip(tries, generated, strict=True)):
            break
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        positions = positions[:, -1:] + 1
    # finished rows were fed EOS until the last row finished: cut each at its first finished prefix
    return [
        next(ids[:n] for n in range(1, len(ids) + 1) if trie.finished(ids[:n]))
        for trie, ids in zip(tries, generated, strict=True)
    ]


def generate_labels(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    labels: Sequence[str],
    *,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[tuple[str, list[int]]]:
    """Decode " " + one of `labels` after every prompt: (label, generated token ids) per prompt, in order.

    Greedy, or sampled at `temperature` > 0 from a generator seeded with `seed`. Every token that does not
    continue a label is masked out, so the ids are always exactly one label's tokens (plus EOS where the model
    ended a label that a longer label extends). Prompts are decoded in length-sorted, left-padded batches.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise PolyriseError("constrained generation needs the tokenizer's EOS token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    tries: dict[tuple[tuple[int, ...], ...], LabelTrie] = {}  # one per distinct tokenisation of the labels
    encoded: list[tuple[list[int], LabelTrie]] = []
    for prompt in prompts:
        ids, sequences = _label_tokens(tokenizer, prompt, labels)
        key = tuple(tuple(seq) for seq in sequences.values())
        if key not in tries:
            tries[key] = LabelTrie(sequences, eos_id)
        encoded.append((ids, tries[key]))
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i][0]))
    rng = torch.Generator(device=model.device).manual_seed(seed)
    results: list[tuple[str, list[int]]] = [("", [])] * len(prompts)
    batch_size = max(batch_size, 1)
    with Progress(transient=True) as progress:
        task = progress.add_task("generating labels", total=len(prompts))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch_tries = [encoded[i][1] for i in idx]
            tokens = _generate_batch(model, [encoded[i][0] for i in idx], batch_tries, pad_id, temperature, rng)
            for i, trie, ids in zip(idx, batch_tries, tokens, strict=True):
                results[i] = (trie.label(ids), ids)
            progress.advance(task, len(idx))
    return results


# ---------------------------------------------------------------------------------------------- evaluation


def classify(
    model: Any,
    tokenizer: Any,
    items: Sequence[ClassifyItem],
    labels: Sequence[str] | None = None,
    *,
    k: int = 0,
    demos: Iterable[ClassifyItem] | None = None,
    seed: int = 0,
    constrain: Constrain = "loglik",
    normalize: Normalize = None,
    temperature: float = 0.0,
    batch_size: int = 16,
) -> list[ClassifyPrediction]:
    """Label every item after `k` demonstrations of its language drawn from `demos` (default: `items`).

    `labels` default to the sorted labels of the items and demonstrations. `constrain="loglik"` picks the
    label with the highest log-likelihood (normalised as `score_choices` does); `"generate"` decodes it with
    `generate_labels` (greedy unless `temperature` > 0).
    """
    pool = list(items if demos is None else demos)
    labels = label_set([*items, *pool], labels)
    if constrain not in ("loglik", "generate"):
        raise PolyriseError(f"constrain must be 'loglik' or 'generate', not {constrain!r}")
    for item in [*items, *pool]:
        if item.label not in labels:
            raise PolyriseError(f"item {item.id} ({item.lang}): label {item.label!r} is not one of {labels}")
    draw = DemoPool(pool).draw
    prompts = [build_prompt(item, draw(item, k, seed)) for item in items]
    if constrain == "generate":
        generated = generate_labels(
            model, tokenizer, prompts, labels, temperature=temperature, seed=seed, batch_size=batch_size
        )
        return [
            ClassifyPrediction(id=item.id, lang=item.lang, pred=pred, label=item.label)
            for item, (pred, _) in zip(items, generated, strict=True)
        ]
    choices = [" " + label for label in labels]
    questions = [
        ChoiceItem(id=item.id, lang=item.lang, context=prompt, choices=choices, label=labels.index(item.label))
        for item, prompt in zip(items, prompts, strict=True)
    ]
    return [
        ClassifyPrediction(
            id=item.id,
            lang=item.lang,
            pred=labels[scored.pred],
            label=item.label,
            scores=dict(zip(labels, scored.logliks, strict=True)),
        )
        for item, scored in zip(items, score_choices(model, tokenizer, questions, batch_size, normalize), strict=True)
    ]


def fewshot_accuracy(predictions: Iterable[ClassifyPrediction]) -> dict[str, dict[str, float | int]]:
    """Per language: `accuracy` (share of predictions equal to the gold label) and `n` items."""
    return choice_accuracy(predictions)  # it reads only `lang` and `correct`
