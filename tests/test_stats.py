"""Bootstrap intervals: against a direct computation, seeding, paired changes, and the entries tasks write."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from polyrise.stats import (
    Sample,
    bootstrap_interval,
    ci_keys,
    interval_entries,
    paired_change,
    paired_interval,
    summarize,
)

VALUES = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])


def test_interval_is_the_percentiles_of_means_of_explicit_resamples():
    rng = np.random.default_rng([7, zlib.crc32(b"de")])
    means = []
    for _ in range(1000):
        idx = rng.integers(0, len(VALUES), size=len(VALUES))
        means.append(sum(VALUES[i] for i in idx) / len(idx))
    low, high = np.percentile(means, [2.5, 97.5])
    assert bootstrap_interval(VALUES, 7, "de") == pytest.approx((low, high))
    assert low < VALUES.mean() < high


def test_a_custom_statistic_is_computed_on_each_resample():
    pairs = np.array([[6.0, 3], [1.0, 1], [4.0, 4], [9.0, 2], [2.0, 5]])

    def pooled(v: np.ndarray) -> float:
        return float(v[:, 0].sum() / v[:, 1].sum())

    rng = np.random.default_rng([0, zlib.crc32(b"row")])
    direct = [pooled(pairs[rng.integers(0, 5, size=5)]) for _ in range(200)]
    assert bootstrap_interval(pairs, 0, "row", statistic=pooled, n_boot=200) == pytest.approx(
        tuple(np.percentile(direct, [2.5, 97.5]))
    )


def test_seeded_reproducible_and_keyed():
    values = np.random.default_rng(0).normal(size=30)
    a = bootstrap_interval(values, 3, "de")
    assert bootstrap_interval(values, 3, "de") == a
    assert bootstrap_interval(values, 4, "de") != a
    assert bootstrap_interval(values, 3, "fr") != a  # each row has its own stream


def test_constant_and_empty_samples():
    assert bootstrap_interval([0.25] * 9, 0, "x") == (0.25, 0.25)
    low, high = bootstrap_interval([], 0, "x")
    assert math.isnan(low) and math.isnan(high)
    entries = interval_entries("accuracy", [], 0, "x")
    assert set(entries) == {"accuracy", *ci_keys("accuracy")} and all(math.isnan(v) for v in entries.values())


def test_interval_entries_and_summarize():
    entries = interval_entries("accuracy", VALUES, 1, "en")
    low_key, high_key = ci_keys("accuracy")
    assert (low_key, high_key) == ("accuracy_ci_low", "accuracy_ci_high")
    assert entries == {"accuracy": VALUES.mean(), low_key: entries[low_key], high_key: entries[high_key]}
    assert (entries[low_key], entries[high_key]) == bootstrap_interval(VALUES, 1, "en")
    ids = tuple(map(str, range(len(VALUES))))
    scores = summarize({"en": {"accuracy": Sample(ids, VALUES)}}, seed=1)
    assert scores == {"en": {**entries, "n": len(VALUES)}}  # keyed by the row


def test_paired_interval_of_identical_models_is_zero():
    assert paired_interval(VALUES, VALUES, 0, "en") == (0.0, 0.0)


def test_paired_interval_resamples_items_jointly():
    rng = np.random.default_rng(0)
    before = rng.normal(size=40)
    after = before + 0.1 + rng.normal(scale=0.01, size=40)  # a small shift, the same on every item
    low, high = paired_interval(after, before, 0, "en")
    assert 0.09 < low < high < 0.11  # paired: the items' own spread cancels
    unpaired = bootstrap_interval(after, 0, "en")
    assert unpaired[1] - unpaired[0] > 10 * (high - low)
    rng = np.random.default_rng([0, zlib.crc32(b"en")])
    direct = [after[i].mean() - before[i].mean() for i in (rng.integers(0, 40, size=40) for _ in range(1000))]
    assert (low, high) == pytest.approx(tuple(np.percentile(direct, [2.5, 97.5])))
    with pytest.raises(ValueError, match="differ in shape"):
        paired_interval(after[:3], before, 0, "en")


def test_paired_change_joins_on_ids_and_marks_what_excludes_zero():
    right = Sample(("a", "b", "c", "d", "e", "f", "g", "h"), np.ones(8))
    wrong = Sample(("h", "g", "f", "e", "d", "c", "b", "a", "z"), np.zeros(9))  # another order, one more item
    change = paired_change(right, wrong, 0, "en")
    assert change is not None
    assert (change.n, change.delta, change.low, change.high) == (8, 1.0, 1.0, 1.0)
    assert change.distinguishable
    same = paired_change(right, right, 0, "en")
    assert same is not None and (same.delta, same.low, same.high) == (0.0, 0.0, 0.0) and not same.distinguishable
    mixed = Sample(right.ids, np.array([1.0, 0.0] * 4))
    half = paired_change(mixed, Sample(right.ids, np.array([0.0, 1.0] * 4)), 0, "en")
    assert half is not None and half.delta == 0.0 and half.low < 0 < half.high and not half.distinguishable
    assert paired_change(right, Sample(("x",), np.zeros(1)), 0, "en") is None  # no item in common
    assert paired_change(right, Sample(("a", "a"), np.zeros(2)), 0, "en") is None  # ids must be unique
