"""Reward accuracy: pairs labelled against gold answers, outcome shares and the interval, on a hand-checked fixture."""

from __future__ import annotations

import numpy as np
import pytest

from polyrise.evaluation.reward import RewardLabel, label_pairs, reward_scores
from polyrise.records import PreferencePair
from polyrise.stats import bootstrap_interval


def _pair(pid: str, lang: str, via: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(id=pid, lang=lang, via=via, prompt="q", chosen=chosen, rejected=rejected)


def test_pairs_are_labelled_by_the_mgsm_extractor():
    golds = {"1": "7", "2": "12"}
    pairs = [
        _pair("1", "es", "es", "3 + 4 = 7. Tom tiene 7 manzanas.", "3 + 4 = 8. Tom tiene 8 manzanas."),
        _pair("1", "en", "es", "3 + 4 = 7. Tom has 7 apples.", "Tom has 7 apples."),
        _pair("2", "de", "de", "Die Antwort ist 11.", "Die Antwort ist 12."),
        _pair("2", "en", "de", "I do not know.", "It is 13."),
        _pair("3", "es", "es", "5", "6"),  # no gold: not labelled
    ]
    labels = label_pairs(pairs, golds)
    assert [(x.row, x.outcome) for x in labels] == [
        ("es", "right_wrong"),
        ("en/es", "both_right"),
        ("de", "wrong_right"),
        ("en/de", "both_wrong"),
    ]


def test_reward_scores_shares_and_interval():
    labels = [RewardLabel(id=str(i), lang="es", via="es", chosen_right=True, rejected_right=False) for i in range(6)]
    labels += [RewardLabel(id="6", lang="es", via="es", chosen_right=False, rejected_right=True)]
    labels += [RewardLabel(id=str(i), lang="es", via="es", chosen_right=True, rejected_right=True) for i in (7, 8, 9)]
    es = reward_scores(labels, seed=1)["es"]
    assert (es["n"], es["informative"]) == (10, 7)
    assert es["reward_accuracy"] == pytest.approx(6 / 7)
    assert (es["right_wrong"], es["both_right"], es["both_wrong"], es["wrong_right"]) == (0.6, 0.3, 0.0, 0.1)
    low, high = bootstrap_interval(np.array([1.0] * 6 + [0.0]), 1, "es")
    assert (es["reward_accuracy_ci_low"], es["reward_accuracy_ci_high"]) == (low, high) and low < 6 / 7 <= high
