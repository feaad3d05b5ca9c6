"""`polyrise analyze logit-lens`, `similarity`, `transfer`: look inside models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyrise import api
from polyrise.cli.options import comma_list, print_table

app = typer.Typer(no_args_is_help=True, help="Look inside models: logit lens, representation similarity, transfer.")

AnalysisModels = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="label=SPEC or SPEC (label: its last path part); repeat to compare (before=… after=…)"
    ),
]
AnalysisLangs = Annotated[str, typer.Option(help="comma-separated languages")]
AnalysisSource = Annotated[str, typer.Option(help="prompts: builtin:<name>, a JSONL path with {lang}, hf:<dataset>")]
AnalysisLimit = Annotated[int | None, typer.Option(min=1, help="first N prompt ids per language")]
AnalysisBatch = Annotated[int, typer.Option(min=1)]
AnalysisOut = Annotated[Path, typer.Option("--out", "-o", help="output dir")]


@app.command("logit-lens")
def logit_lens(
    model: AnalysisModels = None,
    langs: AnalysisLangs = "en,es,de,fr",
    source: AnalysisSource = "builtin:heldout",
    limit: AnalysisLimit = None,
    batch_size: AnalysisBatch = 16,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Logit lens: per layer, next-token probability on English vs prompt-language tokens (logit_lens.json/md/png)."""
    from polyrise.analysis.logit_lens import lens_table

    done = api.analyze_logit_lens(
        model, langs=comma_list(langs), source=source, limit=limit, batch_size=batch_size, out=out
    )
    print_table("logit lens", *lens_table(done.results), done.paths)


@app.command("similarity")
def similarity(
    model: AnalysisModels = None,
    langs: Annotated[str, typer.Option(help="comma-separated languages (English is always added)")] = "en,es,de,fr",
    source: AnalysisSource = "builtin:heldout",
    limit: AnalysisLimit = None,
    batch_size: AnalysisBatch = 16,
    layer: Annotated[int | None, typer.Option(help="layer of the PCA plot (0 = embeddings; default: middle)")] = None,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Similarity of aligned sentences' representations to English per layer, ranking + PCA (similarity.*)."""
    from polyrise.analysis.similarity import similarity_table

    done = api.analyze_similarity(
        model, langs=comma_list(langs), source=source, limit=limit, batch_size=batch_size, layer=layer, out=out
    )
    print_table("similarity to English", *similarity_table(done.results), done.paths)


@app.command("transfer")
def transfer(
    inputs: Annotated[list[Path], typer.Argument(metavar="RUN_OR_SCORES...", help="run dirs or scores.json files")],
    trained: Annotated[
        str | None, typer.Option(help="comma-separated trained languages (default: from the run's config)")
    ] = None,
    base: Annotated[str, typer.Option(help="label of the model before training")] = "M0",
    tuned: Annotated[str, typer.Option(help="label of the model after training")] = "M1",
    task: Annotated[list[str] | None, typer.Option(help="only these tasks (repeatable)")] = None,
    out: AnalysisOut = Path("analysis"),
) -> None:
    """Cross-lingual transfer: each unseen language's gain relative to the mean gain of the trained ones."""
    done = api.analyze_transfer(
        inputs, trained=comma_list(trained) if trained else None, base=base, tuned=tuned, tasks=task, out=out
    )
    rows = [
        [
            name,
            metric,
            lang + (" *" if r["trained"] else ""),
            f"{r['gain']:+.3f}",
            "-" if r["transfer"] is None else f"{r['transfer']:.2f}",
        ]
        for name, by_metric in done.results.items()
        for metric, by_lang in by_metric.items()
        for lang, r in by_lang.items()
    ]
    columns = ["task", "metric", "lang", "gain", "transfer"]
    print_table(f"transfer {base} → {tuned} (* trained)", columns, rows, done.paths)
