"""Implicit Cross-Lingual Rewarding (Yang et al., ACL 2025, arXiv 2503.04647): an English-aligned policy pi and
the model it was tuned from, pi_ref, define an implicit reward r(y | x) = log pi(y | x) - log pi_ref(y | x) (summed
over the answer's tokens). Per prompt and language L (the source language included, as in the released code):

  the policy samples k answers to the prompt in L (self-translated by the policy, as Language Imbalance Driven
  Rewarding does), each is scored under the variant's instruction (`cross-lingual`: the English instruction with
  the request to answer in L; `multilingual`: the native one), r - alpha x len(y) with alpha from a grid (the mean
  chosen-minus-rejected length closest to 0, per language), and the best and worst answers become a DPO pair.

M(t+1) is trained from M(t) with DPO + NLL (its reference: M(t)); the implicit reward of iteration t > 0 is
M(t)'s against the configured reference (`reference_after_first: fixed`, the released code's default) or against
M(t-1) (`previous`). Followed from ZNLP/Implicit-Cross-Lingual-Rewarding: the prefix text, k = 10, temperature
0.9 / top-p 1.0, length in characters, alpha grid np.arange(0, 1, 0.001) with the first alpha kept on ties,
np.argmax / np.argmin (first index on ties). The score differs: every answer token, no EOS (the released code drops
the first answer token and counts the EOS; docs/icr.md).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator
from rich.table import Table

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.generation import ChatRequest
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.methods import MethodViews
from polyrise.methods._dpo_loop import (
    PROMPTS_CAPTION,
    SHOWN,
    SelfTranslatedPrompts,
    add_prompt_stats,
    pair_files,
    prompt_cells,
    reward_labels,
    sample_answers,
    train_dpo_nll,
    trained_reward,
)
from polyrise.records import PreferencePair, Prompt, Samples, SampleScores
from polyrise.settings import SamplingSettings, Section
from polyrise.templates import answer_in_prompt
from polyrise.training.settings import DPOSettings, TrainingSettings

DROP_REASONS = ("single_sample", "equal_rewards")
"""Why a prompt in a language gives no pair: fewer than two non-empty samples, or every sample's reward equal."""


MAX_ALPHAS = 100_000
"""The most alphas the length-control grid may try (alpha_max / alpha_step)."""


class ImplicitRewardSettings(Section):
    """Implicit Cross-Lingual Rewarding (Yang et al., ACL 2025, arXiv 2503.04647): the policy (`model.spec`, an
    English-aligned model) samples `samples` answers per prompt and language; each is scored by the implicit reward
    log pi(y|x) - log pi_ref(y|x) under the variant's instruction, length-controlled, and the best and worst become
    a DPO pair. Defaults follow the released code (ZNLP/Implicit-Cross-Lingual-Rewarding)."""

    reference: str
    """The model the policy was tuned from: pi_ref of iteration 0 (and of every iteration with `fixed`)."""
    reference_after_first: Literal["fixed", "previous"] = "fixed"
    """pi_ref of iteration t > 0: `fixed` keeps `reference` (the released code: compute_score.sh:37 and
    generate_preference_pair.py:222 default the reference to the original SFT model in every mode); `previous` takes
    M(t-1), the released "with_t-1_reference_model" analysis checkpoint (README.md:67)."""
    samples: int = Field(default=10, ge=1, le=1000)
    """k answers per prompt and language."""
    sampling: SamplingSettings = Field(default_factory=lambda: SamplingSettings(temperature=0.9, max_new_tokens=512))
    """The released code samples at temperature 0.9, top-p 1.0; sample j uses `seed + j`."""
    variant: Literal["cross-lingual", "multilingual"] = "cross-lingual"
    """The instruction an answer in L is scored under: `cross-lingual` the English one, prefixed with the request
    to answer in L; `multilingual` the native one (the prompt the answer was sampled for)."""
    pairing: Literal["reward", "random"] = "reward"
    """Which two samples become the pair: `reward` the highest and lowest length-controlled reward (the method);
    `random` an ordered pair of samples with different rewards drawn uniformly at random (seeded by the run's seed,
    the iteration, the language and the prompt; the same prompts drop): the control that says what the reward's
    choice adds, everything else equal."""
    length_control: bool = True
    """Reward - alpha x length (characters), alpha the grid value whose chosen-minus-rejected mean length is
    closest to 0 (per language); off: alpha = 0."""
    alpha_max: float = Field(default=1.0, gt=0.0, le=1000.0)
    alpha_step: float = Field(default=0.001, ge=1e-6, le=1000.0)
    """The alpha grid: 0, step, 2 x step, ... below `alpha_max` (the code's np.arange(0, 1, 0.001)); at most
    `MAX_ALPHAS` values."""

    @model_validator(mode="after")
    def _grid_size(self) -> ImplicitRewardSettings:
        if self.alpha_max / self.alpha_step > MAX_ALPHAS:
            raise ValueError(
                f"alpha_max / alpha_step = {self.alpha_max / self.alpha_step:.0f} alphas to try; at most {MAX_ALPHAS}"
            )
        return self


def implicit_rewards(policy: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """r(y) = log pi(y | x) - log pi_ref(y | x) per sample (summed log-probs of the same context and answer)."""
    return np.asarray(policy, float) - np.asarray(reference, float)


def length_controlled(rewards: np.ndarray, lengths: np.ndarray, alpha: float) -> np.ndarray:
    """r(y) - alpha x len(y)."""
    return np.asarray(rewards, float) - alpha * np.asarray(lengths, float)


def select_pair(rewards: np.ndarray, rng: np.random.Generator | None = None) -> tuple[int, int] | str:
    """(chosen, rejected) = (first argmax, first argmin) of one prompt's rewards, or the drop reason. With `rng` (the
    random control) the same prompts drop, and the pair is drawn from `rng` uniformly among the ordered pairs of
    samples whose rewards differ (so, as the reward's pairs, never two copies of one answer): either side is equally
    likely to be chosen, so a frequent answer is no likelier chosen than rejected."""
    if len(rewards) < 2:
        return "single_sample"
    chosen, rejected = int(np.argmax(rewards)), int(np.argmin(rewards))
    if rewards[chosen] == rewards[rejected]:
        return "equal_rewards"
    if rng is not None:
        rewards = np.asarray(rewards)
        sides = np.argwhere(rewards[:, None] != rewards[None, :])
        chosen, rejected = (int(i) for i in sides[rng.integers(len(sides))])
    return chosen, rejected


def alpha_grid(settings: ImplicitRewardSettings) -> np.ndarray:
    """The alphas tried: 0, step, ... below `alpha_max` (np.arange, as the released code)."""
    return np.arange(0.0, settings.alpha_max, settings.alpha_step)


def choose_alpha(rewards: Sequence[np.ndarray], lengths: Sequence[np.ndarray], grid: np.ndarray) -> tuple[float, float]:
    """The alpha of `grid` whose pairs (first argmax vs first argmin of each prompt's length-controlled rewards) have
    the mean chosen-minus-rejected length closest to 0, the first one on ties; with that mean. Prompts with fewer
    than two samples take no part; with none at all, (0, 0)."""
    groups = [(r, n) for r, n in zip(rewards, lengths, strict=True) if len(r) >= 2]
    if not groups:
        return 0.0, 0.0
    gaps = np.zeros(len(grid))
    for r, n in groups:
        n = np.asarray(n, float)
        adjusted = np.asarray(r, float)[None, :] - grid[:, None] * n[None, :]
        gaps += n[adjusted.argmax(axis=1)] - n[adjusted.argmin(axis=1)]
    gaps /= len(groups)
    best = int(np.argmin(np.abs(gaps)))  # the first minimum: the smallest alpha on ties
    return float(grid[best]), float(gaps[best])


def build_pairs(
    samples: Sequence[Samples],
    scores: Sequence[SampleScores],
    prompts: dict[tuple[str, str], str],
    languages: Sequence[str],
    settings: ImplicitRewardSettings,
    seed: Sequence[int] = (0,),
) -> tuple[list[PreferencePair], dict[str, dict[str, Any]]]:
    """One pair per prompt and language (the prompt's highest and lowest length-controlled implicit reward; with
    `pairing: random` two samples drawn at random, seeded by `seed` with the language and prompt id), and per
    language: candidates, kept, drops by reason, alpha and the mean length gap it gives, reward margins (raw and
    length-controlled) and chosen/rejected lengths (characters), over the kept pairs."""
    scored = {(s.id, s.lang): s for s in scores}
    pairs: list[PreferencePair] = []
    stats: dict[str, dict[str, Any]] = {}
    grid = alpha_grid(settings) if settings.length_control else np.zeros(1)
    for lang in languages:
        rows = [s for s in samples if s.lang == lang]
        rewards = [implicit_rewards(scored[(s.id, lang)].policy, scored[(s.id, lang)].reference) for s in rows]
        lengths = [np.array([len(y) for y in s.outputs], float) for s in rows]
        alpha, gap = choose_alpha(rewards, lengths, grid)
        counts: dict[str, Any] = {"candidates": len(rows), "kept": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}
        margins, raw_margins, chosen_len, rejected_len = [], [], [], []
        for row, r, n in zip(rows, rewards, lengths, strict=True):
            adjusted = length_controlled(r, n, alpha)
            rng = None
            if settings.pairing == "random":  # its own stream per prompt: a pair does not depend on the others
                rng = np.random.default_rng([*seed, zlib.crc32(f"{lang}/{row.id}".encode())])
            picked = select_pair(adjusted, rng)
            if isinstance(picked, str):
                counts["dropped"][picked] += 1
                continue
            c, j = picked
            counts["kept"] += 1
            margins.append(adjusted[c] - adjusted[j])
            raw_margins.append(r[c] - r[j])
            chosen_len.append(n[c])
            rejected_len.append(n[j])
            pairs.append(
                PreferencePair(
                    id=row.id,
                    lang=lang,
                    via=lang,
                    prompt=prompts[(row.id, lang)],
                    chosen=row.outputs[c],
                    rejected=row.outputs[j],
                )
            )
        means = {
            "margin": margins,
            "raw_margin": raw_margins,
            "chosen_length": chosen_len,
            "rejected_length": rejected_len,
        }
        counts |= {"alpha": alpha, "alpha_length_gap": gap}
        counts |= {k: float(np.mean(v)) if v else None for k, v in means.items()}
        stats[lang] = counts
    return pairs, stats


class ImplicitCrossLingual:
    """Per iteration: self-translated prompts → k sampled answers per prompt and language → their implicit rewards
    (policy and reference log-probs) → best/worst pairs → DPO + NLL from M(t) to M(t+1). The prompts stage,
    the training and the reward's accuracy are shared with Language Imbalance Driven Rewarding (`_dpo_loop`)."""

    name: ClassVar[str] = "implicit-cross-lingual"
    training: ClassVar[type[TrainingSettings]] = DPOSettings
    sections: ClassVar[dict[str, Any]] = {"implicit_reward": ImplicitRewardSettings}
    record: ClassVar[type[BaseModel]] = PreferencePair
    data_file: ClassVar[str] = "pairs.jsonl"
    shown: ClassVar[tuple[str, ...]] = SHOWN
    train = staticmethod(train_dpo_nll)

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.prompts = SelfTranslatedPrompts(run)
        self.icr = run.config.section("implicit_reward", ImplicitRewardSettings)

    @classmethod
    def check(cls, config: RunSettings) -> None:
        """Its section validates itself."""

    def prepare(self) -> None:
        from polyrise.models import resolve_model  # torch: loaded when a run starts, not when a config loads

        self.prompts.source  # noqa: B018
        resolve_model(self.icr.reference)  # a missing reference fails before anything is written

    @property
    def languages(self) -> list[str]:
        """The languages answers are sampled and paired in: the source language and the targets."""
        return [self.run.config.source_lang, *self.run.config.languages]

    def reference_spec(self, t: int) -> str:
        """pi_ref of iteration t: the configured reference; after iteration 0 the previous iterate with
        `reference_after_first: previous`."""
        previous = t > 0 and self.icr.reference_after_first == "previous"
        return self.run.model_spec(t - 1) if previous else self.icr.reference

    def files(self, t: int) -> dict[str, Path]:
        own = ("samples", "sample_scores", "pairs", "reward")
        files = {name: self.run.layout.file(t, f"{name}.jsonl") for name in own}
        return self.prompts.files(t) | files | {"pairs_stats": self.run.layout.file(t, "pairs_stats.json")}

    def stages(self, t: int) -> list[Stage]:
        run, cfg, f, icr = self.run, self.run.config, self.files(t), self.icr
        return [
            self.prompts.stage(t),
            Stage(
                f"iter_{t}/sample",
                lambda: self._sample(t),
                outputs=[f["samples"]],
                inputs=[f["prompts"]],
                models=[run.model_spec(t)],
                settings=[cfg.model.model_dump(), icr.samples, icr.sampling.model_dump(), *cfg.generation.prompting()],
            ),
            Stage(
                f"iter_{t}/score",
                lambda: self._score(t),
                outputs=[f["sample_scores"]],
                inputs=[f["prompts"], f["samples"]],
                models=[run.model_spec(t), self.reference_spec(t)],
                settings=[cfg.model.model_dump(), icr.variant, *cfg.generation.prompting()],
            ),
            Stage(
                f"iter_{t}/pairs",
                lambda: self._pairs(t),
                outputs=[f["pairs"], f["pairs_stats"], f["reward"]],
                inputs=[f["prompts"], f["prompts_stats"], f["samples"], f["sample_scores"]],
                settings=[icr.model_dump(exclude={"reference", "samples", "sampling"}), cfg.seed],
                loads_model=False,
            ),
            run.train_stage(t),
        ]

    def estimate(self) -> dict[str, int]:
        n, k, langs = len(self.prompts.prompts(0)), self.icr.samples, len(self.languages)
        return {
            "source prompts": n,
            "prompt translations": n * (langs - 1),
            "samples": n * langs * k,
            "log-likelihoods": 2 * n * langs * k,  # under the policy and the reference
            "pairs": n * langs,  # one per prompt and language, before drops
        }

    def _sample(self, t: int) -> dict[str, Any]:
        """k answers per prompt in its language (`sample_answers`). Empty answers are left out (they have no tokens
        to score)."""
        f, icr = self.files(t), self.icr
        prompts = [p for p in read_jsonl(f["prompts"], Prompt) if p.lang in self.languages]
        answers = sample_answers(self.run.generator(self.run.model_spec(t)), prompts, icr.sampling, icr.samples)
        rows = [
            Samples(id=p.id, lang=p.lang, prompt=p.instruction, outputs=[y for y in outputs if y])
            for p, outputs in zip(prompts, answers, strict=True)
        ]
        write_jsonl(f["samples"], rows)
        n = len(prompts) * icr.samples
        return {"samples": n, "empty": n - sum(len(r.outputs) for r in rows)}

    def _score(self, t: int) -> dict[str, Any]:
        """Every sample's summed log-prob after the variant's rendered instruction, under the policy, then the
        reference (one engine at a time; the same context text for both, through the run's cache)."""
        cfg, f = self.run.config, self.files(t)
        english = {p.id: p.instruction for p in read_jsonl(f["prompts"], Prompt) if p.lang == cfg.source_lang}
        samples = read_jsonl(f["samples"], Samples)
        policy = self.run.generator(self.run.model_spec(t))

        def instruction(s: Samples) -> str:
            if self.icr.variant == "multilingual" or s.lang == cfg.source_lang:
                return s.prompt
            return answer_in_prompt(english[s.id], s.lang)

        contexts = [policy.render(ChatRequest.user(instruction(s))) for s in samples]
        requests = [(c, y) for c, s in zip(contexts, samples, strict=True) for y in s.outputs]
        logps = {"policy": [x.logprob for x in policy.loglikelihood(requests, desc="scoring (policy)")]}
        reference = self.run.generator(self.reference_spec(t))
        logps["reference"] = [x.logprob for x in reference.loglikelihood(requests, desc="scoring (reference)")]
        rows, start = [], 0
        for c, s in zip(contexts, samples, strict=True):
            end = start + len(s.outputs)
            part = {k: v[start:end] for k, v in logps.items()}
            rows.append(SampleScores(id=s.id, lang=s.lang, context=c, **part))
            start = end
        write_jsonl(f["sample_scores"], rows)
        return {"scored": len(requests)}

    def _pairs(self, t: int) -> dict[str, Any]:
        f = self.files(t)
        prompt_rows = read_jsonl(f["prompts"], Prompt)
        prompts = {(p.id, p.lang): p.instruction for p in prompt_rows}
        pairs, stats = build_pairs(
            read_jsonl(f["samples"], Samples),
            read_jsonl(f["sample_scores"], SampleScores),
            prompts,
            self.languages,
            self.icr,
            seed=(self.run.config.seed, t),
        )
        add_prompt_stats(stats, f["prompts_stats"])
        cfg = self.run.config
        labels, reward = reward_labels(prompt_rows, pairs, cfg.source_lang, cfg.seed)
        for lang in self.languages:
            if lang in reward:
                stats[lang]["reward"] = reward[lang]
        write_jsonl(f["reward"], labels)
        write_json(f["pairs_stats"], stats)
        write_jsonl(f["pairs"], pairs)
        return {"pairs": len(pairs), "reward_labels": len(labels)}

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["pairs_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        """The accuracy of the implicit reward iteration `t` trains on, against the prompts' gold answers."""
        return trained_reward(self.files(t)["reward"], t, self.run.config.training, self.run.config.seed)

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """Every iteration's pairs (the best and worst sample by the implicit reward), labelled right or wrong
        where the prompts carry gold answers."""
        return MethodViews(pairs=pair_files())

    def summary_table(self, summary: dict[str, Any]) -> Table:
        """Per language: pairs kept of candidates, drops, alpha, mean margin and lengths, off-target before → after."""
        t = summary["iteration"]
        table = Table(
            title=f"iteration {t}: M{t} → M{t + 1} (implicit cross-lingual reward)",
            caption=f"prompts given/self-translated; {PROMPTS_CAPTION}",
        )
        for col in (
            "lang",
            "prompts given/self",
            "prompts dropped",
            "kept",
            "dropped",
            "alpha",
            "margin",
            "len chosen/rejected",
            f"off-target M{t}→M{t + 1}",
        ):
            table.add_column(col)
        for lang in self.languages:
            s = summary["stats"][lang]
            dropped = ", ".join(f"{r} {n}" for r, n in s["dropped"].items() if n) or "-"
            margin = "-" if s["margin"] is None else f"{s['margin']:.2f}"
            lengths = "-" if s["chosen_length"] is None else f"{s['chosen_length']:.0f}/{s['rejected_length']:.0f}"
            off = summary["off_target"]
            before, after = off.get(f"M{t}", {}).get(lang), off.get(f"M{t + 1}", {}).get(lang)
            rate = "-"
            if before and after and before["n"] and after["n"]:
                rate = f"{before['off_target']:.0%} → {after['off_target']:.0%} (n={after['n']})"
            cells = [
                *prompt_cells(s),
                f"{s['kept']}/{s['candidates']}",
                dropped,
                f"{s['alpha']:.3f}",
                margin,
                lengths,
                rate,
            ]
            table.add_row(lang, *cells)
        return table
