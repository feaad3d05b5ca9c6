"""`polyrise` command line: a thin typer layer over the Python API (`polyrise.api`): each command parses its options,
calls one API function and prints the result; `main` is the error boundary."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import NoReturn

import typer

from polyrise.cli import analyze, evaluate, run, sandbox, steps
from polyrise.errors import PolyriseError
from polyrise.io import DISK_ERRORS

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
    except OSError as e:
        if os.environ.get("POLYRISE_TRACEBACK") or e.errno not in DISK_ERRORS:
            _unexpected(e)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}cannot write ({e.strerror}); free space or choose another place", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as e:
        _unexpected(e)


def _unexpected(e: Exception) -> NoReturn:
    """A bug: one line naming it and the log that holds its traceback (`POLYRISE_TRACEBACK=1` raises it)."""
    if os.environ.get("POLYRISE_TRACEBACK"):
        raise e
    log = _crash_log()
    where = f"the traceback is in {log}; please attach it" if log else "run again with POLYRISE_TRACEBACK=1 and attach"
    print(
        f"error: unexpected {type(e).__name__}: {str(e)[:300]} (a bug in polyrise, not in your input: {where} "
        "to a bug report)",
        file=sys.stderr,
    )
    raise SystemExit(1) from None


def _crash_log() -> Path | None:
    """Write the current exception's traceback (it may quote prompts) to a log only its user can read, in a folder
    only they can list; None when it cannot be written."""
    import tempfile
    import time
    import traceback

    folder = Path(tempfile.gettempdir()) / f"polyrise-logs-{os.getuid()}"
    path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None  # someone else's folder, or a link: never written through
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as fh:
            fh.write(f"polyrise {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return path
