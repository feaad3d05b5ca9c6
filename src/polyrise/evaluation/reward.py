"""The reward itself, measured: how often a preference pair prefers the right answer.

Language Imbalance Driven Rewarding assumes T_L(y_en) is better than y_L (and y_en better than T_en(y_L)). When
the prompts carry a gold answer (GSM-style problems: an `answer` field; the sandbox's training prompts), each pair's
chosen and rejected answers are labelled right or wrong by the MGSM extractor, and per row (the pairs in a target
language `L`, and the English pairs built from it, `en/L`) the shares of pairs where chosen is right and rejected
wrong (`right_wrong`), both right, both wrong, and the inverse (`wrong_right`) are counted. `reward_accuracy` is
the share of the informative pairs (exactly one side right) where the right one is chosen: 1 is a perfect reward,
0.5 an uninformative one, below 0.5 a reward that teaches the wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from polyrise.evaluation.base import Metric, TaskView
from polyrise.evaluation.math import extract_answer, is_correct
from polyrise.records import PreferencePair, Record
from polyrise.stats import interval_entries

METRICS = (
    Metric("reward_accuracy"),
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

    @property
    def row(self) -> str:
        return pair_row(self.lang, self.via)

    @property
    def outcome(self) -> str:
        """`right_wrong`, `both_right`, `both_wrong` or `wrong_right` (chosen first)."""
        if self.chosen_right == self.rejected_right:
            return "both_right" if self.chosen_right else "both_wrong"
        return "right_wrong" if self.chosen_right else "wrong_right"


def label_pairs(pairs: Iterable[PreferencePair], golds: Mapping[str, str]) -> list[RewardLabel]:
    """Label every pair whose prompt id has a gold answer; the number is extracted from each answer in its language."""
    return [
        RewardLabel(
            id=p.id,
            lang=p.lang,
            via=p.via,
            chosen_right=is_correct(extract_answer(p.chosen, p.lang), golds[p.id]),
            rejected_right=is_correct(extract_answer(p.rejected, p.lang), golds[p.id]),
        )
        for p in pairs
        if p.id in golds
    ]


def reward_scores(labels: Iterable[RewardLabel], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per row: the four outcome shares, `reward_accuracy` with its 95% bootstrap interval, `n` labelled pairs and
    `informative` (exactly one side right)."""
    by_row: dict[str, list[RewardLabel]] = {}
    for label in labels:
        by_row.setdefault(label.row, []).append(label)
    scores: dict[str, dict[str, Any]] = {}
    for row, rows in by_row.items():
        outcomes = [label.outcome for label in rows]
        informative = np.array([o == "right_wrong" for o in outcomes if o in ("right_wrong", "wrong_right")], float)
        entries = interval_entries("reward_accuracy", informative, seed, row)
        entries |= {o: outcomes.count(o) / len(outcomes) for o in OUTCOMES}
        scores[row] = entries | {"n": len(rows), "informative": len(informative)}
    return scores
