"""`polyrise export`: an iteration's training pairs as a Hugging Face `datasets` dataset, saved to disk and/or
pushed to the Hub. The rows are what the run's own trainer is given, TRL's conversational format (`prompt`, `chosen`,
`rejected` for DPO; `prompt`, `completion` for SFT), so `DPOTrainer`/`SFTTrainer` take the dataset as it is, plus
each pair's metadata (`id`, `lang`, and `via` or `target`)."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from polyrise.config import load_config
from polyrise.errors import PolyriseError
from polyrise.io import read_jsonl
from polyrise.layout import RunLayout
from polyrise.methods import load_method
from polyrise.plugins import METHODS


def _training_data(layout: RunLayout, iteration: int) -> tuple[Path, type[BaseModel]]:
    """The file and record of iteration `iteration`'s training data, as the run's method (its `config.yaml`)
    names them; a dir without one: the first method whose data file is there. Missing: an error naming it."""
    if layout.config.is_file():
        methods = [load_method(load_config(layout.config).method)]
    else:
        methods = [load_method(name) for name in METHODS]
    for method in methods:
        path = layout.file(iteration, method.data_file)
        if path.is_file():
            return path, method.record
    raise PolyriseError(
        f"{layout.file(iteration, methods[0].data_file)}: no such file: iteration {iteration} of {layout.root} has "
        "no training data (not a run directory, or that iteration's data stage has not run)"
    )


def pairs_dataset(run_dir: Path, iteration: int) -> Any:
    """Iteration `iteration`'s training data as a `datasets.Dataset` (`pairs.jsonl` of `PreferencePair`s,
    `question_pairs.jsonl` of `QuestionPair`s, ...: the method's)."""
    from datasets import Dataset

    path, record = _training_data(RunLayout(run_dir), iteration)
    pairs: list[Any] = read_jsonl(path, record)  # the method's record, with `trl_example()`
    if not pairs:
        raise PolyriseError(f"{path}: no pairs to export (every pair was filtered out?)")
    return Dataset.from_list([(e := p.trl_example()) | p.model_dump(exclude=set(e)) for p in pairs])


def _refuse_destructive(out: Path, run_dir: Path) -> None:
    """`--out` must not be, contain or lie inside the run, nor be the working directory: replacing it would
    delete what polyrise did not write, or the run it exports from."""
    target, run = out.resolve(), run_dir.resolve()
    if target == Path.cwd().resolve():
        raise PolyriseError(f"--out {out}: is the working directory; export into a new directory")
    if target == run or run in target.parents or target in run.parents:
        raise PolyriseError(f"--out {out}: is, holds or lies inside the run {run_dir}; export outside the run")


@contextmanager
def _on_the_hub(repo_id: str) -> Iterator[None]:
    """Any failure of the Hub client inside (no network, offline mode, a refused token) as one error."""
    try:
        yield
    except Exception as e:  # the Hub client raises many types (its HTTP library's, OSError, HTTP statuses)
        raise PolyriseError(
            f"--push-to-hub {repo_id}: cannot reach the Hugging Face Hub or push there ({type(e).__name__}: "
            f"{str(e)[:300]}); check the network, HF_HUB_OFFLINE and the token's write access"
        ) from None


def hub_token(repo_id: str) -> str:
    """The Hub token (`HF_TOKEN`, else the one `hf auth login` stored), checked with the Hub before any work: an
    unreachable Hub or a token it refuses is one error."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise PolyriseError(
            "--push-to-hub needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`"
        )
    with _on_the_hub(repo_id):
        HfApi().whoami(token=token)
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
        token = hub_token(push_to_hub)
    if out is not None:
        _refuse_destructive(out, run_dir)
        if out.exists() and not force:
            raise PolyriseError(f"{out} exists; pass --force to replace it")
        if out.is_dir() and force and not (out / "dataset_info.json").is_file():
            raise PolyriseError(f"--out {out}: not a dataset polyrise exported; not replaced, even with --force")
    dataset = pairs_dataset(run_dir, iteration)
    if out is not None:
        _save(dataset, out)
    if push_to_hub is not None:
        with _on_the_hub(push_to_hub):
            dataset.push_to_hub(push_to_hub, private=private, token=token)
    return dataset


def _save(dataset: Any, out: Path) -> None:
    """`save_to_disk` into a temporary dir beside `out`, renamed into place: `out` is whole or as it was. The
    temporary dirs that killed exports (dead PIDs) left beside it are removed first."""
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):  # of an export killed by a signal
        pid = stale.name.removeprefix(f".{out.name}.").removesuffix(".tmp")
        try:
            os.kill(int(pid), 0)  # raises for a process that is gone
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, OSError):  # not a PID of ours to judge, or a live process of another user
            pass
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
