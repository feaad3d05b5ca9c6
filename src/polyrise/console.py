"""What polyrise shows on the console: its own lines and progress bars; the libraries' warnings, logs and
progress bars go to a stage's log file instead (and to the console too with `--verbose`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def make_console() -> Console:
    """A console whose lines never wrap: printed paths and numbers stay whole for the scripts that read them
    (piped, a table is as wide as its contents)."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)


class _Rate(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f}/s", style="progress.data.speed")


def progress(console: Console | None = None, transient: bool = True) -> Progress:
    """polyrise's progress bar: description, bar, done/total, rate, elapsed and ETA. Shown on a terminal only, so
    piped output holds the stages' result lines alone."""
    console = console or make_console()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


@contextmanager
def library_output(log: Path, verbose: bool = False) -> Iterator[None]:
    """Route the libraries' output while the block runs: warnings (`warnings` module), the log records of
    transformers, datasets, accelerate, ... and polyrise's own (the trainer's per-step dicts) are appended to
    `log`; their progress bars (weight loading, dataset maps) are off. `verbose`: shown on stderr as well,
    progress bars on."""
    import datasets
    import huggingface_hub.utils
    from transformers.utils import logging as hf_logging

    log.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(log, encoding="utf-8", delay=True)]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    # transformers and datasets print through a handler of their own and do not propagate to the root
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    datasets_logger = logging.getLogger("datasets")
    datasets_handlers, datasets_logger.handlers = datasets_logger.handlers, []
    datasets_logger.propagate = True
    if not verbose:
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
        hf_logging.disable_propagation()
        hf_logging.enable_default_handler()
        datasets_logger.handlers, datasets_logger.propagate = datasets_handlers, False
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
