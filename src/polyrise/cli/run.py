"""`polyrise run`, `init`, `align`, and the hidden `stage` that a run starts for each stage process."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from polyrise import api
from polyrise.cli.options import AccelerateConfig, NumProcesses, Verbose, comma_list, console


def _resumable(pipeline: Callable[[], Path]) -> Path:
    """Run `pipeline` (a run or an alignment); Ctrl-C prints one line naming the stage and the command that resumes,
    exit 130."""
    from polyrise.runner import StageInterrupted

    resume = shlex.join(["polyrise", *sys.argv[1:]])
    try:
        return pipeline()
    except StageInterrupted as e:
        print(f"{e}; to resume: {resume}", file=sys.stderr)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the first stage or between two
        print(f"interrupted; finished stages are kept; to resume: {resume}", file=sys.stderr)
        raise typer.Exit(130) from None


def run(
    config: Path,
    iterations: Annotated[int | None, typer.Option(help="override `iterations`")] = None,
    num_processes: NumProcesses = None,
    accelerate_config: AccelerateConfig = None,
    output_dir: Annotated[Path | None, typer.Option(help="override `output_dir`")] = None,
    name: Annotated[str | None, typer.Option(help="override `name` (the run dir is output_dir/name)")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="run on this Ray cluster: HOST:PORT of its head, or auto (`cluster.address`)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="print the resolved config, each stage as done or to run, and the work; write nothing")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Run the loop of a YAML config's method (resumes where it stopped)."""
    cfg = api.load_run_config(
        config,
        iterations=iterations,
        name=name,
        output_dir=output_dir,
        num_processes=num_processes,
        accelerate_config=accelerate_config,
        ray_address=ray_address,
    )
    if dry_run:
        _print_plan(api.plan(cfg))
        return
    run_dir = _resumable(lambda: api.run(cfg, verbose=verbose, console=console))
    console.print(f"run directory: {run_dir}")


def _print_plan(plan: api.Plan) -> None:
    from rich.table import Table

    console.print(plan.config.to_yaml(), markup=False, highlight=False)
    stages = Table(title=f"stages of {plan.config.run_dir}")
    stages.add_column("stage")
    stages.add_column("status")
    for stage_name, status in plan.stages:
        stages.add_row(stage_name, status)
    console.print(stages)
    work = Table(title="estimated work per iteration")
    work.add_column("what")
    work.add_column("count", justify="right")
    for what, count in plan.work.items():
        work.add_row(what, str(count))
    console.print(work)


def init(
    out: Annotated[Path, typer.Option("--out", "-o", help="the config file to write")] = Path("polyrise.yaml"),
    preset: Annotated[
        str, typer.Option(help="quickstart (embedded model, CPU), paper (Llama-3-8B, GPUs), sandbox (docs/sandbox.md)")
    ] = "quickstart",
    model: Annotated[str | None, typer.Option("--model", "-m", help="model.spec: embedded:<name>, HF id, dir")] = None,
    languages: Annotated[str | None, typer.Option(help="target languages, comma-separated, e.g. es,de,fr")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing --out")] = False,
) -> None:
    """Write a commented run config from a preset (the example configs), with your model and languages."""
    codes = comma_list(languages) if languages is not None else None
    out = api.init(out, preset, model=model, languages=codes, force=force)
    console.print(f"wrote {out}; run it with: polyrise run {out} (--dry-run first shows what it would do)")


def stage(run_dir: Path, name: str, result: Path, verbose: Verbose = False) -> None:
    """A stage process of `polyrise run` (started by the run itself): one stage, its outcome to RESULT."""
    from polyrise.runner import run_stage

    run_stage(run_dir, name, result, verbose)


def align(config: Path, verbose: Verbose = False) -> None:
    """Question alignment: SFT on question translation pairs of a config's `alignment` section, evaluated before
    and after on trained and unseen languages (the same as `run` with `method: question-alignment`)."""
    run_dir = _resumable(lambda: api.align(config, verbose=verbose, console=console))
    console.print(f"run directory: {run_dir}  (report: polyrise report {run_dir})")
