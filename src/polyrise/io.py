"""JSONL/JSON reading with file:line errors, and atomic writes (nothing half-written survives a crash)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from polyrise.errors import PolyriseError

R = TypeVar("R", bound=BaseModel)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    return f"{where}: {first['msg']}"


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; invalid JSON or a non-object names `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise PolyriseError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PolyriseError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise PolyriseError(f"{path}:{lineno}: a row must be a JSON object")
            yield lineno, row


def read_json_array(path: str | Path) -> list[Any]:
    """The items of a file holding one JSON array (the X-AlpacaEval shape); errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise PolyriseError(f"{path}: no such file")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PolyriseError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise PolyriseError(f"{path}: expected a JSON array of objects")
    return items


def read_jsonl(path: str | Path, record: type[R]) -> list[R]:
    """Parse every row of a JSONL file into `record`; a bad row raises an error naming `file:line`."""
    rows: list[R] = []
    for lineno, row in iter_jsonl(path):
        try:
            rows.append(record.model_validate(row))
        except ValidationError as e:
            raise PolyriseError(f"{path}:{lineno}: {_describe(e)}") from None
    return rows


@contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[str]]:
    """Open a temporary file beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise PolyriseError(f"{path.parent}: cannot write here ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write rows atomically; returns the number written."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            data = row.model_dump() if isinstance(row, BaseModel) else row
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
        fh.write("\n")


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (used to tell whether a stage's inputs changed)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
