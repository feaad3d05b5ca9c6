"""Run configuration (YAML → pydantic). Unknown keys are errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from polyrise.errors import PolyriseError
from polyrise.languages import get_language


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    spec: str = "embedded:smollm2-135m-instruct"
    """`embedded:<name>`, a Hugging Face id, a local model dir, or a dir holding a LoRA adapter."""
    chat_template: str | None = None
    """Jinja chat template for models whose tokenizer has none."""
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 on CUDA, float32 on CPU."""


class PromptSource(Section):
    """Where English prompts come from: the built-in set, a JSONL file (`id` + `instruction`), or an HF dataset."""

    source: str = "builtin:quickstart"
    """`builtin:<name>`, a path to a JSONL file, or `hf:<dataset name>`."""
    split: str = "train"
    column: str = "instruction"
    id_column: str | None = None
    limit: int | None = Field(default=None, ge=1)


class SamplingSettings(Section):
    temperature: float = Field(default=0.0, ge=0.0)
    """0 means greedy."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    max_new_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0


class VLLMSettings(Section):
    """vLLM engine options (used with `generation.engine: vllm`)."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    """Share of GPU memory vLLM may take (vLLM's default when unset); on vLLM-CPU the share of host memory
    (default 0.25)."""
    max_model_len: int | None = Field(default=None, ge=16)
    """Longest prompt + answer in tokens (default: the model's)."""
    max_lora_rank: int = Field(default=64, ge=1)
    enforce_eager: bool = False
    """Run the model eagerly: no CUDA graphs or torch.compile, so the engine starts in far less time and
    generates more slowly (short jobs, tests)."""


class OpenAISettings(Section):
    """An OpenAI-compatible chat-completions server (vLLM's OpenAI server, llama.cpp, TGI, OpenAI, ...)."""

    base_url: str
    """The API root, e.g. `http://localhost:8000/v1`."""
    model: str
    """The model name the server knows (vLLM: `--served-model-name`)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (null: a local server without auth). The key itself is never
    written to the run directory or the logs."""
    max_concurrency: int = Field(default=8, ge=1)
    """Requests in flight at once."""
    timeout: float = Field(default=300.0, gt=0.0)
    """Seconds per request."""
    max_retries: int = Field(default=5, ge=0)
    """Retries with exponential backoff on 429, 5xx, timeouts and connection errors."""


class EngineSettings(Section):
    """Which engine runs a role's model (`hf`, `vllm` or `openai`) and its options."""

    engine: Literal["hf", "vllm", "openai"] = "hf"
    """`hf`: polyrise's transformers engine; `vllm`: vLLM's offline engine (extra `vllm`, or `vllm-cpu`);
    `openai`: a server speaking the chat-completions API (`openai` section)."""
    model: str | None = None
    """A model spec for `hf`/`vllm` (the policy's is `model.spec` and then its iterates)."""
    batch_size: int = Field(default=16, ge=1)
    """`hf`/`vllm`: prompts per batch."""
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    openai: OpenAISettings | None = None

    @model_validator(mode="after")
    def _engine_complete(self) -> EngineSettings:
        if self.engine == "openai" and self.openai is None:
            raise ValueError("engine 'openai' needs an `openai` section (base_url, model)")
        if self.engine != "openai" and self.openai is not None:
            raise ValueError(f"an `openai` section is only used by engine 'openai', not {self.engine!r}")
        return self


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
    """Bounds of the pair filters in `rewarding.py`."""

    min_length_ratio: float = Field(default=0.3, gt=0.0)
    """len(chosen) / len(rejected), in characters, must lie in [min, max]."""
    max_length_ratio: float = Field(default=3.0, gt=0.0)
    repeated_line_limit: int = Field(default=5, ge=2)
    """A text where one non-empty line occurs this many times is degenerate."""
    langid_min_chars: int = Field(default=20, ge=0)
    """Texts shorter than this are not language-checked (py3langid is unreliable on them)."""

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


class JudgeSettings(EngineSettings):
    """The judge of pairwise win rates: a local model (`hf`/`vllm` with `model`) or an `openai` endpoint."""

    max_new_tokens: int = Field(default=512, ge=1)

    @model_validator(mode="after")
    def _judge_model(self) -> JudgeSettings:
        if self.engine != "openai" and self.model is None:
            raise ValueError(f"a judge on engine {self.engine!r} needs judge.model (a model spec)")
        return self


class EvalTask(Section):
    """One evaluation, run by `polyrise eval` or after every iteration of `polyrise run`."""

    task: Literal["mgsm", "judge", "choice", "translation", "classify", "reflik"]
    source: str = ""
    """mgsm: a JSONL/TSV path (may hold `{lang}`), `hf:<name>` or `gsm-symbolic`; judge: instructions
    (X-AlpacaEval JSON or JSONL, `{lang}`); choice: `xnli`, `xcopa`, `pawsx` or a JSONL path with `{lang}`;
    translation: aligned JSONL files with `{lang}` (id + instruction); classify: JSONL (id, lang, text, label),
    may hold `{lang}`; reflik: reference answers in alpaca_eval format (instruction + output, `{lang}`), e.g. the
    GPT-4-turbo X-AlpacaEval answers."""
    name: str | None = None
    """Key of the scores (default: the task, or the choice preset)."""
    langs: list[str] | None = None
    """Default: the run's source and target languages."""
    limit: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)
    """Generation length; reflik: the number of each reference answer's first tokens that are scored."""
    few_shot: int = Field(default=0, ge=0)
    reference: str | None = None
    """judge: reference outputs in alpaca_eval format (`{lang}`); without it, M(t+1) is judged against M(t)."""
    judge: JudgeSettings | None = None
    normalize: Literal["chars", "tokens", "none"] = "chars"
    """choice and classify (loglik): length normalisation of the option log-likelihood."""
    labels: list[str] | None = Field(default=None, min_length=2)
    """classify: the label set (default: the sorted labels in the data); other labels in the data are errors."""
    constrain: Literal["loglik", "generate"] = "loglik"
    """classify: pick the label by log-likelihood, or decode it with every non-label token masked out."""
    demos: str | None = None
    """classify: JSONL of demonstrations (`{lang}`); default: the other items of the same language. `few_shot` of
    them precede every item."""

    @field_validator("langs")
    @classmethod
    def _known_langs(cls, codes: list[str] | None) -> list[str] | None:
        for code in codes or []:
            get_language(code)
        return codes

    @model_validator(mode="after")
    def _complete(self) -> EvalTask:
        if not self.source and self.task != "mgsm":
            raise ValueError(f"task {self.task!r} needs a source")
        if self.task == "judge" and self.judge is None:
            raise ValueError("task 'judge' needs a judge (judge.model, or judge.engine openai with an openai section)")
        return self

    @property
    def key(self) -> str:
        if self.name:
            return self.name
        return self.source if self.task == "choice" and "/" not in self.source else self.task


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


class RunConfig(Section):
    name: str = "run"
    method: str = "language-imbalance"
    """A module of `polyrise.methods`: `language-imbalance` (the self-rewarding DPO loop) or `question-alignment`
    (one SFT step on question translation pairs, `alignment` section, evaluated on trained and unseen languages)."""
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
    training: SerializeAsAny[TrainingSettings] = Field(default_factory=DPOSettings)
    """The method's training settings (`DPOSettings` for language-imbalance, `SFTSettings` for question-alignment)."""
    heldout: HeldoutSettings | None = Field(default_factory=HeldoutSettings)
    evaluation: list[EvalTask] = Field(default_factory=list)
    """Evaluations of M0 and of every new iterate."""
    alignment: AlignmentSettings | None = None
    """Question-alignment data; needed by `method: question-alignment`."""
    stage_processes: bool = True
    """Run every stage that loads a model in its own process, so GPU and host memory are returned between stages
    (a vLLM engine and a trainer never hold the GPU at once). false: one process (small models, debugging)."""

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


def load_config(path: str | Path, overrides: dict[str, object] | None = None) -> RunConfig:
    """Read a YAML run config; every problem is one PolyriseError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise PolyriseError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {key}: {msg}")
        raise PolyriseError("\n".join(problems)) from None
