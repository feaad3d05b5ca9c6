"""Reference likelihood: a per-language quality signal that needs no judge.

The model reads each instruction through its chat template and is scored on a high-quality reference answer
(e.g. the GPT-4-turbo X-AlpacaEval answers): the mean negative log-likelihood per answer token, pooled over a
language's answers (so `ppl` = exp(`nll`) is the usual perplexity). A model that writes better in a language
should find good answers in that language more likely. Per-token values depend on the tokenizer, so compare
iterates of one model, not different model families; the gap to English is shown by the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from polyrise.errors import PolyriseError
from polyrise.evaluation.base import Metric, Scores, TaskRun, TaskSettings, TaskView
from polyrise.evaluation.judge import load_alpaca_eval_outputs
from polyrise.generation import ChatRequest, Generator
from polyrise.io import write_jsonl
from polyrise.records import Record, Response
from polyrise.settings import MAX_TOKENS
from polyrise.stats import RowSamples, Sample, summarize


class ReferenceNLL(Record):
    """The summed negative log-likelihood of one reference answer's first `tokens` tokens."""

    id: str
    lang: str
    nll: float
    tokens: int


def reference_nll(generator: Generator, references: Sequence[Response], max_answer_tokens: int) -> list[ReferenceNLL]:
    """Score every reference answer (`output`) given its instruction (`prompt`) through the engine's
    `loglikelihood`: the prompt is the engine's rendered chat (as in generation), the answer's first
    `max_answer_tokens` tokens are scored. Cached (model fingerprint, prompt, answer, truncation), so a rerun or a
    killed evaluation only scores what is missing. Asked for longest first, so that each chunk the generator scores
    holds texts of similar length (less padding in its batches)."""
    for ref in references:
        if not ref.output.strip():
            raise PolyriseError(f"reference answer {ref.id!r} ({ref.lang}) is empty")
    requests = [(generator.render(ChatRequest.user(ref.prompt)), ref.output) for ref in references]
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    scored = generator.loglikelihood([requests[i] for i in order], max_answer_tokens, desc="scoring reference answers")
    by_ref = dict(zip(order, scored, strict=True))
    return [
        ReferenceNLL(id=ref.id, lang=ref.lang, nll=-by_ref[i].logprob, tokens=by_ref[i].tokens)
        for i, ref in enumerate(references)
    ]


def _per_token(values: np.ndarray) -> float:
    """Pooled NLL per token of rows of (summed NLL, tokens)."""
    return float(values[:, 0].sum() / values[:, 1].sum())


def _perplexity(values: np.ndarray) -> float:
    return math.exp(_per_token(values))


ROW = ReferenceNLL
"""The per-sample rows of the task, which `row_samples` turns into per-item values."""


def row_samples(rows: Iterable[ReferenceNLL]) -> RowSamples:
    """Per language: the `nll` and `ppl` samples, each answer's (summed NLL, tokens), pooled per token."""
    by_lang: dict[str, list[ReferenceNLL]] = {}
    for row in rows:
        by_lang.setdefault(row.lang, []).append(row)
    samples: RowSamples = {}
    for lang, part in by_lang.items():
        ids, values = tuple(r.id for r in part), np.array([(r.nll, r.tokens) for r in part], dtype=float)
        samples[lang] = {"nll": Sample(ids, values, _per_token), "ppl": Sample(ids, values, _perplexity)}
    return samples


def reflik_scores(rows: Iterable[ReferenceNLL], seed: int = 0) -> dict[str, dict[str, float | int]]:
    """Per language: `nll` (nats per answer token, pooled), `ppl` = exp(nll), each with its 95% bootstrap interval
    over answers (seeded by (seed, language)), `n` answers and `tokens`."""
    samples = row_samples(rows)
    scores = summarize(samples, seed)
    for lang, metrics in samples.items():
        scores[lang]["tokens"] = int(metrics["nll"].values[:, 1].sum())
    return scores


class ReflikTask(TaskSettings):
    """Reference likelihood: the mean NLL per token of reference answers given their instructions."""

    task: Literal["reflik"] = "reflik"
    source: str
    """Reference answers in alpaca_eval format (`instruction` + `output`, `{lang}`), e.g. the GPT-4-turbo
    X-AlpacaEval answers."""
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    """The number of each reference answer's first tokens that are scored."""


METRICS = (Metric("nll", lower_is_better=True), Metric("ppl", lower_is_better=True, headline=False))
VIEW = TaskView(METRICS, ROW, samples=lambda rows, _: row_samples(rows))
"""A row is a reference's NLL, no answer: the report pairs its values and shows no rows."""


def run(task: ReflikTask, context: TaskRun) -> Scores:
    """Score the task's reference answers; writes the per-answer NLLs, returns `reflik_scores`."""
    references = load_alpaca_eval_outputs(task.source, context.langs, task.limit)
    rows = reference_nll(context.generator, references, task.max_new_tokens)
    write_jsonl(context.rows_path(task), rows)
    return reflik_scores(rows, context.seed)
