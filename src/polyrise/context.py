"""What a method sees of its run, below the methods and above everything they use: the run's common settings
(`RunSettings`, which `polyrise.config` extends with the methods' own sections), the `Stage` a method declares,
and `RunContext`, the services the runner gives a method (its engines, its paths, its training stage)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from polyrise.evaluation.base import TaskSettings
from polyrise.generation import Generator
from polyrise.generation.cache import GenerationCache
from polyrise.io import path_component_problem
from polyrise.langid import LangIdSettings
from polyrise.languages import get_language
from polyrise.layout import RunLayout
from polyrise.settings import (
    ClusterSettings,
    GenerationSettings,
    HeldoutSettings,
    ModelSettings,
    PromptSource,
    Section,
    Seed,
    TrackingSettings,
)
from polyrise.training.settings import DPOSettings, TrainingSettings

S = TypeVar("S", bound=Section)


class RunSettings(Section):
    """The sections every run has, whatever its method. `polyrise.config.RunConfig` adds the method's own
    sections (`filters`, `alignment`, ...) and validates `training` and `evaluation` as their classes."""

    name: str = "run"
    """The run directory's name under `output_dir`: one path component."""
    method: str = "language-imbalance"
    """A method of `polyrise.plugins.METHODS`: `language-imbalance` (the self-rewarding DPO loop),
    `implicit-cross-lingual` (DPO on pairs ranked by the implicit reward, `implicit_reward` section),
    `question-alignment` (one SFT step on question translation pairs, `alignment` section, evaluated on trained and
    unseen languages), `wrong-language-dpo` (DPO preferring the on-target answer in L over a wrong-language one,
    `wrong_language` section) or `cross-lingual-grpo` (online GRPO with language and agreement rewards, all in
    `training`)."""
    output_dir: Path = Path("runs")
    seed: Seed = 0
    iterations: int = Field(default=1, ge=1, le=1000)
    model: ModelSettings = Field(default_factory=ModelSettings)
    source_lang: str = "en"
    languages: list[str] = Field(default_factory=lambda: ["es", "de", "fr"])
    """Target languages (besides `source_lang`)."""
    prompts: PromptSource = Field(default_factory=PromptSource)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    langid: LangIdSettings = Field(default_factory=LangIdSettings)
    """How every language judgement of the run is made: the pairs' filter, held-out answers, MGSM answers."""
    training: SerializeAsAny[TrainingSettings] = Field(default_factory=DPOSettings)
    """The method's training settings (its `training` class: `DPOSettings`, `SFTSettings`, ...)."""
    heldout: HeldoutSettings | None = Field(default_factory=HeldoutSettings)
    evaluation: list[SerializeAsAny[TaskSettings]] = Field(default_factory=list)
    """Evaluations of M0 and of every new iterate (each the settings class of the task its `task` key names)."""
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    """Where the trainer's and polyrise's per-iteration metrics are tracked (default: nowhere)."""
    cluster: ClusterSettings | None = None
    """A Ray cluster for the engines and the training (`backend: ray`, `address`); none: this machine only."""
    stage_processes: bool = True
    """Run every stage that loads a model in its own process, so GPU and host memory are returned between stages
    (a vLLM engine and a trainer never hold the GPU at once). false: one process (small models, debugging)."""

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        if problem := path_component_problem(name):
            raise ValueError(f"{problem}: the run directory is output_dir/name")
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
    def _source_not_target(self) -> RunSettings:
        if self.source_lang in self.languages:
            raise ValueError(f"source_lang {self.source_lang!r} is also listed in languages")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def langs(self) -> list[str]:
        """The source language, then the targets."""
        return [self.source_lang, *self.languages]

    def section(self, key: str, cls: type[S]) -> S:
        """The method section `key` (e.g. `filters`), typed: the methods' own sections are composed by
        `polyrise.config`, so this class does not declare them."""
        value = getattr(self, key, None)
        if not isinstance(value, cls):
            raise KeyError(f"this run's config has no `{key}` section of {cls.__name__}")
        return value

    def to_yaml(self) -> str:
        """The resolved config as YAML: the run dir's `config.yaml`, and what `polyrise run --dry-run` prints."""
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class Stage:
    """One step of a run, declared next to its body: it reruns when the contents of its `inputs`, the weights
    of its `models` or its `settings` change, or when an output is missing."""

    name: str
    """Also its manifest key, e.g. `iter_0/generate`."""
    run: Callable[[], dict[str, Any]]
    """The body; returns the counts shown and recorded (JSON-able)."""
    outputs: Sequence[Path]
    inputs: Sequence[Path] = ()
    """Files (sha256 of their contents) or model dirs (their fingerprint); a missing one hashes as missing."""
    models: Sequence[str] = ()
    """Model specs whose weights' fingerprints are hashed."""
    settings: Any = None
    """JSON-able settings that decide the outputs."""
    loads_model: bool = True
    """Then it runs in its own process when `stage_processes` is on."""
    distributed: bool = False
    """A training stage: launched under accelerate when `training.num_processes`/`accelerate_config` ask."""


class RunContext(Protocol):
    """What the runner gives a method: the config, the paths, the cache, one engine at a time, and its training."""

    @property
    def config(self) -> RunSettings: ...

    @property
    def layout(self) -> RunLayout: ...

    @property
    def cache(self) -> GenerationCache: ...

    def generator(self, spec: str) -> Generator:
        """The policy at `spec` (M0 or an iterate) on the policy's engine."""
        ...

    def translator(self, spec: str) -> Generator:
        """The translator: the policy at `spec` unless `generation.translator` names a fixed one."""
        ...

    def model_spec(self, k: int) -> str:
        """M(k): the configured model for k = 0, then the iterates."""
        ...

    def translator_models(self, t: int) -> list[str]:
        """The models whose weights decide iteration `t`'s translations."""
        ...

    def translator_settings(self) -> dict[str, Any]:
        """The settings that decide translations (the translator role and the model settings)."""
        ...

    def train_stage(self, t: int) -> Stage:
        """Iteration `t`'s training of M(t+1) from M(t) by the method's trainer on its data file of `t`."""
        ...
