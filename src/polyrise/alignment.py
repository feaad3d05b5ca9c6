"""Question-alignment data (Zhang et al. 2024, "Getting More from Less"): question in L → the same question in English.

No answers are involved: the model only learns to map a question in a training language onto its translation.
The questions come from aligned prompt files (rows of different languages joined on `id`) or from the model's
own translations of English questions; every row that cannot be joined is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from polyrise.records import Prompt, QuestionPair

DROP_REASONS = ("missing_question", "missing_translation", "translation_failure", "identical")
"""Why a (question, translation) row is not a training example, in the order they are checked."""


def build_question_pairs(
    prompts: Sequence[Prompt],
    directions: Sequence[tuple[str, str]],
    template: str = "{question}",
    failed: Collection[tuple[str, str]] = (),
) -> tuple[list[QuestionPair], dict[str, dict[str, Any]]]:
    """Join `prompts` on `id` into one SFT example per id and direction (question language, target language).

    `failed` holds the (id, lang) rows whose self-translation failed, so they are counted as
    `translation_failure` rather than as missing. Returns the pairs and per-direction stats
    `{"zh-en": {"kept": n, "dropped": {reason: n}}}`.
    """
    text = {(p.id, p.lang): p.instruction for p in prompts}
    ids = list(dict.fromkeys(p.id for p in prompts))
    pairs: list[QuestionPair] = []
    stats: dict[str, dict[str, Any]] = {}
    for src, tgt in directions:
        dropped = dict.fromkeys(DROP_REASONS, 0)
        kept = 0
        for pid in ids:
            question, translation = text.get((pid, src)), text.get((pid, tgt))
            if question is None or translation is None:
                lang = src if question is None else tgt
                if (pid, lang) in failed:
                    dropped["translation_failure"] += 1
                else:
                    dropped["missing_question" if question is None else "missing_translation"] += 1
                continue
            if question.strip() == translation.strip():
                dropped["identical"] += 1  # an untranslated row teaches copying, not alignment
                continue
            prompt = template.replace("{question}", question)
            pairs.append(QuestionPair(id=pid, lang=src, target=tgt, prompt=prompt, completion=translation))
            kept += 1
        stats[f"{src}-{tgt}"] = {"kept": kept, "dropped": dropped}
    return pairs, stats
