"""Uncertainty of every number: seeded percentile-bootstrap 95% intervals of a metric and of a paired change.

A metric is a statistic of per-item values: the mean of 0/1 correctness, NLL pooled per token, a corpus chrF++
from per-sentence match statistics. Its interval resamples the items with replacement `N_BOOT` times and takes
the 2.5th and 97.5th percentiles of the statistic. The generator is seeded by (seed, crc32(key)), the key being
the row (a language, a direction), so an interval is reproducible and independent of the other rows. A change
between two models on the same items resamples the item indices jointly (a paired bootstrap).

Scores name the interval of metric `m` `m_ci_low` / `m_ci_high` (`ci_keys`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray], float]
"""A metric computed from the values of some items (items along axis 0)."""

N_BOOT = 1000
PERCENTILES = (2.5, 97.5)
"""The bounds of the 95% percentile interval."""


def mean(values: np.ndarray) -> float:
    """The mean of the values: the statistic of accuracies and win rates."""
    return float(np.mean(values))


def ci_keys(metric: str) -> tuple[str, str]:
    """The keys of a metric's interval bounds in the scores: `<metric>_ci_low`, `<metric>_ci_high`."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


def resample_indices(n: int, seed: int, key: str, n_boot: int = N_BOOT) -> np.ndarray:
    """(n_boot, n) item indices drawn with replacement, seeded by (seed, crc32(key))."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_distribution(
    values: ArrayLike, seed: int, key: str, *, statistic: Statistic = mean, n_boot: int = N_BOOT
) -> np.ndarray:
    """The statistic of each of `n_boot` resamples of the items (empty without items)."""
    values = np.asarray(values)
    if not len(values):
        return np.empty(0)
    return np.array([statistic(values[i]) for i in resample_indices(len(values), seed, key, n_boot)])


def percentile_interval(boots: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of a bootstrap distribution; NaN bounds when it is empty or all NaN."""
    if not len(boots) or np.isnan(boots).all():
        return math.nan, math.nan
    low, high = np.nanpercentile(boots, PERCENTILES)  # a resample where the statistic is undefined is left out
    return float(low), float(high)


def bootstrap_interval(
    values: ArrayLike, seed: int, key: str, *, statistic: Statistic = mean, n_boot: int = N_BOOT
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of `statistic(values)`, seeded by (seed, key)."""
    return percentile_interval(bootstrap_distribution(values, seed, key, statistic=statistic, n_boot=n_boot))


def paired_interval(
    after: ArrayLike, before: ArrayLike, seed: int, key: str, *, statistic: Statistic = mean, n_boot: int = N_BOOT
) -> tuple[float, float]:
    """The 95% interval of `statistic(after) - statistic(before)` where item i of both is the same item: the
    item indices are resampled jointly."""
    after, before = np.asarray(after), np.asarray(before)
    if after.shape != before.shape:
        raise ValueError(f"paired values differ in shape: {after.shape} vs {before.shape}")

    def change(pairs: np.ndarray) -> float:
        return statistic(pairs[:, 0]) - statistic(pairs[:, 1])

    return bootstrap_interval(np.stack([after, before], axis=1), seed, key, statistic=change, n_boot=n_boot)


def interval_entries(
    metric: str, values: ArrayLike, seed: int, key: str, *, statistic: Statistic = mean, n_boot: int = N_BOOT
) -> dict[str, float]:
    """`{metric: statistic(values), <metric>_ci_low, <metric>_ci_high}`: the entries of one metric of a row of
    scores (all NaN without items); `key` is the row."""
    values = np.asarray(values)
    low_key, high_key = ci_keys(metric)
    low, high = bootstrap_interval(values, seed, key, statistic=statistic, n_boot=n_boot)
    return {metric: statistic(values) if len(values) else math.nan, low_key: low, high_key: high}


@dataclass(frozen=True)
class Sample:
    """One metric on one row: the items' `ids`, their `values` (items along axis 0) and the metric's statistic."""

    ids: tuple[str, ...]
    values: np.ndarray
    statistic: Statistic = mean


RowSamples = dict[str, dict[str, Sample]]
"""row (a language, a direction) → metric → its sample: what a task's per-sample rows hold."""


def summarize(samples: Mapping[str, Mapping[str, Sample]], seed: int) -> dict[str, dict[str, Any]]:
    """Scores of the samples: per row each metric with its interval (`interval_entries`, keyed by the row), and
    `n`, the row's items."""
    scores: dict[str, dict[str, Any]] = {}
    for row, metrics in samples.items():
        entries: dict[str, Any] = {}
        for metric, sample in metrics.items():
            entries |= interval_entries(metric, sample.values, seed, row, statistic=sample.statistic)
        entries["n"] = max((len(sample.ids) for sample in metrics.values()), default=0)
        scores[row] = entries
    return scores


@dataclass(frozen=True)
class Change:
    """`after - before` of a metric on `n` items both models were scored on, with its 95% paired interval."""

    n: int
    delta: float
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0


def _positions(ids: Sequence[str]) -> dict[str, int] | None:
    positions = {id_: i for i, id_ in enumerate(ids)}
    return positions if len(positions) == len(ids) else None


def paired_change(after: Sample, before: Sample, seed: int, key: str, n_boot: int = N_BOOT) -> Change | None:
    """The change of a metric from `before` to `after` on the items both hold (joined on id, in `after`'s order),
    with `paired_interval` (after's statistic); None when they share no item or an id repeats in one."""
    positions_after, positions_before = _positions(after.ids), _positions(before.ids)
    if positions_after is None or positions_before is None:
        return None
    shared = [(i, positions_before[id_]) for id_, i in positions_after.items() if id_ in positions_before]
    if not shared:
        return None
    a = after.values[[i for i, _ in shared]]
    b = before.values[[j for _, j in shared]]
    low, high = paired_interval(a, b, seed, key, statistic=after.statistic, n_boot=n_boot)
    return Change(len(shared), after.statistic(a) - after.statistic(b), low, high)
