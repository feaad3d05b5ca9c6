"""What the two DPO methods (language imbalance, implicit cross-lingual rewarding) share, by composition: the
self-translated prompts stage, the reward's accuracy against gold answers, and DPO + NLL training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyrise.context import RunContext, Stage
from polyrise.evaluation.reward import RewardLabel, label_pairs, pair_row, reward_scores
from polyrise.io import read_jsonl, write_jsonl
from polyrise.methods import PairFiles
from polyrise.records import PreferencePair, Prompt, Translation
from polyrise.self_translation import translate_prompts
from polyrise.settings import ModelSettings
from polyrise.sources import load_prompts
from polyrise.training.settings import DPOSettings, TrainingSettings

if TYPE_CHECKING:  # torch
    from polyrise.models import ResolvedModel

SHOWN = ("train_loss", "rewards/accuracies", "rewards/margins", "train_runtime")
"""The DPO trainer's metrics a DPO method records and shows."""


def pair_files(dropped: str | None = None) -> PairFiles:
    """The report's view of a DPO method's pairs: `pairs.jsonl` (chosen beside rejected, by row `L` or `en/L`),
    labelled right or wrong in `reward.jsonl`, and the dropped candidates where the method keeps them."""
    row = lambda pair: pair_row(pair.lang, pair.via)  # noqa: E731
    return PairFiles("pairs.jsonl", PreferencePair, ("chosen", "rejected"), row, dropped=dropped, labels="reward.jsonl")


class SelfTranslatedPrompts:
    """An iteration's first stage: the English prompts and their self-translations into every target language by
    M(t) (or the fixed translator), in `prompts.jsonl`, every attempt in `prompt_translations.jsonl`."""

    def __init__(self, run: RunContext) -> None:
        self.run = run

    @cached_property
    def source(self) -> list[Prompt]:
        """The source-language prompts (loaded once; a bad source fails in `Method.prepare`)."""
        cfg = self.run.config
        return load_prompts(cfg.prompts, [cfg.source_lang], cfg.source_lang)

    def files(self, t: int) -> dict[str, Path]:
        return {name: self.run.layout.file(t, f"{name}.jsonl") for name in ("prompts", "prompt_translations")}

    def stage(self, t: int) -> Stage:
        run, f = self.run, self.files(t)
        return Stage(
            f"iter_{t}/prompts",
            lambda: self._translate(t),
            outputs=[f["prompts"], f["prompt_translations"]],
            models=run.translator_models(t),
            settings=[
                run.translator_settings(),
                [p.model_dump() for p in self.source],
                run.config.languages,
                run.config.generation.translate.model_dump(),
                *run.config.generation.prompting(),
            ],
        )

    def _translate(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        translator = self.run.translator(self.run.model_spec(t))
        prompts, attempts = translate_prompts(
            translator, self.source, cfg.languages, cfg.generation.translate, cfg.generation.translation_template
        )
        write_jsonl(f["prompt_translations"], attempts)
        write_jsonl(f["prompts"], prompts)
        return {"prompts": len(prompts), "translation_failures": sum(a.output is None for a in attempts)}


def prompt_translation_failures(path: Path) -> Counter[str]:
    """Per language, the prompts whose self-translation failed (a `prompt_translations.jsonl`)."""
    return Counter(a.lang for a in read_jsonl(path, Translation) if a.output is None)


def reward_labels(
    prompts: Sequence[Prompt], pairs: Sequence[PreferencePair], source_lang: str, seed: int
) -> tuple[list[RewardLabel], dict[str, Any]]:
    """Each pair's sides judged against the gold answers of the source-language prompts, and the reward's
    accuracy per row (`evaluation.reward`; empty where no prompt has a gold answer)."""
    golds = {p.id: p.answer for p in prompts if p.lang == source_lang and p.answer is not None}
    labels = label_pairs(pairs, golds)
    return labels, reward_scores(labels, seed)


def trained_labels(path: Path, settings: TrainingSettings) -> list[RewardLabel]:
    """The reward labels of what training sees: the pairs' own, swapped under `swap_preferences` (the control)."""
    labels = read_jsonl(path, RewardLabel)
    if not (isinstance(settings, DPOSettings) and settings.swap_preferences):
        return labels
    return [x.model_copy(update={"chosen_right": x.rejected_right, "rejected_right": x.chosen_right}) for x in labels]


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
