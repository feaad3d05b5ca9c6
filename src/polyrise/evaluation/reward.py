"""The reward itself, measured: how often a preference pair prefers the right answer.

Language Imbalance Driven Rewarding assumes T_L(y_en) is better than y_L (and y_en better than T_en(y_L)). When
the prompts carry a gold answer (GSM-style problems: an `answer` field; the sandbox's training prompts), each pair's
chosen and rejected answers are labelled right or wrong by the MGSM extractor, and per row (the pairs in a target
language `L`, and the English pairs built from it, `en/L`) the shares of pairs where chosen is right and rejected
wrong (`right_wrong`), both right, both wrong, and the inverse (`wrong_right`) are counted, each with its interval
over the row's `n` pairs. `reward_accuracy` is the share of the informative pairs (exactly one side right, `n` =
`informative`) where the right one is chosen: 1 is a perfect reward, 0.5 an uninformative one, below 0.5 a reward
that teaches the wrong answer.

`gap_baseline` is what the language gap alone predicts for it (docs/pairs.md derives it): with p_c and p_r the
accuracies of the model's own answers the two sides were made from (y_en and y_L: `chosen_from_accuracy`,
`rejected_from_accuracy`, on the row's prompts) and their errors independent,
P(right_wrong) / P(exactly one right) = p_c (1 - p_r) / (p_c (1 - p_r) + (1 - p_c) p_r). A reward that only
rewards the language gap scores it; one that beats it carries more than the gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from polyrise.evaluation.base import Metric, TaskView
from polyrise.evaluation.math import extract_answer, is_correct
from polyrise.records import PreferencePair, Record
from polyrise.stats import interval_entries, mean

METRICS = (
    Metric("reward_accuracy"),
    Metric("gap_baseline"),
    Metric("chosen_from_accuracy", headline=False),
    Metric("rejected_from_accuracy", headline=False),
    Metric("right_wrong", headline=False),
    Metric("both_right", headline=False),
    Metric("both_wrong", headline=False),
    Metric("wrong_right", headline=False),
)
OUTCOMES = ("right_wrong", "both_right", "both_wrong", "wrong_right")
VIEW = TaskView(METRICS, key="reward")
"""A method's scores of its reward (`reward` in its scores, by iteration's model); its labels are per pair, shown
with the pairs (`RewardLabel`)."""


def pair_row(lang: str, via: str) -> str:
    """A pair's row in the reward's scores: its language for target-language pairs, `en/<L>` for the English pairs
    built from L's answers."""
    return via if lang == via else f"{lang}/{via}"


class RewardLabel(Record):
    """One pair's correctness: chosen and rejected right (True) or wrong (False) against the prompt's gold."""

    id: str
    lang: str
    via: str
    chosen_right: bool
    rejected_right: bool
    chosen_from_right: bool | None = None
    """Whether the model's own answer the chosen side was made from (y_en for LIDR) is right; None: not known."""
    rejected_from_right: bool | None = None
    """The same of the rejected side's answer (y_L)."""

    @property
    def row(self) -> str:
        return pair_row(self.lang, self.via)

    @property
    def outcome(self) -> str:
        """`right_wrong`, `both_right`, `both_wrong` or `wrong_right` (chosen first)."""
        if self.chosen_right == self.rejected_right:
            return "both_right" if self.chosen_right else "both_wrong"
        return "right_wrong" if self.chosen_right else "wrong_right"


def label_pairs(
    pairs: Iterable[PreferencePair],
    golds: Mapping[str, str],
    answers: Mapping[tuple[str, str], str] | None = None,
    source_lang: str = "en",
) -> list[RewardLabel]:
    """Label every pair whose prompt id has a gold answer; the number is extracted from each answer in its language.
    With `answers` ((id, lang) → the model's answer), also the answers each side was made from: the source-language
    answer for chosen, the answer in the pair's `via` language for rejected."""

    def right(text: str | None, lang: str, pid: str) -> bool | None:
        return None if text is None else is_correct(extract_answer(text, lang), golds[pid])

    return [
        RewardLabel(
            id=p.id,
            lang=p.lang,
            via=p.via,
            chosen_right=is_correct(extract_answer(p.chosen, p.lang), golds[p.id]),
            rejected_right=is_correct(extract_answer(p.rejected, p.lang), golds[p.id]),
            chosen_from_right=right(answers.get((p.id, source_lang)), source_lang, p.id) if answers else None,
            rejected_from_right=right(answers.get((p.id, p.via)), p.via, p.id) if answers else None,
        )
        for p in pairs
        if p.id in golds
    ]


def gap_baseline(origins: np.ndarray) -> float:
    """The reward accuracy the language gap alone predicts from (n, 2) 0/1 rows (chosen's source answer right,
    rejected's source answer right), errors independent; NaN when no pair can be informative."""
    p_c, p_r = float(np.mean(origins[:, 0])), float(np.mean(origins[:, 1]))
    one = p_c * (1 - p_r) + (1 - p_c) * p_r
    return p_c * (1 - p_r) / one if one else float("nan")


def reward_scores(labels: Iterable[RewardLabel], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per row: the four outcome shares and `reward_accuracy`, each with its 95% bootstrap interval, `n` labelled
    pairs and `informative` (exactly one side right); where every label knows its sides' source answers, the
    `gap_baseline` and the two source accuracies it comes from, with their intervals (over the same `n` pairs)."""
    by_row: dict[str, list[RewardLabel]] = {}
    for label in labels:
        by_row.setdefault(label.row, []).append(label)
    scores: dict[str, dict[str, Any]] = {}
    for row, rows in by_row.items():
        outcomes = [label.outcome for label in rows]
        informative = np.array([o == "right_wrong" for o in outcomes if o in ("right_wrong", "wrong_right")], float)
        entries = interval_entries("reward_accuracy", informative, seed, row)
        for o in OUTCOMES:
            entries |= interval_entries(o, np.array([x == o for x in outcomes], float), seed, f"{row}/{o}")
        if all(x.chosen_from_right is not None and x.rejected_from_right is not None for x in rows):
            origins = np.array([[x.chosen_from_right, x.rejected_from_right] for x in rows], float)
            entries |= interval_entries("gap_baseline", origins, seed, f"{row}/gap", statistic=gap_baseline)
            for i, name in enumerate(("chosen_from_accuracy", "rejected_from_accuracy")):
                entries |= interval_entries(name, origins[:, i], seed, f"{row}/{name}", statistic=mean)
        scores[row] = entries | {"n": len(rows), "informative": len(informative)}
    return scores
