"""The leaf settings: config sections that engines, sources, evaluation tasks and the runner read.

Nothing here imports polyrise above `plugins`; `polyrise.config` composes these, the trainers' settings
(`polyrise.training.settings`) and the methods' own sections into the run config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyrise.plugins import ENGINES

SEEDS = 2**32
"""Seeds are in [0, 2^32): what numpy's and torch's generators take."""
MAX_TOKENS = 2**20
"""The most tokens a setting may ask for (an answer, a context): beyond every model's context."""
MAX_COUNT = 10**9
"""The largest count setting (a limit of items): larger is no limit at all, only a typo."""
Seed = Annotated[int, Field(ge=0, lt=SEEDS)]


class Section(BaseModel):
    """A config section: an unknown key is an error, and so is an infinite or NaN number; `~` in a path setting is
    the home directory. Every numeric field is bounded on both sides (`tests/test_fuzz.py` checks each at its
    bounds), so a mistyped value is one error at validation, not a failure after hours of work."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _home(cls, value: Any) -> Any:
        """`~` expands in every `Path` setting of every section (output_dir, accelerate_config, ...), as in a shell:
        left as is, it would be a directory named `~` for polyrise and the home directory for other tools."""
        try:
            return value.expanduser() if isinstance(value, Path) else value
        except RuntimeError as e:  # `~name` of no such user
            raise ValueError(f"{value}: {e}") from None


class TrackingSettings(Section):
    """Where a run's metrics are tracked (`polyrise.tracking`): the trainer's and polyrise's per iteration."""

    backend: Literal["none", "tensorboard", "trackio", "wandb", "mlflow"] = "none"
    """`tensorboard`: event files under `<run dir>/tensorboard/`; the others: their own store or server, set up
    through their usual environment variables (WANDB_API_KEY, MLFLOW_TRACKING_URI, ...)."""
    project: str = "polyrise"
    """The project (trackio, wandb) or experiment (mlflow) the run's tracker runs belong to."""


class ModelSettings(Section):
    spec: str = "embedded:smollm2-135m-instruct"
    """`embedded:<name>`, a Hugging Face id, a local model dir, or a dir holding a LoRA adapter."""
    chat_template: str | None = None
    """Jinja chat template for models whose tokenizer has none."""
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 on CUDA, float32 on CPU."""


class SamplingSettings(Section):
    temperature: float = Field(default=0.0, ge=0.0, le=10.0)
    """0 means greedy."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    max_new_tokens: int = Field(default=256, ge=1, le=MAX_TOKENS)
    stop: list[str] = Field(default_factory=list)
    seed: Seed = 0


class VLLMSettings(Section):
    """vLLM engine options (used with `generation.engine: vllm`)."""

    tensor_parallel_size: int = Field(default=1, ge=1, le=1024)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    """Share of GPU memory vLLM may take (vLLM's default when unset); on vLLM-CPU the share of host memory
    (default 0.25)."""
    max_model_len: int | None = Field(default=None, ge=16, le=MAX_TOKENS)
    """Longest prompt + answer in tokens (default: the model's)."""
    max_lora_rank: int = Field(default=64, ge=1, le=65536)
    enforce_eager: bool = False
    """Run the model eagerly: no CUDA graphs or torch.compile, so the engine starts in far less time and
    generates more slowly (short jobs, tests)."""


class OpenAISettings(Section):
    """An OpenAI-compatible chat-completions server (vLLM's OpenAI server, llama.cpp, TGI, OpenAI, ...)."""

    base_url: str | list[str]
    """The API root, e.g. `http://localhost:8000/v1`; or a list of servers of the same model (one vLLM server per
    GPU or node), whose requests are spread over them. The first names the model in the cache: adding or dropping
    the others keeps cached generations. A URL with credentials (`user:pass@`) is refused: it would be printed and
    written to config.yaml; the key goes in the environment variable `api_key_env` names."""

    model: str
    """The model name the server knows (vLLM: `--served-model-name`)."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (null: a local server without auth). The key itself is never
    written to the run directory or the logs."""
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    """Requests in flight at once."""
    timeout: float = Field(default=300.0, gt=0.0, le=86400.0)
    """Seconds each attempt of a request may take, the whole answer included however slowly it arrives; a server
    asking (Retry-After) to wait longer than this fails the request at once."""
    max_retries: int = Field(default=5, ge=0, le=100)
    """Retries with exponential backoff on 429, 5xx, timeouts and connection errors."""

    @property
    def base_urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    @field_validator("base_url")
    @classmethod
    def _url(cls, base_url: str | list[str]) -> str | list[str]:
        urls = [base_url] if isinstance(base_url, str) else base_url
        if not urls:
            raise ValueError("needs at least one URL")
        for url in urls:
            parts = urlsplit(url)
            if parts.username is not None or parts.password is not None:  # never echoed: it holds a secret
                bare = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
                raise ValueError(
                    "a URL with credentials (user:password@) is refused, as it would be printed and written to "
                    f"config.yaml: give {bare} and the key in the environment variable named by api_key_env "
                    "(--api-key-env)"
                )
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s) URL with a host, e.g. http://localhost:8000/v1")
        return base_url


class EngineSettings(Section):
    """Which engine runs a role's model (`hf`, `vllm` or `openai`) and its options."""

    engine: str = "hf"
    """`hf`: polyrise's transformers engine; `vllm`: vLLM's offline engine (extra `vllm`, or `vllm-cpu`);
    `openai`: a server speaking the chat-completions API (`openai` section)."""
    model: str | None = None
    """A model spec for `hf`/`vllm` (the policy's is `model.spec` and then its iterates)."""
    batch_size: int = Field(default=16, ge=1, le=65536)
    """`hf`/`vllm`: prompts per batch."""
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    openai: OpenAISettings | None = None

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, name: str) -> str:
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
        return name

    @model_validator(mode="after")
    def _engine_complete(self) -> EngineSettings:
        if self.engine == "openai" and self.openai is None:
            raise ValueError("engine 'openai' needs an `openai` section (base_url, model)")
        if self.engine != "openai" and self.openai is not None:
            raise ValueError(f"an `openai` section is only used by engine 'openai', not {self.engine!r}")
        return self


class ClusterSettings(Section):
    """Where the run's work goes past this machine: a Ray cluster (extra `ray`). Every stage that generates or scores
    spreads its requests over engine replicas that Ray places, and a multi-process training runs `accelerate launch`
    on every node; the driver (`polyrise run`) alone writes the run's files."""

    backend: Literal["ray"] = "ray"
    address: str = "auto"
    """`auto`: the cluster this machine belongs to (`ray start` ran here); or `HOST:PORT` of its head (GCS)."""
    replicas: int | None = Field(default=None, ge=1, le=65536)
    """Engine replicas of a stage; default: one per GPU (per `tensor_parallel_size` GPUs with vLLM) when the
    cluster has GPUs, else one per node."""
    cpus_per_replica: float = Field(default=1.0, gt=0.0, le=1024.0)
    """CPUs Ray reserves for each replica on a CPU cluster (its torch uses what the node leaves free)."""


class JudgeSettings(EngineSettings):
    """The judge of pairwise win rates: a local model (`hf`/`vllm` with `model`) or an `openai` endpoint."""

    max_new_tokens: int = Field(default=512, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _judge_model(self) -> JudgeSettings:
        if self.engine != "openai" and self.model is None:
            raise ValueError(f"a judge on engine {self.engine!r} needs judge.model (a model spec)")
        return self


class PromptCheckSettings(Section):
    """The checks a self-translated prompt passes before anything is generated for it
    (`self_translation.prompt_drop_reason`); a prompt that fails one is dropped with its reason."""

    enabled: bool = True
    min_length_ratio: float = Field(default=0.15, gt=0.0, le=1000.0)
    """len(translation) / len(source), in characters, must lie in [min, max] (Chinese or Japanese run at about
    0.2-0.3 of English, hence the low floor)."""
    max_length_ratio: float = Field(default=4.0, gt=0.0, le=1000.0)
    repeat_limit: int = Field(default=4, ge=2, le=MAX_COUNT)
    """A phrase (up to 30 characters, with a letter) repeated this many times in a row, when the source does not
    repeat it so, is degenerate: `bien bien bien bien`."""

    @model_validator(mode="after")
    def _ordered(self) -> PromptCheckSettings:
        if self.min_length_ratio > self.max_length_ratio:
            raise ValueError("min_length_ratio must not exceed max_length_ratio")
        return self


class PromptSource(Section):
    """Where English prompts come from: the built-in set, a JSONL file (`id` + `instruction`), or an HF dataset."""

    source: str = "builtin:quickstart"
    """`builtin:<name>`, a path to a JSONL file, or `hf:<dataset name>`. A path with `{lang}` is read for the source
    language; where a method self-translates prompts, the files of the other languages that exist supply their
    translations as they are (rows joined on `id`), and only what they lack is self-translated."""
    split: str = "train"
    column: str = "instruction"
    id_column: str | None = None
    limit: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    per_iteration: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    """New prompts at each iteration: iteration t takes source prompts [t*N, (t+1)*N) (after `limit`); the source
    must hold iterations*N. None: every iteration answers the same prompts."""
    checks: PromptCheckSettings = Field(default_factory=PromptCheckSettings)
    """The checks of self-translated prompts (given translations are used as they are)."""


TranslationTemplate = Literal["polyrise", "lidr-reference"]
"""The self-translation instruction (`templates.translation_prompt`): polyrise's own wording, or the released LIDR
code's (utils/trans_prompts.py:1-5)."""


class GenerationSettings(Section):
    policy: EngineSettings = Field(default_factory=EngineSettings)
    """The engine that answers with the model being trained (M0, then each iterate): `hf` or `vllm`."""
    translator: EngineSettings | None = None
    """The engine and model that translate prompts and answers; default (null): the policy itself, as in the
    paper. A fixed translator (`hf`/`vllm` with `model`, or an `openai` endpoint) is an ablation."""
    answer: SamplingSettings = Field(default_factory=SamplingSettings)
    translate: SamplingSettings = Field(default_factory=lambda: SamplingSettings(max_new_tokens=256))
    system_prompt: str | None = None
    """A system turn before every chat the policy answers, translates and is scored on (part of the rendered prompt,
    so of the cache key); null: none (the chat template's own default, if it has one)."""
    translation_template: TranslationTemplate = "polyrise"
    """The self-translation instruction every translator is asked with."""

    def prompting(self) -> list[dict[str, str | None]]:
        """The settings above as a stage's settings entry: none at their defaults, so a run dir made before they
        existed keeps its stages."""
        chosen = {"system_prompt": self.system_prompt, "translation_template": self.translation_template}
        return [chosen] if chosen != {"system_prompt": None, "translation_template": "polyrise"} else []

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


class HeldoutSettings(Section):
    """A small held-out prompt set whose answers measure the off-target rate of M(t) vs M(t+1)."""

    prompts: PromptSource = Field(default_factory=lambda: PromptSource(source="builtin:heldout"))
    max_new_tokens: int = Field(default=128, ge=1, le=MAX_TOKENS)
