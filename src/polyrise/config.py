"""Run configuration (YAML → pydantic). Unknown keys are errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from polyrise.errors import PolyriseError
from polyrise.evaluation import EvalTask, untagged
from polyrise.io import read_text
from polyrise.langid import LangIdSettings
from polyrise.languages import get_language
from polyrise.settings import EngineSettings, ModelSettings, SamplingSettings, Section, TrackingSettings
from polyrise.settings import JudgeSettings as JudgeSettings
from polyrise.settings import OpenAISettings as OpenAISettings
from polyrise.settings import VLLMSettings as VLLMSettings


class PromptSource(Section):
    """Where English prompts come from: the built-in set, a JSONL file (`id` + `instruction`), or an HF dataset."""

    source: str = "builtin:quickstart"
    """`builtin:<name>`, a path to a JSONL file, or `hf:<dataset name>`."""
    split: str = "train"
    column: str = "instruction"
    id_column: str | None = None
    limit: int | None = Field(default=None, ge=1)


class GenerationSettings(Section):
    policy: EngineSettings = Field(default_factory=EngineSettings)
    """The engine that answers with the model being trained (M0, then each iterate): `hf` or `vllm`."""
    translator: EngineSettings | None = None
    """The engine and model that translate prompts and answers; default (null): the policy itself, as in the
    paper. A fixed translator (`hf`/`vllm` with `model`, or an `openai` endpoint) is an ablation."""
    answer: SamplingSettings = Field(default_factory=SamplingSettings)
    translate: SamplingSettings = Field(default_factory=lambda: SamplingSettings(max_new_tokens=256))

    @model_validator(mode="after")
    def _roles(self) -> GenerationSettings:
        if self.policy.model is not None:
            raise ValueError("policy.model: the policy is `model.spec` and then its iterates; set model.spec instead")
        if self.policy.engine == "openai":
            raise ValueError(
                "policy.engine: 'openai' cannot serve the iterates a run trains; use hf or vllm "
                "(an OpenAI-compatible endpoint can be the translator or the judge)"
            )
        if self.translator is not None and self.translator.engine != "openai" and self.translator.model is None:
            raise ValueError("translator.model: a translator on hf/vllm needs a model spec (or leave out translator)")
        return self


class FilterSettings(Section):
    """The pair filters of `methods/language_imbalance.py` and its translation-task rule."""

    min_length_ratio: float = Field(default=0.3, gt=0.0)
    """len(chosen) / len(rejected), in characters, must lie in [min, max]."""
    max_length_ratio: float = Field(default=3.0, gt=0.0)
    repeated_line_limit: int = Field(default=5, ge=2)
    """A text where one non-empty line occurs this many times is degenerate."""
    detect_translation_tasks: bool = True
    """A source prompt that asks for a translation ("Translate ... into French", `TRANSLATION_REQUESTS` of its
    language) is a translation task: its pair in L takes the English answer, untranslated, as chosen."""
    translation_task_ids: Path | None = None
    """A JSONL file of rows with an `id` (other fields ignored; the reference's `instruction_about_translate.jsonl`
    as is): these prompts are translation tasks too. A relative path is taken from the working directory."""

    @model_validator(mode="after")
    def _ordered(self) -> FilterSettings:
        if self.min_length_ratio > self.max_length_ratio:
            raise ValueError("min_length_ratio must not exceed max_length_ratio")
        return self


class TrainingSettings(Section):
    """What every trainer shares: LoRA or full fine-tuning, optimisation, saving, launching."""

    method: Literal["lora", "full"] = "lora"
    learning_rate: float | None = Field(default=None, gt=0.0)
    """Default: 5e-7 for full fine-tuning (the paper), 5e-5 for LoRA."""
    epochs: float = Field(default=1.0, gt=0.0)
    batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=16)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | str = "all-linear"
    save: Literal["merged", "adapter"] = "merged"
    """`merged`: full safetensors weights; `adapter`: LoRA adapter + the base recorded in its config."""
    gradient_checkpointing: bool = False
    num_processes: int = Field(default=1, ge=1)
    """Processes (GPUs) the training is launched on through accelerate; >1 launches `accelerate launch` (DDP
    unless `accelerate_config` says FSDP or DeepSpeed). `batch_size` is per process: the global batch is
    batch_size x gradient_accumulation_steps x processes. 1 with no `accelerate_config`: train in-process."""
    accelerate_config: Path | None = None
    """An accelerate config file (examples/accelerate/*.yaml; a relative path is taken from the working dir).
    Given, training always goes through `accelerate launch --config_file` with the file's `num_processes`,
    unless `num_processes` is set >1, which overrides the file's."""

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-7 if self.method == "full" else 5e-5


class DPOSettings(TrainingSettings):
    """DPO + NLL (TRL loss_type ["sigmoid", "sft"]) with the previous iterate as reference."""

    beta: float = Field(default=0.1, gt=0.0)
    nll_weight: float = Field(default=1.0, ge=0.0)
    swap_preferences: bool = False
    """Ablation control: train on every pair with chosen and rejected exchanged (the reward turned upside down;
    it should hurt). The pairs file is unchanged."""


class SFTSettings(TrainingSettings):
    """Supervised fine-tuning on the completion only (question alignment)."""


class HeldoutSettings(Section):
    """A small held-out prompt set whose answers measure the off-target rate of M(t) vs M(t+1)."""

    prompts: PromptSource = Field(default_factory=lambda: PromptSource(source="builtin:heldout"))
    max_new_tokens: int = Field(default=128, ge=1)


class RewardJudgeSettings(Section):
    """A judge of the reward itself: a sample of each iteration's kept pairs, judged in both orders."""

    judge: JudgeSettings
    sample: int = Field(default=64, ge=1)
    """Pairs judged per iteration (a seeded sample of the kept pairs)."""


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


class ImplicitRewardSettings(Section):
    """Implicit Cross-Lingual Rewarding (Yang et al., ACL 2025, arXiv 2503.04647): the policy (`model.spec`, an
    English-aligned model) samples `samples` answers per prompt and language; each is scored by the implicit reward
    log pi(y|x) - log pi_ref(y|x) under the variant's instruction, length-controlled, and the best and worst become
    a DPO pair. Defaults follow the released code (ZNLP/Implicit-Cross-Lingual-Rewarding)."""

    reference: str
    """The model the policy was tuned from: pi_ref of iteration 0 (then the previous iterate)."""
    samples: int = Field(default=10, ge=1)
    """k answers per prompt and language."""
    sampling: SamplingSettings = Field(default_factory=lambda: SamplingSettings(temperature=0.9, max_new_tokens=512))
    """The released code samples at temperature 0.9, top-p 1.0; sample j uses `seed + j`."""
    variant: Literal["cross-lingual", "multilingual"] = "cross-lingual"
    """The instruction an answer in L is scored under: `cross-lingual` the English one, prefixed with the request
    to answer in L; `multilingual` the native one (the prompt the answer was sampled for)."""
    length_control: bool = True
    """Reward - alpha x length (characters), alpha the grid value whose chosen-minus-rejected mean length is
    closest to 0 (per language); off: alpha = 0."""
    alpha_max: float = Field(default=1.0, gt=0.0)
    alpha_step: float = Field(default=0.001, gt=0.0)
    """The alpha grid: 0, step, 2 x step, ... below `alpha_max` (the code's np.arange(0, 1, 0.001))."""


class RunConfig(Section):
    name: str = "run"
    """The run directory's name under `output_dir`: one path component."""
    method: str = "language-imbalance"
    """A module of `polyrise.methods`: `language-imbalance` (the self-rewarding DPO loop), `implicit-cross-lingual`
    (DPO on pairs ranked by the implicit reward, `implicit_reward` section) or `question-alignment` (one SFT step on
    question translation pairs, `alignment` section, evaluated on trained and unseen languages)."""
    output_dir: Path = Path("runs")
    seed: int = 0
    iterations: int = Field(default=1, ge=1)
    model: ModelSettings = Field(default_factory=ModelSettings)
    source_lang: str = "en"
    languages: list[str] = Field(default_factory=lambda: ["es", "de", "fr"])
    """Target languages (besides `source_lang`)."""
    prompts: PromptSource = Field(default_factory=PromptSource)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    langid: LangIdSettings = Field(default_factory=LangIdSettings)
    """How every language judgement of the run is made: the pairs' filter, held-out answers, MGSM answers."""
    training: SerializeAsAny[TrainingSettings] = Field(default_factory=DPOSettings)
    """The method's training settings (`DPOSettings` for language-imbalance, `SFTSettings` for question-alignment)."""
    heldout: HeldoutSettings | None = Field(default_factory=HeldoutSettings)
    evaluation: list[EvalTask] = Field(default_factory=list)
    """Evaluations of M0 and of every new iterate."""
    alignment: AlignmentSettings | None = None
    """Question-alignment data; needed by `method: question-alignment`."""
    reward_judge: RewardJudgeSettings | None = None
    """`method: language-imbalance`: how often a judge agrees with each iteration's preferences."""
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    """Where the trainer's and polyrise's per-iteration metrics are tracked (default: nowhere)."""
    implicit_reward: ImplicitRewardSettings | None = None
    """Needed by `method: implicit-cross-lingual`."""
    stage_processes: bool = True
    """Run every stage that loads a model in its own process, so GPU and host memory are returned between stages
    (a vLLM engine and a trainer never hold the GPU at once). false: one process (small models, debugging)."""

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise ValueError(
                f"{name!r} is not a directory name: the run directory is output_dir/name, so name must be one "
                "path component (not empty, '.' or '..', no '/' or '\\')"
            )
        return name

    @field_validator("source_lang")
    @classmethod
    def _known_source(cls, code: str) -> str:
        get_language(code)
        return code

    @field_validator("languages")
    @classmethod
    def _known_targets(cls, codes: list[str]) -> list[str]:
        if not codes:
            raise ValueError("at least one target language is needed")
        for code in codes:
            get_language(code)
        if len(set(codes)) != len(codes):
            raise ValueError(f"duplicate language codes in {codes}")
        return codes

    @model_validator(mode="after")
    def _source_not_target(self) -> RunConfig:
        if self.source_lang in self.languages:
            raise ValueError(f"source_lang {self.source_lang!r} is also listed in languages")
        return self

    @model_validator(mode="before")
    @classmethod
    def _method_training(cls, data: Any) -> Any:
        """Validate `training` as the settings of the configured method (an unknown method is reported by
        `_known_method`)."""
        if not isinstance(data, dict) or isinstance(data.get("training"), TrainingSettings):
            return data
        from polyrise.methods import load_method

        try:
            settings = load_method(str(data.get("method", "language-imbalance"))).settings
        except PolyriseError:
            return data
        try:
            return {**data, "training": settings.model_validate(data.get("training") or {})}
        except ValidationError as e:
            errors = [
                {"type": err["type"], "loc": ("training", *err["loc"]), "input": err["input"]}
                | ({"ctx": err["ctx"]} if "ctx" in err else {})
                for err in e.errors()
            ]
            raise ValidationError.from_exception_data(cls.__name__, errors) from None  # type: ignore[arg-type]

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from polyrise.methods import load_method

        try:
            load_method(name)
        except PolyriseError as e:
            raise ValueError(str(e)) from None
        return name

    @model_validator(mode="after")
    def _method_sections(self) -> RunConfig:
        """The method's own checks of the sections it reads."""
        from polyrise.methods import load_method

        load_method(self.method).check(self)
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name

    def to_yaml(self) -> str:
        """The resolved config as YAML: the run dir's `config.yaml`, and what `polyrise run --dry-run` prints."""
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


def load_config(path: str | Path, overrides: dict[str, object] | None = None) -> RunConfig:
    """Read a YAML run config; every problem is one PolyriseError naming the file and the key. `overrides`
    replace top-level keys before validation, as an edit of the file would."""
    path = Path(path)
    return parse_config(read_text(path, "config file"), path, overrides)  # missing, not UTF-8: one error


def parse_config(text: str, path: Path, overrides: dict[str, object] | None = None) -> RunConfig:
    """A run config from YAML `text` (errors name `path`): what `load_config` reads, and what `polyrise init`
    checks before it writes a file."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise PolyriseError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PolyriseError(f"{path}: the top level must be a mapping of keys")
    data.update(overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = err["loc"]
            if loc[:1] == ("evaluation",):  # leave out the task name the union of the tasks puts after the index
                loc = (*loc[:2], *untagged(loc[2:]))
            key = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {key}: {msg}")
        raise PolyriseError("\n".join(problems)) from None
