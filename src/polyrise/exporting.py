"""`polyrise export`: an iteration's training pairs as a Hugging Face `datasets` dataset, saved to disk and/or
pushed to the Hub. The rows are what the run's own trainer is given, TRL's conversational format (`prompt`, `chosen`,
`rejected` for DPO; `prompt`, `completion` for SFT), so `DPOTrainer`/`SFTTrainer` take the dataset as it is, plus
each pair's metadata (`id`, `lang`, and `via` or `target`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.records import PreferencePair, QuestionPair

PAIR_FILES: dict[str, type[PreferencePair] | type[QuestionPair]] = {
    "pairs.jsonl": PreferencePair,
    "question_pairs.jsonl": QuestionPair,
}
"""What an iteration trains on: language imbalance's preference pairs, question alignment's SFT pairs."""


def pairs_file(run_dir: Path, iteration: int) -> Path:
    """The pairs file of iteration `iteration` of `run_dir`; a missing one is an error naming it."""
    folder = run_dir / f"iter_{iteration}"
    for name in PAIR_FILES:
        if (folder / name).is_file():
            return folder / name
    raise PolyriseError(
        f"{folder / 'pairs.jsonl'}: no such file (nor question_pairs.jsonl): iteration {iteration} of {run_dir} "
        "has no pairs (not a run directory, or that iteration's pairs stage has not run)"
    )


def pairs_dataset(path: Path) -> Any:
    """The pairs of `path` (`pairs.jsonl` or `question_pairs.jsonl`) as a `datasets.Dataset`."""
    from datasets import Dataset

    pairs = read_jsonl(path, PAIR_FILES[path.name])
    if not pairs:
        raise PolyriseError(f"{path}: no pairs to export (every pair was filtered out?)")
    return Dataset.from_list([(e := p.trl_example()) | p.model_dump(exclude=set(e)) for p in pairs])


def hub_token() -> str:
    """The Hub token: `HF_TOKEN`, else the one `hf auth login` stored."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PolyriseError(
            "--push-to-hub needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`"
        )
    return token


def export_pairs(
    run_dir: Path,
    iteration: int,
    out: Path | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    force: bool = False,
) -> Any:
    """Export iteration `iteration`'s pairs: `save_to_disk` into `out` (atomically; an existing `out` is replaced
    only with `force`) and/or `push_to_hub` to the dataset repo `push_to_hub`. Every check (the token, the repo id,
    `out`, the pairs file) comes before any work. Returns the dataset."""
    if out is None and push_to_hub is None:
        raise PolyriseError("nothing to export to: give --out DIR, --push-to-hub REPO_ID, or both")
    token = None
    if push_to_hub is not None:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as e:
            raise PolyriseError(f"--push-to-hub {push_to_hub!r}: not a repo id such as user/name ({e})") from None
        token = hub_token()
    if out is not None and out.exists() and not force:
        raise PolyriseError(f"{out} exists; pass --force to replace it")
    dataset = pairs_dataset(pairs_file(run_dir, iteration))
    if out is not None:
        _save(dataset, out)
    if push_to_hub is not None:
        dataset.push_to_hub(push_to_hub, private=private, token=token)
    return dataset


def _save(dataset: Any, out: Path) -> None:
    """`save_to_disk` into a temporary dir beside `out`, renamed into place: `out` is whole or as it was."""
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_to_disk(str(tmp))
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink(missing_ok=True)
        os.replace(tmp, out)
    except OSError as e:
        raise PolyriseError(f"{out}: cannot write the dataset here ({e.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
