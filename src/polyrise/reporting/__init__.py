"""Report of a run: languages x iterations tables per metric with `n` and 95% intervals, the paired change from
each model to the next, the gap to English, and PNG plots (Markdown + HTML).

`collect` reads the run dir (scores, per-item samples, the method's `report_views`), `tables` builds the tables as
data, `samples` the per-sample rows report.html embeds (through each task's `TaskView`), `plots` the PNGs and
`render` writes both documents from the same blocks. The report names no task and no method.
"""

from __future__ import annotations

from pathlib import Path

from polyrise.errors import PolyriseError, missing_extra
from polyrise.evaluation import HEADLINE_METRICS, METRICS
from polyrise.io import atomic_files, writing_into
from polyrise.reporting.collect import (
    Scores,
    collect_scores,
    item_samples_of,
    method_views,
    model_order,
    run_langid,
    trained_languages,
)
from polyrise.reporting.plots import plot_metric
from polyrise.reporting.render import Block, Image, Paragraph, html_page, markdown
from polyrise.reporting.samples import samples_data
from polyrise.reporting.tables import DISTINGUISHABLE, metric_tables, scores_table

__all__ = [
    "DISTINGUISHABLE",
    "Scores",
    "collect_scores",
    "model_order",
    "scores_table",
    "trained_languages",
    "write_report",
]


def write_report(run_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write `report.md`, `report.html` (one self-contained file: plots, styles, script and the per-sample data
    embedded, no network) and `plots/*.png`.

    Each table of a metric shows every value with its 95% interval and `n`; below it, the change from each model
    to the next, paired over the items both were scored on (their per-sample rows; bootstrap seeded by `seed`),
    marked `DISTINGUISHABLE` (†) where its 95% interval excludes 0. The HTML also shows the samples, searchable
    and filterable (its filters read from and kept in the address's `#...` part): every training example of the
    method, kept or dropped, and every evaluation row, at most `samples.MAX_ROWS` per group.
    """
    run_dir = Path(run_dir)
    if problem := missing_extra("matplotlib", "eval", "the report's plots"):
        raise PolyriseError(problem)
    scores = collect_scores(run_dir)
    views, langid = method_views(run_dir), run_langid(run_dir)
    data = samples_data(run_dir, scores, views, langid)  # before anything is written: a bad row is an error
    blocks: list[Block] = [Paragraph(views.note)] if views.note else []

    def marks(row: str) -> tuple[str, ...]:
        """`*` for a language, or a direction such as zh-en, that a trained language is in."""
        return ("*",) if any(part in views.trained for part in row.split("-")) else ()

    with writing_into(run_dir, "the report"):  # a full or read-only disk: one error naming the file
        for task in sorted(scores):
            by_model = scores[task]
            samples = {label: item_samples_of(run_dir, task, label, langid) for label in by_model}
            for metric in HEADLINE_METRICS:
                direction = "lower is better" if METRICS[metric].lower_is_better else "higher is better"
                found = metric_tables(task, by_model, metric, direction, samples, marks, seed)
                if found is None:
                    continue
                blocks += found.tables
                shown = lambda row: " ".join([row, *marks(row)])  # noqa: E731
                blocks += [Image(png) for png in plot_metric(task, metric, found, run_dir / "plots", shown)]
        title = f"polyrise report: {run_dir.name}"
        md_path, html_path = run_dir / "report.md", run_dir / "report.html"
        with atomic_files(md_path, html_path) as (md, html):  # both or neither
            md.write(markdown(title, blocks))
            html.write(html_page(title, blocks, data))
    return md_path, html_path
