"""Question alignment (Zhang et al. 2024, "Getting More from Less"): LoRA SFT on question in L → the same question in
English, trained once and evaluated on trained and unseen languages.

No answers are involved: the model only learns to map a question in a training language onto its translation.
The questions come from aligned prompt files (rows of different languages joined on `id`) or from the model's
own translations of English questions; every row that cannot be joined is dropped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, field_validator
from rich.table import Table

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.io import write_json, write_jsonl
from polyrise.languages import get_language
from polyrise.methods import MethodViews, PairFiles
from polyrise.records import Prompt, QuestionPair
from polyrise.self_translation import translate_prompts
from polyrise.settings import ModelSettings, PromptSource, Section
from polyrise.sources import load_prompts, source_files
from polyrise.training.settings import SFTSettings, TrainingSettings

if TYPE_CHECKING:  # torch
    from polyrise.models import ResolvedModel


DROP_REASONS = ("missing_question", "missing_translation", "translation_failure", "identical")
"""Why a (question, translation) row is not a training example, in the order they are checked."""


class AlignmentSettings(Section):
    """Question alignment (Zhang et al. 2024): LoRA SFT on question translation pairs, no answers."""

    train: list[str]
    """Training directions: `zh` is a question in zh → the same question in the run's `source_lang`;
    `en-zh` names both ends. Languages of the run not named here are the unseen ones."""
    questions: PromptSource = Field(default_factory=PromptSource)
    """A source with `{lang}` (aligned files, rows joined on `id`), or English questions that the model
    self-translates into the training languages."""
    template: str = "{question}"
    """The user turn of a training example; `{question}` is the question in the source language."""

    @field_validator("train")
    @classmethod
    def _directions(cls, entries: list[str]) -> list[str]:
        if not entries:
            raise ValueError("at least one training direction is needed, e.g. [zh]")
        for entry in entries:
            codes = entry.split("-")
            if len(codes) > 2 or len(set(codes)) != len(codes):
                raise ValueError(f"{entry!r} is not a language (zh) or a direction (en-zh)")
            for code in codes:
                get_language(code)
        return entries

    @field_validator("template")
    @classmethod
    def _has_question(cls, template: str) -> str:
        if "{question}" not in template:
            raise ValueError("the template must contain {question}")
        return template

    def directions(self, target: str) -> list[tuple[str, str]]:
        """(question language, completion language) per training entry; a bare code translates into `target`."""
        pairs = [tuple(e.split("-")) if "-" in e else (e, target) for e in self.train]
        return list(dict.fromkeys((a, b) for a, b in pairs))

    def trained_languages(self, target: str) -> list[str]:
        """The languages whose questions the model is trained on."""
        return list(dict.fromkeys(src for src, _ in self.directions(target)))


def build_question_pairs(
    prompts: Sequence[Prompt],
    directions: Sequence[tuple[str, str]],
    template: str = "{question}",
    failed: Collection[tuple[str, str]] = (),
) -> tuple[list[QuestionPair], dict[str, dict[str, Any]]]:
    """Join `prompts` on `id` into one SFT example per id and direction (question language, target language).

    `failed` holds the (id, lang) rows whose self-translation failed, so they are counted as
    `translation_failure` rather than as missing. Returns the pairs and per-direction stats
    `{"zh-en": {"kept": n, "dropped": {reason: n}}}`.
    """
    text = {(p.id, p.lang): p.instruction for p in prompts}
    ids = list(dict.fromkeys(p.id for p in prompts))
    pairs: list[QuestionPair] = []
    stats: dict[str, dict[str, Any]] = {}
    for src, tgt in directions:
        dropped = dict.fromkeys(DROP_REASONS, 0)
        kept = 0
        for pid in ids:
            question, translation = text.get((pid, src)), text.get((pid, tgt))
            if question is None or translation is None:
                lang = src if question is None else tgt
                if (pid, lang) in failed:
                    dropped["translation_failure"] += 1
                else:
                    dropped["missing_question" if question is None else "missing_translation"] += 1
                continue
            if question.strip() == translation.strip():
                dropped["identical"] += 1  # an untranslated row teaches copying, not alignment
                continue
            prompt = template.replace("{question}", question)
            pairs.append(QuestionPair(id=pid, lang=src, target=tgt, prompt=prompt, completion=translation))
            kept += 1
        stats[f"{src}-{tgt}"] = {"kept": kept, "dropped": dropped}
    return pairs, stats


class QuestionAlignment:
    """One iteration: question pairs (from aligned `{lang}` files, or the model's own translations of English
    questions) → SFT on the completion only → M1."""

    name: ClassVar[str] = "question-alignment"
    training: ClassVar[type[TrainingSettings]] = SFTSettings
    sections: ClassVar[dict[str, Any]] = {"alignment": AlignmentSettings}
    record: ClassVar[type[BaseModel]] = QuestionPair
    data_file: ClassVar[str] = "question_pairs.jsonl"
    shown: ClassVar[tuple[str, ...]] = ("train_loss", "mean_token_accuracy", "train_runtime")

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.alignment = run.config.section("alignment", AlignmentSettings)

    @classmethod
    def check(cls, config: RunSettings) -> None:
        if config.iterations != 1:
            raise ValueError("method 'question-alignment' trains once: iterations must be 1")
        run_langs = {config.source_lang, *config.languages}
        for src, tgt in config.section("alignment", AlignmentSettings).directions(config.source_lang):
            for code in (src, tgt):
                if code not in run_langs:
                    raise ValueError(
                        f"alignment.train uses {code!r}, which is not source_lang or in languages {config.languages}"
                    )

    def prepare(self) -> None:
        """Load the questions once, so that a bad source fails before the run writes anything (their stage reads
        them again when it runs in its own process)."""
        self.questions  # noqa: B018

    @staticmethod
    def train(
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
        """SFT on the completion only (`cache`: nothing to reuse)."""
        from polyrise.training.sft import train_sft  # torch and TRL: loaded by the stage that trains

        assert isinstance(settings, SFTSettings)
        return train_sft(
            model,
            rows,
            out,
            settings,
            seed=seed,
            dtype=model_settings.dtype,
            chat_template=model_settings.chat_template,
            trust_remote_code=model_settings.trust_remote_code,
            report=report,
        )

    @cached_property
    def questions(self) -> list[Prompt]:
        """The aligned questions in every language needed, or the English ones to self-translate."""
        cfg = self.run.config
        langs = self._needed() if self._aligned_files else [cfg.source_lang]
        return load_prompts(self.alignment.questions, langs, cfg.source_lang)

    def estimate(self) -> dict[str, int]:
        cfg = self.run.config
        directions = self.alignment.directions(cfg.source_lang)
        per_lang = Counter(q.lang for q in self.questions)
        if self._aligned_files:
            pairs = sum(min(per_lang[a], per_lang[b]) for a, b in directions)
            return {"questions": len(self.questions), "pairs": pairs}
        n, others = len(self.questions), [lang for lang in self._needed() if lang != cfg.source_lang]
        return {"questions": n, "prompt translations": n * len(others), "pairs": n * len(directions)}

    def files(self, t: int) -> dict[str, Path]:
        layout = self.run.layout
        return {
            "prompt_translations": layout.file(t, "prompt_translations.jsonl"),
            "question_pairs": layout.file(t, self.data_file),
            "question_stats": layout.file(t, "question_pairs_stats.json"),
        }

    @property
    def _aligned_files(self) -> bool:
        return "{lang}" in self.alignment.questions.source

    def _needed(self) -> list[str]:
        pairs = self.alignment.directions(self.run.config.source_lang)
        return list(dict.fromkeys(code for pair in pairs for code in pair))

    def stages(self, t: int) -> list[Stage]:
        run, f = self.run, self.files(t)
        cfg = run.config
        questions = self.alignment.questions.source
        translated = not self._aligned_files
        return [
            Stage(
                f"iter_{t}/questions",
                lambda: self._questions(t),
                outputs=[f["question_pairs"], f["question_stats"]],
                inputs=source_files(questions, self._needed() if self._aligned_files else [cfg.source_lang]),
                models=run.translator_models(t) if translated else [],
                settings=[self.alignment.model_dump(), cfg.source_lang]
                + (
                    [run.translator_settings(), cfg.generation.translate.model_dump(), *cfg.generation.prompting()]
                    if translated
                    else []
                ),
                loads_model=translated,
            ),
            run.train_stage(t),
        ]

    def _questions(self, t: int) -> dict[str, Any]:
        run, f = self.run, self.files(t)
        cfg = run.config
        align = self.alignment
        failed: set[tuple[str, str]] = set()
        if self._aligned_files:
            prompts = self.questions
        else:
            english = self.questions
            others = [lang for lang in self._needed() if lang != cfg.source_lang]
            translator = run.translator(run.model_spec(t))
            prompts, attempts, _ = translate_prompts(
                translator, english, others, cfg.generation.translate, cfg.generation.translation_template
            )
            write_jsonl(f["prompt_translations"], attempts)
            failed = {(a.id, a.lang) for a in attempts if a.output is None}
        pairs, stats = build_question_pairs(prompts, align.directions(cfg.source_lang), align.template, failed)
        write_json(f["question_stats"], stats)
        write_jsonl(f["question_pairs"], pairs)
        return {"question_pairs": len(pairs)}

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["question_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        return {}

    def summary_table(self, summary: dict[str, Any]) -> Table:
        return question_table(summary["stats"])

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """The trained languages (marked `*`: the others are the unseen ones) and the question pairs, each a
        question → the same question in the target language."""
        trained = config.section("alignment", AlignmentSettings).trained_languages(config.source_lang)
        note = (
            f"Question alignment: languages marked * ({', '.join(trained)}) were in training "
            "(directions are marked when they involve one); the other languages are unseen. "
            "M0 is the model before alignment, M1 after."
        )
        pairs = PairFiles(cls.data_file, QuestionPair, ("completion",), lambda p: f"{p.lang}-{p.target}")
        return MethodViews(tuple(trained), note, pairs)


def question_table(stats: dict[str, Any]) -> Table:
    """Per training direction: question pairs kept and dropped by reason."""
    table = Table(title="question-alignment data")
    for col in ("direction", "kept", *DROP_REASONS):
        table.add_column(col, justify="right")
    for direction, s in stats.items():
        table.add_row(direction, str(s["kept"]), *(str(s["dropped"][r]) for r in DROP_REASONS))
    return table
