"""Multiple-choice evaluation by log-likelihood (XNLI, XCOPA, PAWS-X and any data of the same shape).

Each item is a `context` and a list of `choices`; the model's pick is the choice whose continuation
log-likelihood log P(choice | context) is highest, optionally normalised by the choice's length
(per character, like lm-evaluation-harness's `acc_norm`, or per token).

Local data is JSONL, one item per line::

    {"id": "7", "lang": "de", "context": "Der Himmel ist", "choices": [" blau", " grün"], "label": 0}

`id` and `lang` may be left out when the file is one language's file of a `{lang}` path template
(`lang` is then that language; `id` the 1-based line number). Choices are appended to the context
verbatim, so they usually start with a space. Unknown keys are errors.
"""

from __future__ import annotations

import inspect
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from rich.progress import Progress

from polyrise.errors import PolyriseError
from polyrise.io import iter_jsonl


class _InLanguage(Protocol):
    lang: str


L = TypeVar("L", bound=_InLanguage)
Item = TypeVar("Item", bound=BaseModel)

Normalize = Literal["chars", "tokens"] | None


class ChoiceItem(BaseModel):
    """One multiple-choice question: score `context + choices[i]`; `label` is the index of the right choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    lang: str
    context: str
    choices: list[str]
    label: int

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: list[str]) -> list[str]:
        if len(choices) < 2:
            raise ValueError("at least two choices are needed")
        if any(not c for c in choices):
            raise ValueError("choices must be non-empty strings")
        return choices

    @model_validator(mode="after")
    def _label_in_range(self) -> ChoiceItem:
        if not 0 <= self.label < len(self.choices):
            raise ValueError(f"label {self.label} is not an index into {len(self.choices)} choices")
        return self


class ChoicePrediction(BaseModel):
    """The model's pick for one item; `logliks` are the raw (unnormalised) sums of continuation log-probs."""

    model_config = ConfigDict(frozen=True)

    id: str
    lang: str
    pred: int
    label: int
    logliks: list[float]

    @property
    def correct(self) -> bool:
        return self.pred == self.label


# ---------------------------------------------------------------------------------------------- loading


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def load_items(
    path: str | Path,
    langs: Sequence[str] | None,
    record: type[Item],
    check: Callable[[Item], str | None] | None = None,
) -> list[Item]:
    """Rows of one JSONL file, or of a `{lang}` path template for each of `langs`, as `record`s.

    A single file must give `id` and `lang` in every row (`langs` then keeps only those languages); in a
    template's files they default to the file's language and the 1-based line number. `check` returns a
    problem with a valid row, or None. Errors name `file:line`.
    """

    def read(file: Path, lang: str | None) -> list[Item]:
        items: list[Item] = []
        for lineno, row in iter_jsonl(file):
            if lang is not None:
                if row.setdefault("lang", lang) != lang:
                    raise PolyriseError(f"{file}:{lineno}: lang {row['lang']!r} in the file of language {lang!r}")
                row.setdefault("id", str(lineno))
            if "id" in row and not isinstance(row["id"], str):
                row["id"] = str(row["id"])
            try:
                item = record.model_validate(row)
            except ValidationError as e:
                raise PolyriseError(f"{file}:{lineno}: {_first_error(e)}") from None
            problem = check(item) if check else None
            if problem:
                raise PolyriseError(f"{file}:{lineno}: {problem}")
            items.append(item)
        return items

    template = str(path)
    if "{lang}" in template:
        if not langs:
            raise PolyriseError(f"{template}: a {{lang}} path template needs the list of languages")
        return [item for lang in langs for item in read(Path(template.format(lang=lang)), lang)]
    items = read(Path(template), None)
    return [i for i in items if i.lang in langs] if langs else items


def load_choice_jsonl(path: str | Path, langs: Sequence[str] | None = None) -> list[ChoiceItem]:
    """Read choice items from one JSONL file, or from a `{lang}` path template for each of `langs`."""
    return load_items(path, langs, ChoiceItem)


def first_per_lang(items: Iterable[L], limit: int | None) -> list[L]:
    """The first `limit` items of every language (all items with None), in their order."""
    seen: Counter[str] = Counter()
    kept = []
    for item in items:
        seen[item.lang] += 1
        if limit is None or seen[item.lang] <= limit:
            kept.append(item)
    return kept


@dataclass(frozen=True)
class ChoiceTemplate:
    """How a dataset row becomes a ChoiceItem.

    `context` and each of `choices` are `str.format` templates over the row's fields (after `prepare`);
    `choices` may instead name a column that holds the list of choice strings.
    `prepare` may add derived fields, or return None to skip the row.
    """

    context: str
    choices: tuple[str, ...] | str
    label_column: str = "label"
    id_column: str | None = None
    prepare: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None


_FORMATTER = string.Formatter()


def _fill(template: str, row: Mapping[str, Any], what: str) -> str:
    try:
        return _FORMATTER.vformat(template, (), row)
    except KeyError as e:
        raise PolyriseError(
            f"{what} template {template!r} needs field {e.args[0]!r}; the row has {', '.join(sorted(row))}"
        ) from None


def row_to_item(row: Mapping[str, Any], index: int, lang: str, template: ChoiceTemplate) -> ChoiceItem | None:
    """Convert one dataset row (a mapping of column → value) to a ChoiceItem; None if `prepare` skips it."""
    data: dict[str, Any] | None = dict(row)
    if template.prepare is not None:
        data = template.prepare(data)
        if data is None:
            return None
    if isinstance(template.choices, str):
        if template.choices not in data:
            raise PolyriseError(f"no choices column {template.choices!r}; the row has {', '.join(sorted(data))}")
        choices = [str(c) for c in data[template.choices]]
    else:
        choices = [_fill(t, data, "choice") for t in template.choices]
    if template.label_column not in data:
        raise PolyriseError(f"no label column {template.label_column!r}; the row has {', '.join(sorted(data))}")
    item_id = str(data[template.id_column]) if template.id_column else str(index)
    try:
        return ChoiceItem(
            id=item_id,
            lang=lang,
            context=_fill(template.context, data, "context"),
            choices=choices,
            label=int(data[template.label_column]),
        )
    except ValidationError as e:
        raise PolyriseError(f"row {index} (id {item_id}): {_first_error(e)}") from None


def dataset_to_items(
    rows: Iterable[Mapping[str, Any]], lang: str, template: ChoiceTemplate, limit: int | None = None
) -> list[ChoiceItem]:
    """Convert rows (a `datasets.Dataset` or any iterable of dicts) to at most `limit` ChoiceItems."""
    items: list[ChoiceItem] = []
    for index, row in enumerate(rows):
        if limit is not None and len(items) >= limit:
            break
        item = row_to_item(row, index, lang, template)
        if item is not None:
            items.append(item)
    return items


def load_choice_hf(
    name: str,
    split: str,
    lang: str,
    context_template: str,
    choices_template: Sequence[str] | str,
    label_column: str = "label",
    *,
    config: str | None = None,
    id_column: str | None = None,
    prepare: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    limit: int | None = None,
) -> list[ChoiceItem]:
    """Load a Hugging Face dataset (`config` defaults to `lang`) and convert its rows to ChoiceItems.

    See ChoiceTemplate for the templates. Needs the dataset on the hub or in the HF cache.
    """
    import datasets

    template = ChoiceTemplate(
        context=context_template,
        choices=choices_template if isinstance(choices_template, str) else tuple(choices_template),
        label_column=label_column,
        id_column=id_column,
        prepare=prepare,
    )
    try:
        dataset = datasets.load_dataset(name, config if config is not None else lang, split=split)
    except Exception as e:  # network, unknown config/split, script-based datasets: all one user-facing error
        raise PolyriseError(f"cannot load dataset {name!r} ({config or lang}, {split}): {e}") from None
    return dataset_to_items(dataset, lang, template, limit)


# ---------------------------------------------------------------------------------------------- presets


_FINAL_PUNCT = ".,;!?\u3002\uff0e\uff01\uff1f"  # ASCII and full-width (CJK) sentence ends


def _strip_final_punct(text: str) -> str:
    text = text.strip()
    return text[:-1] if text and text[-1] in _FINAL_PUNCT else text


def _lower_first(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:]


def _prepare_xcopa(row: dict[str, Any]) -> dict[str, Any]:
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    return {
        **row,
        "stem": _strip_final_punct(row["premise"]),
        "connector": connector,
        "choice1_lc": _lower_first(row["choice1"]),
        "choice2_lc": _lower_first(row["choice2"]),
    }


def _prepare_pawsx(row: dict[str, Any]) -> dict[str, Any] | None:
    s1, s2 = row.get("sentence1") or "", row.get("sentence2") or ""
    if not s1.strip() or not s2.strip():
        return None  # PAWS-X has a few empty sentences; lm-eval drops them too
    return {**row, "s1": _strip_final_punct(s1), "s2": _lower_first(s2)}


def _prepare_xnli(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "stem": _strip_final_punct(row["premise"]), "hyp": _lower_first(row["hypothesis"])}


@dataclass(frozen=True)
class ChoicePreset:
    """A ready-made benchmark: hub dataset (config = language code), default split, languages, template.

    All three datasets also have a `validation` split (XNLI 2490, XCOPA 100, PAWS-X 2000 rows per language).
    """

    dataset: str
    split: str
    languages: tuple[str, ...]
    template: ChoiceTemplate
    note: str = ""


PRESETS: dict[str, ChoicePreset] = {
    "xnli": ChoicePreset(
        dataset="facebook/xnli",
        split="test",
        languages=("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
        template=ChoiceTemplate(
            context="{stem}, right?",
            choices=(" Yes, {hyp}", " Also, {hyp}", " No, {hyp}"),  # 0 entailment, 1 neutral, 2 contradiction
            prepare=_prepare_xnli,
        ),
        note="lm-eval's 'premise, right? Yes/Also/No, hypothesis' with English verbalisers; unlike lm-eval, the "
        "premise's final period is dropped and the hypothesis starts lower-case (as lm-eval does for PAWS-X)",
    ),
    "xcopa": ChoicePreset(
        dataset="cambridgeltl/xcopa",
        split="test",
        languages=("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"),
        template=ChoiceTemplate(
            context="{stem} {connector}",
            choices=(" {choice1_lc}", " {choice2_lc}"),
            id_column="idx",
            prepare=_prepare_xcopa,
        ),
        note="premise without its final period + ' because' (cause) / ' therefore' (effect), English connectors",
    ),
    "pawsx": ChoicePreset(
        dataset="google-research-datasets/paws-x",
        split="test",
        languages=("de", "en", "es", "fr", "ja", "ko", "zh"),
        template=ChoiceTemplate(
            context="{s1}, right?",
            choices=(" No, {s2}", " Yes, {s2}"),  # 0 not a paraphrase, 1 paraphrase
            id_column="id",
            prepare=_prepare_pawsx,
        ),
        note="lm-eval's 'sentence1, right? No/Yes, sentence2' format with the English verbalisers",
    ),
}
"""Ready-made choice benchmarks. The verbalisers/connectors are English in every language (lm-eval uses
native ones), so accuracies compare across polyrise runs and iterations, not with lm-eval's numbers."""


def load_preset(name: str, lang: str, split: str | None = None, limit: int | None = None) -> list[ChoiceItem]:
    """Load one language of a preset from the Hugging Face hub (or the HF cache)."""
    if name not in PRESETS:
        raise PolyriseError(f"unknown choice task {name!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if lang not in preset.languages:
        raise PolyriseError(f"{name} has no language {lang!r}; it has {', '.join(preset.languages)}")
    t = preset.template
    return load_choice_hf(
        preset.dataset,
        split or preset.split,
        lang,
        t.context,
        t.choices,
        t.label_column,
        id_column=t.id_column,
        prepare=t.prepare,
        limit=limit,
    )


# ---------------------------------------------------------------------------------------------- scoring


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids with the tokenizer's own special-token defaults (a BOS where the model expects one)."""
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer: Any, context: str, choice: str) -> tuple[list[int], int]:
    """(token ids of `context + choice`, number of them that belong to the context), as lm-eval splits them.

    Trailing whitespace of the context moves to the choice; the full string is tokenised once and the
    continuation is whatever follows the context's own token count, so a merge across the boundary is
    scored as part of the choice. An empty context is replaced by a BOS (else EOS) token to condition on.
    """
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + choice
    whole = _encode(tokenizer, stripped + continuation)
    n_context = len(_encode(tokenizer, stripped)) if stripped else 0
    if n_context == 0:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise PolyriseError("an empty context needs a BOS or EOS token to condition on; the tokenizer has none")
        whole, n_context = [prefix, *whole], 1
    n_context = min(n_context, len(whole) - 1)  # at least one scored token
    return whole, n_context


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.inference_mode()
def _score_batch(model: Any, seqs: list[tuple[list[int], int]], pad_id: int, keep: bool) -> list[tuple[float, int]]:
    """Sum of continuation log-probs for each (ids, n_context) row, left-padded into one forward pass."""
    device = model.device
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (ids, _) in enumerate(seqs):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # Left padding puts every continuation at the end: only the last `n_keep` positions' logits are needed.
    n_keep = max(len(ids) - n_ctx for ids, n_ctx in seqs) + 1
    kwargs = {"logits_to_keep": n_keep} if keep else {}
    out = model(
        input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), **kwargs
    )
    logits = out.logits[:, -n_keep:, :].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    # logits at position p predict the token at p + 1; in the kept window that is offset by one.
    targets = input_ids[:, width - n_keep + 1 :].to(device)
    token_lp = logprobs[:, :-1, :].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    results = []
    for row, (ids, n_ctx) in enumerate(seqs):
        n_cont = len(ids) - n_ctx
        results.append((token_lp[row, token_lp.shape[1] - n_cont :].sum().item(), n_cont))
    return results


def score_continuations(
    model: Any, tokenizer: Any, seqs: Sequence[tuple[list[int], int]], batch_size: int, desc: str
) -> list[tuple[float, int]]:
    """(sum of log P(continuation | context), continuation tokens) for each (token ids, context length) row.

    Rows are scored in length-sorted, left-padded batches of `batch_size` (padding is done here, whatever
    the tokenizer's `padding_side`), with a progress bar; results come back in row order.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0  # masked out anyway
    keep = _accepts_logits_to_keep(model)
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k][0]))
    scores: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    step = max(batch_size, 1)
    with Progress(transient=True) as progress:
        task = progress.add_task(desc, total=len(seqs))
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            for k, result in zip(idx, _score_batch(model, [seqs[k] for k in idx], pad_id, keep), strict=True):
                scores[k] = result
            progress.advance(task, len(idx))
    return scores


def score_choices(
    model: Any,
    tokenizer: Any,
    items: Sequence[ChoiceItem],
    batch_size: int = 16,
    normalize: Normalize = "chars",
) -> list[ChoicePrediction]:
    """Pick a choice for every item by log P(choice | context), in item order.

    All (item, choice) pairs are scored by `score_continuations` in batches of `batch_size`. `normalize`:
    "chars" divides each log-likelihood by the choice's length in characters (lm-eval's acc_norm), "tokens" by
    its token count, None keeps the sum.
    Ties go to the lower index.
    """
    if normalize not in ("chars", "tokens", None):
        raise PolyriseError(f"normalize must be 'chars', 'tokens' or None, not {normalize!r}")
    pairs = [(i, j) for i, item in enumerate(items) for j in range(len(item.choices))]
    encoded = [encode_pair(tokenizer, items[i].context, items[i].choices[j]) for i, j in pairs]
    scores = score_continuations(model, tokenizer, encoded, batch_size, desc="scoring choices")

    per_item: list[list[tuple[float, int]]] = [[] for _ in items]
    for (i, _), s in zip(pairs, scores, strict=True):
        per_item[i].append(s)
    predictions = []
    for item, item_scores in zip(items, per_item, strict=True):
        logliks = [ll for ll, _ in item_scores]
        if normalize == "chars":
            keyed = [ll / len(c) for ll, c in zip(logliks, item.choices, strict=True)]
        elif normalize == "tokens":
            keyed = [ll / n for ll, n in item_scores]
        else:
            keyed = logliks
        pred = max(range(len(keyed)), key=lambda j: (keyed[j], -j))
        predictions.append(ChoicePrediction(id=item.id, lang=item.lang, pred=pred, label=item.label, logliks=logliks))
    return predictions


def choice_accuracy(predictions: Iterable[ChoicePrediction]) -> dict[str, dict[str, float | int]]:
    """Per language: `accuracy` (share of picks equal to the label) and `n` items."""
    counts: dict[str, list[int]] = {}
    for p in predictions:
        c = counts.setdefault(p.lang, [0, 0])
        c[0] += p.correct
        c[1] += 1
    return {lang: {"accuracy": right / n, "n": n} for lang, (right, n) in counts.items()}
