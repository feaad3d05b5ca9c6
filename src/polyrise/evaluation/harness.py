"""Optional bridge to lm-evaluation-harness (`pip install 'polyrise[eval]'`) for its ready-made tasks.

MGSM is refused here. What was checked (lm-eval 0.4.13, datasets 5.2): every MGSM task config
(`lm_eval/tasks/mgsm/direct/direct_yaml`, `en_cot/cot_yaml`, `native_cot/cot_yaml`, and
`japanese_leaderboard/ja_leaderboard_mgsm.yaml`) has `dataset_path: juletxara/mgsm`, a hub dataset that
was published with a loading script (`mgsm.py`); `datasets` ≥ 4 refuses scripts ("Dataset scripts are no
longer supported, but found mgsm.py", `datasets/load.py`), reported as lm-evaluation-harness issue #3390.
A maintainer's comment of 2026-06 on that issue's fix PRs says the hub repo has since been given parquet
files, so the harness may load it again; polyrise's own `polyrise eval --task mgsm` reads MGSM locally and
does not depend on that, so it stays the supported route (`allow_mgsm=True` skips the refusal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyrise.errors import PolyriseError, missing_extra

_MGSM_TASK_PREFIXES = ("mgsm", "ja_leaderboard_mgsm")


def _check_tasks(tasks: Sequence[str], allow_mgsm: bool) -> None:
    if not tasks:
        raise PolyriseError("no lm-eval tasks given")
    mgsm = [t for t in tasks if t.startswith(_MGSM_TASK_PREFIXES)]
    if mgsm and not allow_mgsm:
        raise PolyriseError(
            f"refusing lm-eval task(s) {', '.join(mgsm)}: lm-eval's MGSM tasks load the hub dataset "
            "juletxara/mgsm, a script-based dataset (mgsm.py) that datasets >= 4 cannot load. "
            "Use `polyrise eval --task mgsm` instead, which reads MGSM locally."
        )


def _import_lm_eval() -> Any:
    if problem := missing_extra("lm_eval", "eval", "polyrise harness (lm-evaluation-harness)"):
        raise PolyriseError(problem)
    import lm_eval

    return lm_eval


def run_harness(
    model_dir_or_id: str,
    tasks: list[str],
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    *,
    num_fewshot: int | None = None,
    dtype: str = "auto",
    allow_mgsm: bool = False,
) -> dict[str, Any]:
    """Run lm-eval's `simple_evaluate` with its `hf` model on a polyrise model spec; returns lm-eval's result dict.

    `model_dir_or_id` is anything `polyrise` accepts as a model (`embedded:…`, an HF id, a local dir, a LoRA
    adapter dir: passed to lm-eval as `pretrained=<base>,peft=<adapter>`). The per-task metrics are under
    the result's `"results"` key.
    """
    _check_tasks(tasks, allow_mgsm)
    lm_eval = _import_lm_eval()
    from polyrise.models import resolve_model

    resolved = resolve_model(model_dir_or_id)
    if resolved.base is not None:
        model_args = f"pretrained={resolved.base.path},peft={resolved.path},dtype={dtype}"
    else:
        model_args = f"pretrained={resolved.path},dtype={dtype}"
    out: dict[str, Any] | None = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=device,
        limit=limit,
        log_samples=False,
    )
    if out is None:  # non-zero ranks of a distributed run
        raise PolyriseError("lm-eval returned no results (not the main process?)")
    return out
