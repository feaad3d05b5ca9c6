"""Off-target rate (the paper's "Off-tag"): the share of answers not in the prompt's language."""

from __future__ import annotations

from collections.abc import Iterable

from polyrise.evaluation.base import Metric
from polyrise.langid import matches_language
from polyrise.records import Response

METRICS = (Metric("off_target", lower_is_better=True),)
"""Also the metric of the held-out answers' measurement of a run (`heldout` in its scores)."""


def off_target_rates(responses: Iterable[Response], min_chars: int = 20) -> dict[str, dict[str, float | int]]:
    """Per language: `off_target` rate over identifiable answers, `n` judged, `skipped` (too short to tell)."""
    counts: dict[str, dict[str, int]] = {}
    for r in responses:
        c = counts.setdefault(r.lang, {"off": 0, "n": 0, "skipped": 0})
        verdict = matches_language(r.output, r.lang, min_chars)
        if verdict is None:
            c["skipped"] += 1
        else:
            c["n"] += 1
            c["off"] += not verdict
    return {
        lang: {
            "off_target": c["off"] / c["n"] if c["n"] else float("nan"),
            "n": c["n"],
            "skipped": c["skipped"],
        }
        for lang, c in counts.items()
    }
