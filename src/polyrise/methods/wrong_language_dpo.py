"""Wrong-language DPO, after Cross-Lingual Optimization (CLO; Lee et al., ACL 2025, arXiv 2505.14297): the answer in
the wrong language is the rejected one. For prompt id and target language L, with y_L M(t)'s (greedy) answer to the
prompt in L:

  chosen = y_L, kept only when the language judge finds it in L;
  rejected = an answer to the same prompt that is not in L: `rejected: english` M(t)'s English answer to the
  English prompt (dropped only when it is judged in L), or `rejected: sampled` the first of k sampled answers to the
  prompt in L that the judge finds in another language.

Pairs then pass Language Imbalance Driven Rewarding's filters (empty, identical, repetition, wrong language, length
ratio) and M(t+1) is trained from M(t) with the same DPO + NLL. The prompts and the answers are LIDR's own stages
(`LanguageImbalance`, by composition); the prompts' gold answers label each pair right or wrong as for LIDR.

The language judge (`language_share`, shared with `cross_lingual_grpo`): the detector (`polyrise.langid`) for the
languages py3langid knows, or, for a language with a word list (`vocabulary`: the sandbox's clones, which no
detector knows), the share of a text's words that are in the list.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator
from rich.table import Table

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.langid import LangIdSettings, judge, measurable
from polyrise.methods import MethodViews
from polyrise.methods._dpo_loop import (
    PROMPTS_CAPTION,
    SHOWN,
    add_prompt_stats,
    pair_files,
    prompt_cells,
    reward_labels,
    sample_answers,
    train_dpo_nll,
    trained_reward,
)
from polyrise.methods.language_imbalance import DROP_REASONS as FILTER_REASONS
from polyrise.methods.language_imbalance import FilterSettings, LanguageImbalance, drop_reason
from polyrise.records import DroppedPair, PreferencePair, Prompt, Response, Samples
from polyrise.settings import SamplingSettings, Section
from polyrise.training.settings import DPOSettings, TrainingSettings

DROP_REASONS = (
    "off_target_chosen",
    "undecided_chosen",
    "no_wrong_language_answer",
    *(r for r in FILTER_REASONS if r != "translation_failure"),
)
"""Why a prompt in L gives no pair, in the order checked: its answer in L judged in another language, or not judged
at all; no answer judged outside L to reject; then LIDR's filters (`language_imbalance.drop_reason`)."""

_WORD = re.compile(r"[^\W\d_]+")


def read_vocabularies(spec: Path | None, languages: Sequence[str]) -> dict[str, frozenset[str]]:
    """The word list of each of `languages` whose file exists (`spec` with `{lang}`; one word a line, compared
    lower-cased); a language neither in a list nor known to py3langid is one error, since no answer in it could
    be judged."""
    found: dict[str, frozenset[str]] = {}
    for lang in languages:
        path = Path(str(spec).replace("{lang}", lang)) if spec is not None else None
        if path is not None and path.is_file():
            found[lang] = frozenset(w.strip().lower() for w in path.read_text(encoding="utf-8").split() if w.strip())
        elif not measurable(lang):
            where = f"{path} does not exist" if path else "no `vocabulary` is given"
            raise PolyriseError(f"language {lang!r} cannot be judged: py3langid does not know it and {where}")
    return found


def language_share(
    text: str,
    lang: str,
    langid: LangIdSettings,
    vocabulary: Collection[str] | None = None,
    others: Sequence[str] = (),
) -> float | None:
    """The share of `text` in `lang`: with a `vocabulary`, of its words (letters only, lower-cased) that are in it;
    else of the words of its decided lines that the detector puts in `lang` (DeepSeek-R1's language-consistency
    reward, counted per line). None when nothing can be judged (no word; no decided line)."""
    if vocabulary is not None:
        words = [w.lower() for w in _WORD.findall(text)]
        return sum(w in vocabulary for w in words) / len(words) if words else None
    decided = [line for line in judge(text, lang, langid, others).lines if line.lang is not None]
    total = sum(len(line.text.split()) for line in decided)
    return sum(len(line.text.split()) for line in decided if line.lang == lang) / total if total else None


def in_language(
    text: str,
    lang: str,
    langid: LangIdSettings,
    vocabulary: Collection[str] | None = None,
    others: Sequence[str] = (),
    min_share: float = 1.0,
) -> bool | None:
    """Whether `text` is in `lang`: at least `min_share` of what can be judged of it is (`language_share`; 1, the
    default, is the detector's on-target rule: every decided line). None when nothing can be judged."""
    share = language_share(text, lang, langid, vocabulary, others)
    return None if share is None else share >= min_share


class WrongLanguageSettings(Section):
    """Wrong-language DPO (`method: wrong-language-dpo`): where the rejected answer comes from, and how languages
    the detector does not know are judged."""

    rejected: Literal["english", "sampled"] = "english"
    """`english`: M(t)'s answer to the English prompt (CLO's rejected side); `sampled`: the first of `samples`
    answers sampled for the prompt in L that is judged in another language."""
    samples: int = Field(default=4, ge=1, le=1000)
    """Answers sampled per prompt and target language with `rejected: sampled` (sample j seeded `seed + j`)."""
    sampling: SamplingSettings = Field(default_factory=lambda: SamplingSettings(temperature=1.0, max_new_tokens=256))
    vocabulary: Path | None = None
    """A word list per language (`{lang}` in the path, one word a line) for the languages py3langid does not know
    (the sandbox's clones): the share of a text in L is that of its words in L's list."""
    min_share: float = Field(default=1.0, gt=0.0, le=1.0)
    """An answer is in L when at least this share of it is (`language_share`), else in the wrong language. 1: all
    of it (what the detector's off-target rate counts)."""

    @field_validator("vocabulary")
    @classmethod
    def _per_language(cls, path: Path | None) -> Path | None:
        if path is not None and "{lang}" not in str(path):
            raise ValueError("the path needs `{lang}`: one word list per language")
        return path


def build_pairs(
    prompts: dict[tuple[str, str], str],
    responses: Sequence[Response],
    samples: Sequence[Samples] | None,
    source_lang: str,
    languages: Sequence[str],
    settings: WrongLanguageSettings,
    filters: FilterSettings,
    langid: LangIdSettings,
    vocabularies: dict[str, frozenset[str]],
) -> tuple[list[PreferencePair], dict[str, dict[str, Any]], list[DroppedPair]]:
    """One pair per prompt id and target language (chosen y_L, rejected an answer not in L: the English one, or with
    `samples` the first sample judged outside L), per-language counts (`candidates`, `kept`, `dropped` by reason)
    and every dropped candidate with its reason."""
    answers = {(r.id, r.lang): r.output for r in responses}
    sampled = {(s.id, s.lang): s.outputs for s in samples or ()}
    everyone = [source_lang, *languages]
    pairs: list[PreferencePair] = []
    dropped: list[DroppedPair] = []
    stats: dict[str, dict[str, Any]] = {}
    for lang in languages:
        counts = Counter[str]()
        others = [x for x in everyone if x != lang]
        vocabulary = vocabularies.get(lang)
        ids = sorted(pid for pid, code in answers if code == lang)
        for pid in ids:
            chosen = answers[(pid, lang)]
            rejected: str | None = None
            reason: str | None = None
            on_target = in_language(chosen, lang, langid, vocabulary, others, settings.min_share)
            if on_target is not True:
                reason = "undecided_chosen" if on_target is None else "off_target_chosen"
            elif samples is None:
                rejected = answers.get((pid, source_lang))
                if (
                    rejected is None
                    or in_language(rejected, lang, langid, vocabulary, others, settings.min_share) is True
                ):
                    reason = "no_wrong_language_answer"
            else:
                judged = (y for y in sampled.get((pid, lang), []) if y.strip())
                rejected = next(
                    (
                        y
                        for y in judged
                        if in_language(y, lang, langid, vocabulary, others, settings.min_share) is False
                    ),
                    None,
                )
                reason = None if rejected is not None else "no_wrong_language_answer"
            pair = None
            if reason is None:
                assert rejected is not None
                pair = PreferencePair(
                    id=pid, lang=lang, via=lang, prompt=prompts[(pid, lang)], chosen=chosen, rejected=rejected
                )
                reason = drop_reason(pair, filters, langid, others)
            if reason is not None:
                counts[reason] += 1
                dropped.append(
                    DroppedPair(
                        id=pid,
                        lang=lang,
                        via=lang,
                        prompt=prompts[(pid, lang)],
                        chosen=chosen,
                        rejected=rejected,
                        reason=reason,
                    )
                )
            else:
                assert pair is not None
                pairs.append(pair)
        kept = len(ids) - sum(counts.values())
        stats[lang] = {"candidates": len(ids), "kept": kept, "dropped": {r: counts[r] for r in DROP_REASONS}}
    return pairs, stats, dropped


def off_target_cell(summary: dict[str, Any], lang: str) -> str:
    """A summary table's held-out off-target rate of `lang`, M(t) → M(t+1), or `-` where it was not measured."""
    t, off = summary["iteration"], summary["off_target"]
    before, after = off.get(f"M{t}", {}).get(lang), off.get(f"M{t + 1}", {}).get(lang)
    if before and after and before["n"] and after["n"]:
        return f"{before['off_target']:.0%} → {after['off_target']:.0%} (n={after['n']})"
    return "-"


class WrongLanguageDPO:
    """Per iteration: self-translated prompts → M(t)'s answers in every language (LIDR's stages) → [k sampled answers
    per prompt in L] → pairs (chosen: the answer in L, rejected: an answer in the wrong language) → DPO + NLL."""

    name: ClassVar[str] = "wrong-language-dpo"
    training: ClassVar[type[TrainingSettings]] = DPOSettings
    sections: ClassVar[dict[str, Any]] = {"filters": FilterSettings, "wrong_language": WrongLanguageSettings}
    record: ClassVar[type[BaseModel]] = PreferencePair
    data_file: ClassVar[str] = "pairs.jsonl"
    shown: ClassVar[tuple[str, ...]] = SHOWN
    train = staticmethod(train_dpo_nll)

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.lidr = LanguageImbalance(run)  # its prompts and generate stages, and their files
        self.settings = run.config.section("wrong_language", WrongLanguageSettings)

    @classmethod
    def check(cls, config: RunSettings) -> None:
        """Its sections validate themselves."""

    def prepare(self) -> None:
        self.lidr.prompts.source  # noqa: B018
        self.vocabularies  # noqa: B018

    @cached_property
    def vocabularies(self) -> dict[str, frozenset[str]]:
        return read_vocabularies(self.settings.vocabulary, self.run.config.languages)

    def files(self, t: int) -> dict[str, Path]:
        return self.lidr.files(t) | {"samples": self.run.layout.file(t, "samples.jsonl")}

    def stages(self, t: int) -> list[Stage]:
        run, cfg, f, settings = self.run, self.run.config, self.files(t), self.settings
        lidr = {stage.name: stage for stage in self.lidr.stages(t)}
        sampled = settings.rejected == "sampled"
        sample = Stage(
            f"iter_{t}/sample",
            lambda: self._sample(t),
            outputs=[f["samples"]],
            inputs=[f["prompts"]],
            models=[run.model_spec(t)],
            settings=[
                cfg.model.model_dump(),
                settings.samples,
                settings.sampling.model_dump(),
                *cfg.generation.prompting(),
            ],
        )
        return [
            lidr[f"iter_{t}/prompts"],
            lidr[f"iter_{t}/generate"],
            *([sample] if sampled else []),
            Stage(
                f"iter_{t}/pairs",
                lambda: self._pairs(t),
                outputs=[f["pairs"], f["pairs_dropped"], f["pairs_stats"], f["reward"]],
                inputs=[f["prompts"], f["prompts_stats"], f["responses"], *([f["samples"]] if sampled else [])],
                settings=[
                    cfg.source_lang,
                    cfg.languages,
                    settings.rejected,
                    settings.min_share,
                    self.lidr.filters.model_dump(),
                    cfg.langid.model_dump(),
                    {lang: sorted(words) for lang, words in self.vocabularies.items()},
                    cfg.seed,
                ],
                loads_model=False,
            ),
            run.train_stage(t),
        ]

    def estimate(self) -> dict[str, int]:
        cfg = self.run.config
        n, langs = len(self.lidr.prompts.prompts(0)), len(cfg.languages)
        work = {"source prompts": n, "prompt translations": n * langs, "answers": n * (langs + 1)}
        if self.settings.rejected == "sampled":
            work["samples"] = n * langs * self.settings.samples
        return work | {"pairs": n * langs}  # one per prompt and target language, before the drops

    def _sample(self, t: int) -> dict[str, Any]:
        """k answers per prompt in each target language (`sample_answers`)."""
        f, settings = self.files(t), self.settings
        prompts = [p for p in read_jsonl(f["prompts"], Prompt) if p.lang in self.run.config.languages]
        answers = sample_answers(
            self.run.generator(self.run.model_spec(t)), prompts, settings.sampling, settings.samples
        )
        rows = [
            Samples(id=p.id, lang=p.lang, prompt=p.instruction, outputs=outputs)
            for p, outputs in zip(prompts, answers, strict=True)
        ]
        write_jsonl(f["samples"], rows)
        return {"samples": len(prompts) * settings.samples}

    def _pairs(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        rows = read_jsonl(f["prompts"], Prompt)
        responses = read_jsonl(f["responses"], Response)
        samples = read_jsonl(f["samples"], Samples) if self.settings.rejected == "sampled" else None
        pairs, stats, dropped = build_pairs(
            {(p.id, p.lang): p.instruction for p in rows},
            responses,
            samples,
            cfg.source_lang,
            cfg.languages,
            self.settings,
            self.lidr.filters,
            cfg.langid,
            self.vocabularies,
        )
        add_prompt_stats(stats, f["prompts_stats"])
        labels, reward = reward_labels(rows, pairs, cfg.source_lang, cfg.seed)
        for lang in cfg.languages:
            if lang in reward:
                stats[lang]["reward"] = reward[lang]
        write_jsonl(f["reward"], labels)
        write_json(f["pairs_stats"], stats)
        write_jsonl(f["pairs_dropped"], dropped)
        write_jsonl(f["pairs"], pairs)
        return {"pairs": len(pairs), "dropped": len(dropped), "reward_labels": len(labels)}

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["pairs_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        """The accuracy of the pairs iteration `t` trains on, against the prompts' gold answers (a wrong-language
        pair's preference is about language: its accuracy says how often it also prefers the right answer)."""
        return trained_reward(self.files(t)["reward"], t, self.run.config.training, self.run.config.seed)

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """Every iteration's pairs, kept and dropped (with the reason), labelled right or wrong where it could."""
        return MethodViews(pairs=pair_files(dropped="pairs_dropped.jsonl"))

    def summary_table(self, summary: dict[str, Any]) -> Table:
        """Per target language: prompts, pairs kept of candidates, drops by reason, off-target before → after."""
        t = summary["iteration"]
        table = Table(
            title=f"iteration {t}: M{t} → M{t + 1} (wrong-language DPO, rejected: {self.settings.rejected})",
            caption=f"prompts given/self-translated; {PROMPTS_CAPTION}",
        )
        for col in ("lang", "prompts given/self", "prompts dropped", "kept", "dropped", f"off-target M{t}→M{t + 1}"):
            table.add_column(col)
        for lang in self.run.config.languages:
            s = summary["stats"][lang]
            dropped = ", ".join(f"{r} {n}" for r, n in s["dropped"].items() if n) or "-"
            table.add_row(
                lang, *prompt_cells(s), f"{s['kept']}/{s['candidates']}", dropped, off_target_cell(summary, lang)
            )
        return table
