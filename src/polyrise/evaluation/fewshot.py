"""Few-shot in-context classification (XNLI / PAWS-X / sentiment-shaped data) with the answer restricted to labels.

Each query follows k demonstrations of its own language, as plain text (no chat template;
`templates.classify_prompt`)::

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

import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

import polyrise.evaluation.choice as choice
from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.evaluation.choice import ChoiceItem, Normalize, NormalizeOption, choice_accuracy, score_choices
from polyrise.generation import Generator
from polyrise.io import first_per_lang, load_rows, write_jsonl
from polyrise.stats import RowSamples
from polyrise.templates import classify_prompt

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

    return load_rows(path, langs, ClassifyItem, known_label)


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
    return classify_prompt(query.text, [(d.text, d.label) for d in demos])


# ---------------------------------------------------------------------------------------------- evaluation


def classify(
    generator: Generator,
    items: Sequence[ClassifyItem],
    labels: Sequence[str] | None = None,
    *,
    k: int = 0,
    demos: Iterable[ClassifyItem] | None = None,
    seed: int = 0,
    constrain: Constrain = "loglik",
    normalize: Normalize = None,
    temperature: float = 0.0,
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
        from polyrise.generation.constrained import generate_labels

        generated = generate_labels(generator.engine, prompts, labels, temperature=temperature, seed=seed)
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
        for item, scored in zip(items, score_choices(generator, questions, normalize), strict=True)
    ]


ROW = ClassifyPrediction
"""The per-sample rows of the task, which `row_samples` turns into per-item values."""


def row_samples(predictions: Iterable[ClassifyPrediction]) -> RowSamples:
    """Per language: the `accuracy` sample, as in choice.py (it reads `id`, `lang` and `correct`)."""
    return choice.row_samples(predictions)


def fewshot_accuracy(predictions: Iterable[ClassifyPrediction], seed: int = 0) -> dict[str, dict[str, float | int]]:
    """Per language: `accuracy` (share of predictions equal to the gold label) with its 95% bootstrap interval
    and `n` items (`choice_accuracy`)."""
    return choice_accuracy(predictions, seed)


# ---------------------------------------------------------------------------------------------- the task


class ClassifyTask(TaskSettings):
    """Few-shot in-context classification accuracy, the answer restricted to the label set."""

    task: Literal["classify"] = "classify"
    source: str
    """JSONL of `id`, `lang`, `text`, `label` (may hold `{lang}`)."""
    few_shot: int = Field(default=0, ge=0, le=1000)
    """Demonstrations (of the item's language, never the item) before every item."""
    labels: list[str] | None = Field(default=None, min_length=2)
    """The label set (default: the sorted labels in the data); other labels in the data are errors."""
    constrain: Constrain = "loglik"
    """Pick the label by log-likelihood, or decode it with every non-label token masked out."""
    normalize: NormalizeOption = "chars"
    """loglik: length normalisation of the label log-likelihoods."""
    demos: str | None = None
    """JSONL of demonstrations (`{lang}`); default: the other items of the same language."""


METRICS = (Metric("accuracy"),)
VIEW = TaskView(METRICS, ROW, pick="pred", gold="label", samples=lambda rows, _: row_samples(rows))
"""A row: the predicted label, right or wrong against the gold label."""


def run(task: ClassifyTask, context: TaskRun) -> Scores:
    """Classify the task's items; writes the predictions, returns accuracy per language."""
    items = load_classify_jsonl(task.source, context.langs, task.labels)
    pool = load_classify_jsonl(task.demos, context.langs, task.labels) if task.demos else items
    predictions = classify(
        context.generator,
        first_per_lang(items, task.limit),
        label_set([*items, *pool], task.labels),
        k=task.few_shot,
        demos=pool,
        seed=context.seed,
        constrain=task.constrain,
        normalize=None if task.normalize == "none" else task.normalize,
    )
    write_jsonl(context.rows_path(task), predictions)
    return fewshot_accuracy(predictions, context.seed)
