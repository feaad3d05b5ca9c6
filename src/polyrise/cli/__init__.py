"""`polyrise` command line: a thin typer layer over the Python API (`polyrise.api`): each command parses its options,
calls one API function and prints the result; `main` is the error boundary."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from polyrise.cli import analyze, evaluate, run, sandbox, steps
from polyrise.errors import PolyriseError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="`polyrise` command line: a thin typer layer over the Python API."
)
app.command()(run.run)
app.command()(run.init)
app.command(hidden=True)(run.stage)
app.command()(run.align)
for command in (steps.generate, steps.translate, steps.pairs, steps.train):
    app.command()(command)
app.command("eval")(evaluate.eval_)
for reading in (evaluate.score, evaluate.harness, evaluate.report, evaluate.export, evaluate.models):
    app.command()(reading)
app.add_typer(analyze.app, name="analyze")
app.add_typer(sandbox.app, name="sandbox")


def main() -> None:
    """Entry point: user errors print one clear message and exit 1; Ctrl-C exits 130 (requests in flight are not
    waited for: what finished is in the cache); any other exception is a bug: one line naming it and the log that
    holds its traceback (`POLYRISE_TRACEBACK=1` raises it instead)."""
    try:
        app()
    except PolyriseError as e:
        print(f"error: {e}", file=sys.stderr)  # plain: no wrapping or markup inside paths
        raise SystemExit(1) from None
    except SystemExit as e:  # typer turns Ctrl-C into exit 130; `run` has said where it stopped
        if e.code == 130 and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            print("interrupted; rerun the same command to resume (finished work is kept)", file=sys.stderr)
        raise
    except Exception as e:
        if os.environ.get("POLYRISE_TRACEBACK"):
            raise
        log = _crash_log()
        print(
            f"error: unexpected {type(e).__name__}: {str(e)[:300]} (a bug in polyrise, not in your input: the "
            f"traceback is in {log}; please attach it to a bug report)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def _crash_log() -> Path:
    """Write the current exception's traceback to a log file; return its path."""
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.gettempdir()) / "polyrise-logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"polyrise {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path
