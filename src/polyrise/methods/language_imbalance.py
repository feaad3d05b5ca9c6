"""Language Imbalance Driven Rewarding (Yang et al., arXiv 2410.08964): preference pairs from the model's answers
and their self-translations, trained with DPO + NLL against the previous iterate.

For prompt id and target language L, with y_en the English answer, y_L the native answer:
  language L: prompt_L,  chosen = T_L(y_en), rejected = y_L
  English:    prompt_en, chosen = y_en,      rejected = T_en(y_L)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from polyrise.config import DPOSettings, FilterSettings, RunConfig
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.langid import matches_language
from polyrise.records import PreferencePair, Prompt, Response, Translation

if TYPE_CHECKING:
    from polyrise.runner import Runner, Stage

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


class LanguageImbalance:
    """Per iteration: self-translated prompts → answers in every language → cross-translated answers → pairs →
    DPO + NLL from M(t) (its own reference) to M(t+1)."""

    name = "language-imbalance"
    settings = DPOSettings

    def __init__(self, run: Runner) -> None:
        self.run = run

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.alignment is not None:
            raise ValueError(
                "an `alignment` section is only used by method 'question-alignment' "
                "(set method: question-alignment, or run `polyrise align`)"
            )

    def prepare(self) -> None:
        self.source_prompts  # noqa: B018

    @cached_property
    def source_prompts(self) -> list[Prompt]:
        from polyrise.sources import load_prompts

        cfg = self.run.config
        return load_prompts(cfg.prompts, [cfg.source_lang], cfg.source_lang)

    def files(self, t: int) -> dict[str, Path]:
        root = self.run.iter_dir(t)
        names = ("prompts", "prompt_translations", "responses", "translations", "pairs")
        return {name: root / f"{name}.jsonl" for name in names} | {"pairs_stats": root / "pairs_stats.json"}

    def stages(self, t: int) -> list[Stage]:
        from polyrise.runner import Stage

        run = self.run
        cfg, gen, f = run.config, run.config.generation, self.files(t)
        return [
            Stage(
                f"iter_{t}/prompts",
                lambda: self._prompts(t),
                outputs=[f["prompts"], f["prompt_translations"]],
                models=run.translator_models(t),
                settings=[
                    run.translator_settings(),
                    [p.model_dump() for p in self.source_prompts],
                    cfg.languages,
                    gen.translate.model_dump(),
                ],
            ),
            Stage(
                f"iter_{t}/generate",
                lambda: self._generate(t),
                outputs=[f["responses"]],
                inputs=[f["prompts"]],
                models=[run.model_spec(t)],
                settings=[cfg.model.model_dump(), gen.answer.model_dump()],
            ),
            Stage(
                f"iter_{t}/translate",
                lambda: self._translate(t),
                outputs=[f["translations"]],
                inputs=[f["responses"]],
                models=run.translator_models(t),
                settings=[run.translator_settings(), gen.translate.model_dump()],
            ),
            Stage(
                f"iter_{t}/pairs",
                lambda: self._pairs(t),
                outputs=[f["pairs"], f["pairs_stats"]],
                inputs=[f["prompts"], f["prompt_translations"], f["responses"], f["translations"]],
                settings=[cfg.source_lang, cfg.languages, cfg.filters.model_dump()],
                loads_model=False,
            ),
            run.train_stage(t, f["pairs"], lambda: self._train(t)),
        ]

    def _prompts(self, t: int) -> dict[str, Any]:
        from polyrise.self_translation import translate_prompts

        cfg, f = self.run.config, self.files(t)
        translator = self.run.translator(self.run.model_spec(t))
        prompts, attempts = translate_prompts(translator, self.source_prompts, cfg.languages, cfg.generation.translate)
        write_jsonl(f["prompt_translations"], attempts)
        write_jsonl(f["prompts"], prompts)
        return {"prompts": len(prompts), "translation_failures": sum(a.output is None for a in attempts)}

    def _generate(self, t: int) -> dict[str, Any]:
        from polyrise.generation import answer_prompts

        f = self.files(t)
        prompts = read_jsonl(f["prompts"], Prompt)
        generator = self.run.generator(self.run.model_spec(t))
        cached = generator.stats["cached"]
        n = write_jsonl(f["responses"], answer_prompts(generator, prompts, self.run.config.generation.answer))
        return {"responses": n, "from_cache": generator.stats["cached"] - cached}

    def _translate(self, t: int) -> dict[str, Any]:
        from polyrise.self_translation import cross_translate

        cfg, f = self.run.config, self.files(t)
        responses = read_jsonl(f["responses"], Response)
        translator = self.run.translator(self.run.model_spec(t))
        translations = cross_translate(translator, responses, cfg.source_lang, cfg.languages, cfg.generation.translate)
        write_jsonl(f["translations"], translations)
        return {"translations": len(translations), "failures": sum(x.output is None for x in translations)}

    def _pairs(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        prompts = {(p.id, p.lang): p.instruction for p in read_jsonl(f["prompts"], Prompt)}
        pairs, stats = build_pairs(
            prompts,
            read_jsonl(f["responses"], Response),
            read_jsonl(f["translations"], Translation),
            cfg.source_lang,
            cfg.languages,
            cfg.filters,
        )
        attempts = read_jsonl(f["prompt_translations"], Translation)
        for lang in cfg.languages:
            stats[lang]["prompt_translation_failures"] = sum(a.output is None and a.lang == lang for a in attempts)
        write_json(f["pairs_stats"], stats)
        write_jsonl(f["pairs"], pairs)
        return {"pairs": len(pairs)}

    def _train(self, t: int) -> dict[str, Any]:
        from polyrise.training.dpo import train_dpo

        return self.run.train(t, train_dpo, read_jsonl(self.files(t)["pairs"], PreferencePair))

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["pairs_stats"].read_text())

    def summary_table(self, summary: dict[str, Any]) -> Table:
        return summary_table(summary, [self.run.config.source_lang, *self.run.config.languages])


METHOD = LanguageImbalance

_SHORT_REASONS = {
    "translation_failure": "transl",
    "empty": "empty",
    "identical": "same",
    "degenerate_repetition": "repeat",
    "wrong_language": "lang",
    "length_ratio": "ratio",
}


def _dropped(counts: dict[str, Any]) -> str:
    return ", ".join(f"{_SHORT_REASONS[r]} {n}" for r, n in counts["dropped"].items() if n) or "-"


def summary_table(summary: dict[str, Any], langs: list[str]) -> Table:
    """Per language: pairs kept/dropped by reason, translation failures, off-target rate before → after."""
    t = summary["iteration"]
    table = Table(
        title=f"iteration {t}: M{t} → M{t + 1}",
        caption="dropped: " + ", ".join(f"{short} = {reason}" for reason, short in _SHORT_REASONS.items()),
    )
    for col in (
        "lang",
        "kept L/en",
        "dropped (pair in L)",
        "dropped (pair in en)",
        "transl. fail",
        f"off-target M{t}→M{t + 1}",
    ):
        table.add_column(col)
    for lang in langs:
        s = summary["stats"].get(lang)
        cells = ["-"] * 4
        if s:
            failures = (
                s["prompt_translation_failures"]
                + s["target"]["dropped"]["translation_failure"]
                + s["english"]["dropped"]["translation_failure"]
            )
            cells = [
                f"{s['target']['kept']}/{s['english']['kept']}",
                _dropped(s["target"]),
                _dropped(s["english"]),
                str(failures),
            ]
        off = summary["off_target"]
        before, after = off.get(f"M{t}", {}).get(lang), off.get(f"M{t + 1}", {}).get(lang)
        rate = "-"
        if before and after and before["n"] and after["n"]:
            rate = f"{before['off_target']:.0%} → {after['off_target']:.0%} (n={after['n']})"
        table.add_row(lang, *cells, rate)
    return table
