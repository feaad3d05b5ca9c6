"""Reference likelihood: a per-language quality signal that needs no judge.

The model reads each instruction through its chat template and is scored on a high-quality reference answer
(e.g. the GPT-4-turbo X-AlpacaEval answers): the mean negative log-likelihood per answer token, pooled over a
language's answers (so `ppl` = exp(`nll`) is the usual perplexity). A model that writes better in a language
should find good answers in that language more likely. Per-token values depend on the tokenizer, so compare
iterates of one model, not different model families; the gap to English is shown by the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.evaluation.choice import score_continuations
from polyrise.generation import ChatRequest
from polyrise.generation.cache import GenerationCache
from polyrise.records import Record, Response


class ReferenceNLL(Record):
    """The summed negative log-likelihood of one reference answer's first `tokens` tokens."""

    id: str
    lang: str
    nll: float
    tokens: int


def reference_nll(
    engine: Any,
    references: Sequence[Response],
    max_answer_tokens: int,
    cache: GenerationCache | None = None,
) -> list[ReferenceNLL]:
    """Score every reference answer (`output`) given its instruction (`prompt`) under a local engine's model.

    The prompt is the engine's rendered chat (as in generation); the answer's first `max_answer_tokens`
    tokens are scored. Results are cached by (model fingerprint, prompt, answer, truncation), so a rerun
    or a killed evaluation only scores what is missing.
    """
    if not hasattr(engine, "model"):
        raise PolyriseError("reference likelihood needs the model's log-probabilities: use a local (hf) engine")
    tokenizer = engine.tokenizer
    keys, seqs = [], []
    for ref in references:
        context = engine.render(ChatRequest.user(ref.prompt))
        answer_ids = tokenizer(ref.output, add_special_tokens=False)["input_ids"][:max_answer_tokens]
        if not answer_ids:
            raise PolyriseError(f"reference answer {ref.id!r} ({ref.lang}) is empty")
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        seqs.append(([*context_ids, *answer_ids], len(context_ids)))
        keys.append(
            GenerationCache.key(engine.fingerprint, context, {"reflik": ref.output, "max_tokens": max_answer_tokens})
        )
    found = {k: json.loads(v) for k, v in cache.get_many(keys).items()} if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    chunk = 256  # committed per chunk: a kill loses at most one chunk
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        scored = score_continuations(
            engine.model, tokenizer, [seqs[i] for i in part], engine.batch_size, "scoring reference answers"
        )
        new = {keys[i]: [-logprob, n] for i, (logprob, n) in zip(part, scored, strict=True)}
        if cache is not None:
            cache.put_many({k: json.dumps(v) for k, v in new.items()})
        found.update(new)
    return [
        ReferenceNLL(id=ref.id, lang=ref.lang, nll=found[k][0], tokens=found[k][1])
        for ref, k in zip(references, keys, strict=True)
    ]


def reflik_scores(rows: Iterable[ReferenceNLL]) -> dict[str, dict[str, float | int]]:
    """Per language: `nll` (nats per answer token, pooled), `ppl` = exp(nll), `n` answers and `tokens`."""
    totals: dict[str, list[float]] = {}
    for row in rows:
        t = totals.setdefault(row.lang, [0.0, 0, 0])
        t[0] += row.nll
        t[1] += row.tokens
        t[2] += 1
    return {
        lang: {"nll": nll / tokens, "ppl": math.exp(nll / tokens), "n": int(n), "tokens": int(tokens)}
        for lang, (nll, tokens, n) in totals.items()
    }
