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


def test_pairs_know_the_answers_their_sides_were_made_from():
    golds = {"1": "7"}
    answers = {("1", "en"): "Tom has 7 apples.", ("1", "es"): "Tom tiene 8 manzanas."}
    pairs = [
        _pair("1", "es", "es", "Tom tiene 7 manzanas.", "Tom tiene 8 manzanas."),
        _pair("1", "en", "es", "Tom has 7 apples.", "Tom has 8 apples."),
    ]
    labels = label_pairs(pairs, golds, answers, "en")
    assert [(x.chosen_from_right, x.rejected_from_right) for x in labels] == [(True, False), (True, False)]
    assert [(x.chosen_from_right, x.rejected_from_right) for x in label_pairs(pairs, golds)] == [(None, None)] * 2


def test_gap_baseline_is_what_independent_errors_predict():
    # M(t) right in English on 8 of 10 prompts, in Spanish on 4: p_c = 0.8, p_r = 0.4
    english = [True] * 8 + [False] * 2
    spanish = [True, True, True, False, False, False, False, True, False, False]
    labels = [
        RewardLabel(
            id=str(i),
            lang="es",
            via="es",
            chosen_right=en,
            rejected_right=es,
            chosen_from_right=en,
            rejected_from_right=es,
        )
        for i, (en, es) in enumerate(zip(english, spanish, strict=True))
    ]
    es = reward_scores(labels, seed=3)["es"]
    assert (es["chosen_from_accuracy"], es["rejected_from_accuracy"]) == pytest.approx((0.8, 0.4))
    assert es["gap_baseline"] == pytest.approx(0.8 * 0.6 / (0.8 * 0.6 + 0.2 * 0.4))
    assert es["gap_baseline_ci_low"] <= es["gap_baseline"] <= es["gap_baseline_ci_high"]
    # both-right and both-wrong shares come with intervals over the n labelled pairs
    assert (es["n"], es["both_right"], es["both_wrong"]) == (10, pytest.approx(0.4), pytest.approx(0.2))
    assert es["both_wrong_ci_low"] <= 0.2 <= es["both_wrong_ci_high"]
    # the measured accuracy here (4 of 4 informative pairs right) beats the gap's 0.857
    assert es["reward_accuracy"] == 1.0
    # without the source answers there is no baseline
    plain = [x.model_copy(update={"chosen_from_right": None}) for x in labels]
    assert "gap_baseline" not in reward_scores(plain, seed=3)["es"]
