"""`polyrise sandbox build`, `study`: the cloned-language sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyrise import api
from polyrise.cli.options import comma_list, console, print_table
from polyrise.errors import PolyriseError

ALIGN_PAIRS_OPTION = typer.Option(
    min=1,
    help="the English alignment's strength: its DPO + NLL pairs, one epoch (default: AlignSettings, 200; at most the "
    "English task examples)",
)

app = typer.Typer(
    no_args_is_help=True, help="The cloned-language sandbox: a tiny model with a known language imbalance."
)


@app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="output dir (model/, prompts/, eval/, sandbox.json)")],
    seed: int = 0,
    english_task: Annotated[int | None, typer.Option(help="English task examples (default: DataMix)")] = None,
    clone_task: Annotated[int | None, typer.Option(help="task examples per clone")] = None,
    translation: Annotated[int | None, typer.Option(help="translation examples per clone and direction")] = None,
    epochs: Annotated[float | None, typer.Option(help="training epochs (default: PretrainSettings)")] = None,
    align_pairs: Annotated[int | None, ALIGN_PAIRS_OPTION] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads (part of a build's reproducibility)")] = 1,
) -> None:
    """Train the sandbox's M0 from scratch on an imbalanced mix, write its data, and print its M0 numbers."""
    from polyrise.sandbox import summary_table

    info = api.sandbox_build(
        out,
        seed,
        english_task=english_task,
        clone_task=clone_task,
        translation=translation,
        epochs=epochs,
        align_pairs=align_pairs,
        threads=threads,
        console=console,
    )
    title = "M0: task accuracy (greedy, final integer exact) and self-translation exact match (q: questions only)"
    print_table(title, *summary_table(info), [out / "sandbox.json", info.model_dir, info.aligned_dir])
    took = info.seconds
    console.print(
        f"built in {took['total']:.0f} s (training {took['train']:.0f} s, English alignment {took['align']:.0f} s)"
    )


@app.command("study")
def study(
    out: Annotated[Path, typer.Option("--out", "-o", help="study dir (sandbox-seed<S>/, runs/, study.md)")],
    config: Annotated[Path, typer.Option(help="base run config")] = Path("examples/sandbox.yaml"),
    seeds: Annotated[str, typer.Option(help="comma-separated sandbox seeds")] = "0,1,2",
    variants: Annotated[
        str,
        typer.Option(
            help="comma-separated: rewarding, swapped, nll0, no-filters (LIDR and its controls); icr, icr-previous, "
            "icr-random, icr-no-length-control, icr-native-instruction (Implicit Cross-Lingual Rewarding, its "
            "reference after M0 the previous iterate, its random-pairs control, and its ablations); "
            "wrong-language-dpo; cross-lingual-grpo (label-free rewards), grpo-gold (its oracle control)"
        ),
    ] = "rewarding",
    iterations: Annotated[int, typer.Option(min=1)] = 3,
    align_pairs: Annotated[int | None, ALIGN_PAIRS_OPTION] = None,
) -> None:
    """Run the pipeline on one sandbox per seed for each variant; print MGSM accuracy as mean ± sd over seeds.

    Reruns add to the same study dir (e.g. controls with fewer iterations); the summary covers every run in it.
    """
    try:
        seed_list = [int(s) for s in comma_list(seeds)]
    except ValueError:
        raise PolyriseError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    api.sandbox_study(
        out,
        config,
        seeds=seed_list,
        variants=comma_list(variants),
        iterations=iterations,
        align_pairs=align_pairs,
        console=console,
    )
    console.print((out / "study.md").read_text())
    console.print(f"written: {out / 'study.md'}, {out / 'study.json'}, {out / 'study.png'}")
