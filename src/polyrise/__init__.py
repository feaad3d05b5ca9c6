"""polyrise: multilingual self-improvement of large language models.

The Python API (`polyrise.api`) is here at the top level: `polyrise.run(config)`, `polyrise.evaluate(task, model)`,
`polyrise.report(run_dir)`, ... (docs/python-api.md). Each name is imported on first use, so `import polyrise`
loads neither torch nor transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from polyrise.api import (
        Analysis,
        Generated,
        Plan,
        align,
        analyze_logit_lens,
        analyze_similarity,
        analyze_transfer,
        eval_task,
        evaluate,
        export,
        generate,
        harness,
        init,
        load_run_config,
        merge_scores,
        pairs,
        plan,
        report,
        run,
        sandbox_build,
        sandbox_study,
        score,
        train,
        translate,
    )
    from polyrise.config import RunConfig, load_config
    from polyrise.errors import PolyriseError
    from polyrise.models import resolve_model
    from polyrise.settings import EngineSettings, SamplingSettings

_ELSEWHERE = {
    "RunConfig": "polyrise.config",
    "load_config": "polyrise.config",
    "PolyriseError": "polyrise.errors",
    "resolve_model": "polyrise.models",
    "EngineSettings": "polyrise.settings",
    "SamplingSettings": "polyrise.settings",
}
__all__ = [
    "Analysis",
    "EngineSettings",
    "Generated",
    "Plan",
    "PolyriseError",
    "RunConfig",
    "SamplingSettings",
    "align",
    "analyze_logit_lens",
    "analyze_similarity",
    "analyze_transfer",
    "eval_task",
    "evaluate",
    "export",
    "generate",
    "harness",
    "init",
    "load_config",
    "load_run_config",
    "merge_scores",
    "pairs",
    "plan",
    "report",
    "resolve_model",
    "run",
    "sandbox_build",
    "sandbox_study",
    "score",
    "train",
    "translate",
]


def __getattr__(name: str) -> Any:
    """Import an API name on first use (module `__getattr__`, PEP 562) and keep it here."""
    if name not in __all__:
        raise AttributeError(f"module 'polyrise' has no attribute {name!r}")
    value = getattr(import_module(_ELSEWHERE.get(name, "polyrise.api")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
