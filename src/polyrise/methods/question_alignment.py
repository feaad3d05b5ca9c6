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
from typing import TYPE_CHECKING, Any

from rich.table import Table

from polyrise.config import RunConfig, SFTSettings
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.methods import MethodViews, PairFiles
from polyrise.records import Prompt, QuestionPair

if TYPE_CHECKING:
    from polyrise.runner import Runner, Stage

DROP_REASONS = ("missing_question", "missing_translation", "translation_failure", "identical")
"""Why a (question, translation) row is not a training example, in the order they are checked."""


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

    name = "question-alignment"
    settings = SFTSettings

    def __init__(self, run: Runner) -> None:
        self.run = run

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.alignment is None:
            raise ValueError("method 'question-alignment' needs an `alignment` section (at least alignment.train)")
        if config.iterations != 1:
            raise ValueError("method 'question-alignment' trains once: iterations must be 1")
        if config.implicit_reward is not None:
            raise ValueError("an `implicit_reward` section is only used by method 'implicit-cross-lingual'")
        run_langs = {config.source_lang, *config.languages}
        for src, tgt in config.alignment.directions(config.source_lang):
            for code in (src, tgt):
                if code not in run_langs:
                    raise ValueError(
                        f"alignment.train uses {code!r}, which is not source_lang or in languages {config.languages}"
                    )

    def prepare(self) -> None:
        """Load the questions once, so that a bad source fails before the run writes anything (their stage reads
        them again when it runs in its own process)."""
        self.questions  # noqa: B018

    @cached_property
    def questions(self) -> list[Prompt]:
        """The aligned questions in every language needed, or the English ones to self-translate."""
        from polyrise.sources import load_prompts

        cfg = self.run.config
        assert cfg.alignment is not None
        langs = self._needed() if self._aligned_files else [cfg.source_lang]
        return load_prompts(cfg.alignment.questions, langs, cfg.source_lang)

    def estimate(self) -> dict[str, int]:
        cfg = self.run.config
        assert cfg.alignment is not None
        directions = cfg.alignment.directions(cfg.source_lang)
        per_lang = Counter(q.lang for q in self.questions)
        if self._aligned_files:
            pairs = sum(min(per_lang[a], per_lang[b]) for a, b in directions)
            return {"questions": len(self.questions), "pairs": pairs}
        n, others = len(self.questions), [lang for lang in self._needed() if lang != cfg.source_lang]
        return {"questions": n, "prompt translations": n * len(others), "pairs": n * len(directions)}

    def files(self, t: int) -> dict[str, Path]:
        root = self.run.iter_dir(t)
        return {
            "prompt_translations": root / "prompt_translations.jsonl",
            "question_pairs": root / "question_pairs.jsonl",
            "question_stats": root / "question_pairs_stats.json",
        }

    @property
    def _aligned_files(self) -> bool:
        assert self.run.config.alignment is not None
        return "{lang}" in self.run.config.alignment.questions.source

    def _needed(self) -> list[str]:
        cfg = self.run.config
        assert cfg.alignment is not None
        return list(dict.fromkeys(code for pair in cfg.alignment.directions(cfg.source_lang) for code in pair))

    def stages(self, t: int) -> list[Stage]:
        from polyrise.runner import Stage
        from polyrise.sources import source_files

        run, f = self.run, self.files(t)
        cfg = run.config
        assert cfg.alignment is not None
        questions = cfg.alignment.questions.source
        translated = not self._aligned_files
        return [
            Stage(
                f"iter_{t}/questions",
                lambda: self._questions(t),
                outputs=[f["question_pairs"], f["question_stats"]],
                inputs=source_files(questions, self._needed() if self._aligned_files else [cfg.source_lang]),
                models=run.translator_models(t) if translated else [],
                settings=[cfg.alignment.model_dump(), cfg.source_lang]
                + ([run.translator_settings(), cfg.generation.translate.model_dump()] if translated else []),
                loads_model=translated,
            ),
            run.train_stage(t, f["question_pairs"], lambda: self._train(t)),
        ]

    def _questions(self, t: int) -> dict[str, Any]:
        run, f = self.run, self.files(t)
        cfg = run.config
        align = cfg.alignment
        assert align is not None
        failed: set[tuple[str, str]] = set()
        if self._aligned_files:
            prompts = self.questions
        else:
            from polyrise.self_translation import translate_prompts

            english = self.questions
            others = [lang for lang in self._needed() if lang != cfg.source_lang]
            translator = run.translator(run.model_spec(t))
            prompts, attempts = translate_prompts(translator, english, others, cfg.generation.translate)
            write_jsonl(f["prompt_translations"], attempts)
            failed = {(a.id, a.lang) for a in attempts if a.output is None}
        pairs, stats = build_question_pairs(prompts, align.directions(cfg.source_lang), align.template, failed)
        write_json(f["question_stats"], stats)
        write_jsonl(f["question_pairs"], pairs)
        return {"question_pairs": len(pairs)}

    def _train(self, t: int) -> dict[str, Any]:
        from polyrise.training.sft import train_sft

        return self.run.train(t, train_sft, read_jsonl(self.files(t)["question_pairs"], QuestionPair))

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["question_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        return {}

    def summary_table(self, summary: dict[str, Any]) -> Table:
        return question_table(summary["stats"])

    @classmethod
    def report_views(cls, config: RunConfig) -> MethodViews:
        """The trained languages (marked `*`: the others are the unseen ones) and the question pairs, each a
        question → the same question in the target language."""
        assert config.alignment is not None
        trained = config.alignment.trained_languages(config.source_lang)
        note = (
            f"Question alignment: languages marked * ({', '.join(trained)}) were in training "
            "(directions are marked when they involve one); the other languages are unseen. "
            "M0 is the model before alignment, M1 after."
        )
        pairs = PairFiles("question_pairs.jsonl", QuestionPair, ("completion",), lambda p: f"{p.lang}-{p.target}")
        return MethodViews(tuple(trained), note, pairs)


METHOD = QuestionAlignment


def question_table(stats: dict[str, Any]) -> Table:
    """Per training direction: question pairs kept and dropped by reason."""
    table = Table(title="question-alignment data")
    for col in ("direction", "kept", *DROP_REASONS):
        table.add_column(col, justify="right")
    for direction, s in stats.items():
        table.add_row(direction, str(s["kept"]), *(str(s["dropped"][r]) for r in DROP_REASONS))
    return table
