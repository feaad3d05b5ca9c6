"""Every plug-in point of polyrise, one idiom: a name (as a config writes it) → "module:Class", imported only when
that name is used (as lm-evaluation-harness maps model names). Adding a method, a task or an engine is one module
plus one line here; docs/architecture.md gives the three steps of each."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from polyrise.errors import PolyriseError

METHODS: dict[str, str] = {
    "language-imbalance": "polyrise.methods.language_imbalance:LanguageImbalance",
    "wrong-language-dpo": "polyrise.methods.wrong_language_dpo:WrongLanguageDPO",
    "cross-lingual-grpo": "polyrise.methods.cross_lingual_grpo:CrossLingualGRPO",
    "implicit-cross-lingual": "polyrise.methods.implicit_cross_lingual:ImplicitCrossLingual",
    "question-alignment": "polyrise.methods.question_alignment:QuestionAlignment",
}
"""`method:` of a run config → its class (`polyrise.methods.Method`)."""

TASKS: dict[str, str] = {
    "mgsm": "polyrise.evaluation.math:MathTask",
    "judge": "polyrise.evaluation.judge:JudgeTask",
    "choice": "polyrise.evaluation.choice:ChoiceTask",
    "translation": "polyrise.evaluation.translation:TranslationTask",
    "classify": "polyrise.evaluation.fewshot:ClassifyTask",
    "reflik": "polyrise.evaluation.reflik:ReflikTask",
}
"""`task:` of an evaluation → its settings class (`polyrise.evaluation.base.TaskSettings`, whose `run` evaluates)."""

ENGINES: dict[str, str] = {
    "hf": "polyrise.generation.hf:HFEngine",
    "vllm": "polyrise.generation.vllm:VLLMEngine",
    "openai": "polyrise.generation.openai:OpenAIEngine",
}
"""`engine:` of a generation role → its class (`polyrise.generation.Engine`, built by `from_settings`)."""


def load(kind: str, mapping: Mapping[str, str], name: str) -> Any:
    """The class `mapping` names `name` (`kind` is what the error calls it: "method", "task", "engine")."""
    if name not in mapping:
        raise PolyriseError(f"unknown {kind} {name!r}; known: {', '.join(mapping)}")
    module, _, attr = mapping[name].partition(":")
    return getattr(importlib.import_module(module), attr)
