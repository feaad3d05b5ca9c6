"""Language Imbalance Driven Rewarding: build preference pairs from answers and their self-translations.

For prompt id and target language L, with y_en the English answer, y_L the native answer:
  language L: prompt_L,  chosen = T_L(y_en), rejected = y_L
  English:    prompt_en, chosen = y_en,      rejected = T_en(y_L)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from polyrise.config import FilterSettings
from polyrise.langid import matches_language
from polyrise.records import PreferencePair, Response, Translation

DROP_REASONS = (
    "translation_failure",
    "empty",
    "identical",
    "degenerate_repetition",
    "wrong_language",
    "length_ratio",
)
"""Filters in the order they are applied; a pair is counted under the first that drops it."""


def is_degenerate(text: str, limit: int) -> bool:
    """True when one non-empty line occurs at least `limit` times."""
    lines = Counter(line.strip() for line in text.splitlines() if line.strip())
    return bool(lines) and lines.most_common(1)[0][1] >= limit


def drop_reason(pair: PreferencePair, filters: FilterSettings) -> str | None:
    """The first filter that rejects a complete pair, or None to keep it.

    Only the chosen side is checked for repetition and language: a degenerate or off-target
    rejected answer is exactly what DPO should push down.
    """
    chosen, rejected = pair.chosen.strip(), pair.rejected.strip()
    if not chosen or not rejected:
        return "empty"
    if chosen == rejected:
        return "identical"
    if is_degenerate(chosen, filters.repeated_line_limit):
        return "degenerate_repetition"
    if matches_language(chosen, pair.lang, filters.langid_min_chars) is False:
        return "wrong_language"
    ratio = len(chosen) / len(rejected)
    if not filters.min_length_ratio <= ratio <= filters.max_length_ratio:
        return "length_ratio"
    return None


def _empty_counts() -> dict[str, Any]:
    return {"candidates": 0, "kept": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}


def build_pairs(
    prompts: dict[tuple[str, str], str],
    responses: Iterable[Response],
    translations: Iterable[Translation],
    source_lang: str,
    languages: list[str],
    filters: FilterSettings,
) -> tuple[list[PreferencePair], dict[str, dict[str, Any]]]:
    """Pairs in both directions for every prompt id and target language, plus per-language stats.

    `prompts` maps (id, lang) → instruction. Stats: {L: {"target": counts, "english": counts}} where
    "target" counts pairs in L and "english" counts English pairs built from L's answers.
    """
    answers = {(r.id, r.lang): r.output for r in responses}
    translated = {(t.id, t.src_lang, t.lang): t.output for t in translations if t.kind == "response"}
    stats = {lang: {"target": _empty_counts(), "english": _empty_counts()} for lang in languages}
    pairs: list[PreferencePair] = []
    ids = sorted({pid for pid, lang in answers if lang == source_lang})
    for lang in languages:
        for pid in ids:
            if (pid, lang) not in answers:
                continue  # the prompt's translation into `lang` failed: counted in the prompt stage
            y_en, y_l = answers[(pid, source_lang)], answers[(pid, lang)]
            candidates = [
                ("target", lang, translated.get((pid, source_lang, lang)), y_l),
                ("english", source_lang, y_en, translated.get((pid, lang, source_lang))),
            ]
            for direction, pair_lang, chosen, rejected in candidates:
                counts = stats[lang][direction]
                counts["candidates"] += 1
                if chosen is None or rejected is None:
                    counts["dropped"]["translation_failure"] += 1
                    continue
                pair = PreferencePair(
                    id=pid,
                    lang=pair_lang,
                    via=lang,
                    prompt=prompts[(pid, pair_lang)],
                    chosen=chosen,
                    rejected=rejected,
                )
                reason = drop_reason(pair, filters)
                if reason:
                    counts["dropped"][reason] += 1
                else:
                    counts["kept"] += 1
                    pairs.append(pair)
    return pairs, stats
