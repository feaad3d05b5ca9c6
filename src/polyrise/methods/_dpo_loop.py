"""What the two DPO methods (language imbalance, implicit cross-lingual rewarding) share, by composition: the
prompts stage (given or self-translated, checked), the reward's accuracy against gold answers, DPO + NLL training."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyrise.context import RunContext, Stage
from polyrise.errors import PolyriseError
from polyrise.evaluation.reward import RewardLabel, label_pairs, pair_row, reward_scores
from polyrise.generation import ChatRequest, Generator
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.methods import PairFiles
from polyrise.records import DroppedPrompt, PreferencePair, Prompt, Response, Translation
from polyrise.self_translation import PROMPT_DROP_REASONS, translate_prompts
from polyrise.settings import ModelSettings, SamplingSettings
from polyrise.sources import load_prompts, source_files
from polyrise.training.settings import DPOSettings, TrainingSettings

if TYPE_CHECKING:  # torch
    from polyrise.models import ResolvedModel

SHOWN = ("train_loss", "rewards/accuracies", "rewards/margins", "train_runtime")
"""The DPO trainer's metrics a DPO method records and shows."""


def pair_files(dropped: str | None = None) -> PairFiles:
    """The report's view of a DPO method's pairs: `pairs.jsonl` (chosen beside rejected, by row `L` or `en/L`),
    labelled right or wrong in `reward.jsonl`, the dropped candidates where the method keeps them, and the
    self-translated prompts the checks dropped (`prompts_dropped.jsonl`)."""
    row = lambda pair: pair_row(pair.lang, pair.via)  # noqa: E731
    return PairFiles(
        "pairs.jsonl",
        PreferencePair,
        ("chosen", "rejected"),
        row,
        dropped=dropped,
        labels="reward.jsonl",
        dropped_prompts="prompts_dropped.jsonl",
    )


class SelfTranslatedPrompts:
    """An iteration's first stage: its source-language prompts (all of them, or its `prompts.per_iteration` slice)
    in every target language, in `prompts.jsonl`: a `{lang}` source's own translations where it has them, the rest
    self-translated by M(t) (or the fixed translator) and checked (`prompts.checks`). Every translation attempt is
    in `prompt_translations.jsonl`, the dropped ones with their reason in `prompts_dropped.jsonl`, and per language
    how many prompts were given, self-translated and dropped in `prompts_stats.json`."""

    def __init__(self, run: RunContext) -> None:
        self.run = run

    @cached_property
    def source(self) -> list[Prompt]:
        """The source-language prompts (loaded once; a bad source fails in `Method.prepare`)."""
        cfg = self.run.config
        prompts = load_prompts(cfg.prompts, [cfg.source_lang], cfg.source_lang)
        n = cfg.prompts.per_iteration
        if n is not None and len(prompts) < n * cfg.iterations:
            raise PolyriseError(
                f"prompts.per_iteration: {cfg.iterations} iterations of {n} prompts need {n * cfg.iterations} "
                f"source prompts; {cfg.prompts.source!r} has {len(prompts)}"
            )
        return prompts

    @cached_property
    def given(self) -> dict[tuple[str, str], Prompt]:
        """The target-language rows of a `{lang}` source, from the files that exist (id, lang) → prompt."""
        cfg = self.run.config
        spec = cfg.prompts.source
        langs = [lang for lang in cfg.languages if "{lang}" in spec and source_files(spec, [lang])]
        if not langs:
            return {}
        rows = load_prompts(cfg.prompts.model_copy(update={"limit": None}), langs, cfg.source_lang)
        return {(p.id, p.lang): p for p in rows}

    def prompts(self, t: int) -> list[Prompt]:
        """Iteration t's source prompts: all, or rows [t*N, (t+1)*N) under `prompts.per_iteration`."""
        n = self.run.config.prompts.per_iteration
        return self.source if n is None else self.source[t * n : (t + 1) * n]

    def _given(self, t: int) -> list[Prompt]:
        langs = self.run.config.languages
        return [self.given[p.id, lang] for lang in langs for p in self.prompts(t) if (p.id, lang) in self.given]

    def files(self, t: int) -> dict[str, Path]:
        names = ("prompts", "prompt_translations", "prompts_dropped")
        files = {name: self.run.layout.file(t, f"{name}.jsonl") for name in names}
        return files | {"prompts_stats": self.run.layout.file(t, "prompts_stats.json")}

    def stage(self, t: int) -> Stage:
        run, f, cfg = self.run, self.files(t), self.run.config
        return Stage(
            f"iter_{t}/prompts",
            lambda: self._translate(t),
            outputs=[f["prompts"], f["prompt_translations"], f["prompts_dropped"], f["prompts_stats"]],
            models=run.translator_models(t),
            settings=[
                run.translator_settings(),
                [p.model_dump() for p in [*self.prompts(t), *self._given(t)]],
                cfg.languages,
                cfg.generation.translate.model_dump(),
                cfg.prompts.checks.model_dump(),
                cfg.langid.model_dump(),
                *cfg.generation.prompting(),
            ],
        )

    def _translate(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        translator = self.run.translator(self.run.model_spec(t))
        given = self._given(t)
        prompts, attempts, dropped = translate_prompts(
            translator,
            self.prompts(t),
            cfg.languages,
            cfg.generation.translate,
            cfg.generation.translation_template,
            given=given,
            checks=cfg.prompts.checks,
            langid=cfg.langid,
        )
        write_jsonl(f["prompt_translations"], attempts)
        write_jsonl(f["prompts_dropped"], dropped)
        write_json(f["prompts_stats"], prompt_stats(given, attempts, dropped, cfg.languages))
        write_jsonl(f["prompts"], prompts)
        return {"prompts": len(prompts), "given": len(given), "dropped": len(dropped)}


def prompt_stats(
    given: Sequence[Prompt], attempts: Sequence[Translation], dropped: Sequence[DroppedPrompt], languages: list[str]
) -> dict[str, dict[str, Any]]:
    """Per language: the prompts given by the source, self-translated and kept, and dropped by reason."""
    stats: dict[str, dict[str, Any]] = {}
    for lang in languages:
        reasons = Counter(d.reason for d in dropped if d.lang == lang)
        tried = sum(a.lang == lang for a in attempts)
        stats[lang] = {
            "given": sum(p.lang == lang for p in given),
            "self_translated": tried - sum(reasons.values()),
            "dropped": {reason: reasons[reason] for reason in PROMPT_DROP_REASONS},
        }
    return stats


_SHORT_PROMPT_REASONS = {
    "translation_failure": "transl",
    "protocol_tags": "tags",
    "degenerate_repetition": "repeat",
    "copy_of_source": "copy",
    "wrong_language": "lang",
    "length_ratio": "ratio",
}
PROMPTS_CAPTION = "prompts dropped: " + ", ".join(f"{s} = {r}" for r, s in _SHORT_PROMPT_REASONS.items())
"""The summary tables' key to `prompt_cells`."""


def prompt_cells(stats: dict[str, Any]) -> tuple[str, str]:
    """A language's prompts in a summary table: `given/self-translated`, and those dropped by (short) reason."""
    counts = stats.get("prompts")
    if counts is None:
        return "-", "-"
    dropped = ", ".join(f"{_SHORT_PROMPT_REASONS[r]} {n}" for r, n in counts["dropped"].items() if n)
    return f"{counts['given']}/{counts['self_translated']}", dropped or "-"


def add_prompt_stats(stats: dict[str, dict[str, Any]], path: Path | None) -> None:
    """Each language's prompt counts (`prompts_stats.json` of the prompts stage, when there is one) into the
    pairs stats: `prompts`, and `prompt_translation_failures` (the self-translations that failed)."""
    counts = json.loads(path.read_text()) if path is not None else {}
    for lang, s in stats.items():
        if lang in counts:
            s["prompts"] = counts[lang]
        s["prompt_translation_failures"] = counts.get(lang, {}).get("dropped", {}).get("translation_failure", 0)


def reward_labels(
    prompts: Sequence[Prompt],
    pairs: Sequence[PreferencePair],
    source_lang: str,
    seed: int,
    responses: Sequence[Response] | None = None,
) -> tuple[list[RewardLabel], dict[str, Any]]:
    """Each pair's sides judged against the gold answers of the source-language prompts, and the reward's
    accuracy per row (`evaluation.reward`; empty where no prompt has a gold answer). With `responses` (LIDR: chosen
    made from y_en, rejected from y_L), the answers the sides came from too: the language gap's baseline."""
    golds = {p.id: p.answer for p in prompts if p.lang == source_lang and p.answer is not None}
    answers = {(r.id, r.lang): r.output for r in responses} if responses is not None else None
    labels = label_pairs(pairs, golds, answers, source_lang)
    return labels, reward_scores(labels, seed)


def trained_reward(path: Path, t: int, settings: TrainingSettings, seed: int) -> dict[str, Any]:
    """The DPO methods' `scores(t)` of their reward: the accuracy of the pairs iteration `t` trains on (the labels
    in `path`, swapped under `swap_preferences`: the control), against the prompts' gold answers; nothing where no
    pair could be labelled."""
    labels = read_jsonl(path, RewardLabel)
    if isinstance(settings, DPOSettings) and settings.swap_preferences:
        labels = [
            x.model_copy(
                update={
                    "chosen_right": x.rejected_right,
                    "rejected_right": x.chosen_right,
                    "chosen_from_right": x.rejected_from_right,
                    "rejected_from_right": x.chosen_from_right,
                }
            )
            for x in labels
        ]
    return {"reward": {f"M{t}": reward_scores(labels, seed)}} if labels else {}


def sample_answers(
    generator: Generator, prompts: Sequence[Prompt], sampling: SamplingSettings, k: int
) -> list[list[str]]:
    """`k` answers to each prompt (stripped), from k batched request sets: sample j seeded `seed + j`, so the
    samples differ and each is cached under its own seed. The sample stages of ICR and wrong-language DPO."""
    requests = [ChatRequest.user(p.instruction) for p in prompts]
    draws = [
        generator.generate(
            requests, sampling.model_copy(update={"seed": sampling.seed + j}), desc=f"sampling {j + 1}/{k}"
        )
        for j in range(k)
    ]
    return [[draw[i].strip() for draw in draws] for i in range(len(prompts))]


def train_dpo_nll(
    model: ResolvedModel,
    rows: list[Any],
    out: Path,
    settings: TrainingSettings,
    model_settings: ModelSettings,
    *,
    seed: int,
    cache: Path | None,
    report: dict[str, Any],
) -> dict[str, float]:
    """`Method.train` of the DPO methods: DPO + NLL against `model` itself; the reference log-probs persist in
    `cache` (a rerun with another beta reuses them)."""
    from polyrise.training.dpo import train_dpo  # torch and TRL: loaded by the stage that trains

    assert isinstance(settings, DPOSettings)
    return train_dpo(
        model,
        rows,
        out,
        settings,
        seed=seed,
        dtype=model_settings.dtype,
        chat_template=model_settings.chat_template,
        trust_remote_code=model_settings.trust_remote_code,
        report=report,
        reference_cache=cache,
    )
