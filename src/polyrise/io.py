"""JSONL/JSON reading with file:line errors, the `{lang}` path-template loader, and atomic writes (nothing
half-written survives a crash)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from polyrise.errors import PolyriseError

R = TypeVar("R", bound=BaseModel)


class _InLanguage(Protocol):
    @property
    def lang(self) -> str: ...  # read-only, so that frozen models qualify


L = TypeVar("L", bound=_InLanguage)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


_KINDS = {
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def check_file(path: Path, what: str = "file") -> None:
    """Raise unless `path` is a regular file (or a link to one), saying what it is instead: missing (`no such
    {what}`), a directory, or another kind of file (a FIFO, a device, ...). Never opens it (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PolyriseError(f"{path}: no such {what}") from None
    except OSError as e:
        raise PolyriseError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise PolyriseError(f"{path}: is a directory, not a {what}")
    kind = next((name for test, name in _KINDS.items() if test(mode)), "something else")
    raise PolyriseError(f"{path}: is not a regular file ({kind})")


def path_component_problem(name: str) -> str | None:
    """Why `name`, which becomes a file or directory name, is not one path component (it would write outside its
    directory, or name none), or None."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        return f"{name!r} is not one path component (not empty, '.' or '..', no '/', '\\' or NUL)"
    return None


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError) -> PolyriseError:
    """`file:line: not valid UTF-8 (...)` for a decoding error at byte `err.start` of `data`, the file's bytes."""
    line_start = data.rfind(b"\n", 0, err.start) + 1
    lineno = data.count(b"\n", 0, err.start) + 1
    detail = f"{err.reason}: byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}"
    return PolyriseError(f"{path}:{lineno}: not valid UTF-8 ({detail})")


def read_text(path: str | Path, what: str = "file") -> str:
    """A regular file's text, decoded as UTF-8; a missing or undecodable file is one error naming `file:line`."""
    path = Path(path)
    check_file(path, what)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PolyriseError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None


def _lone_surrogate(row: Any) -> str | None:
    """The first lone surrogate (a `\\ud800` escape without its pair) in `row`'s strings: JSON allows it, but it is
    no text, and writing it as UTF-8 fails."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return e.object[e.start : e.end]
    return None


def _parse(text: str, path: Path, lineno: int | None = None) -> Any:
    """The JSON value of `text`, line `lineno` of `path` (None: the whole file); invalid JSON, nesting deeper than
    Python parses, or a lone surrogate is one error naming the file and line."""
    where = f"{path}:{lineno}" if lineno else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolyriseError(f"{path}:{lineno or e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise PolyriseError(f"{where}: invalid JSON (nested too deeply)") from None
    if "\\u" in text and (char := _lone_surrogate(value)) is not None:
        raise PolyriseError(f"{where}: a lone surrogate escape \\u{ord(char):04x} (half of a character), not text")
    return value


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; invalid JSON or UTF-8 or a non-object names `file:line`."""
    path = Path(path)
    check_file(path)
    try:
        fh = path.open(encoding="utf-8")
    except OSError as e:
        raise PolyriseError(f"{path}: cannot read ({e.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = _parse(line, path, lineno)
                if not isinstance(row, dict):
                    raise PolyriseError(f"{path}:{lineno}: a row must be a JSON object")
                yield lineno, row
        except UnicodeDecodeError:  # raised for a whole decoded chunk: find the line in the bytes
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, data, e) from None
            raise


def read_json_array(path: str | Path) -> list[Any]:
    """The items of a file holding one JSON array (the X-AlpacaEval shape); errors name the file (and line)."""
    path = Path(path)
    items = _parse(read_text(path), path)
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


def lang_paths(template: str | Path, langs: Sequence[str] | None) -> list[tuple[str | None, Path]]:
    """(language, file) for each of `langs` when the path holds `{lang}`; one (None, path) for a plain path (`~`:
    the home directory)."""
    text = str(template)
    try:
        home = Path(text).expanduser()
    except RuntimeError as e:  # `~name` of no such user
        raise PolyriseError(f"{text}: {e}") from None
    if "{lang}" not in text:
        return [(None, home)]
    if not langs:
        raise PolyriseError(f"{text}: a {{lang}} path template needs the list of languages")
    return [(lang, Path(str(home).replace("{lang}", lang))) for lang in dict.fromkeys(langs)]


def iter_rows(path: str | Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(location, 1-based number, object) of every row of a JSONL file (`file:line`), or of every item of a
    `.json` file's array (`file: item i`, the X-AlpacaEval shape)."""
    path = Path(path)
    if path.suffix != ".json":
        for lineno, row in iter_jsonl(path):
            yield f"{path}:{lineno}", lineno, row
        return
    for i, item in enumerate(read_json_array(path)):
        if not isinstance(item, dict):
            raise PolyriseError(f"{path}: item {i}: expected a JSON object, got {type(item).__name__}")
        yield f"{path}: item {i}", i + 1, item


def load_rows(
    template: str | Path,
    langs: Sequence[str] | None,
    record: type[R],
    check: Callable[[R], str | None] | None = None,
    *,
    unique_ids: bool = False,
    default_lang: str | None = None,
) -> list[R]:
    """The rows of one JSONL/JSON file, or of a `{lang}` path template's file for each of `langs`, as `record`s
    (which have `id` and `lang`).

    In a template's file, `lang` defaults to the file's language (another one is an error) and `id` to the row's
    1-based number. A plain file's rows need an `id`, and a `lang` unless `default_lang` is given or `langs` names
    exactly one language; rows of languages not in `langs` are left out (None keeps all). Integer ids become text.
    `check` returns a problem with a valid row, or None; with `unique_ids` a repeated id within a language is an
    error naming both rows. Every error names `file:line` (`file: item i` in a JSON array).
    """
    only = default_lang or (langs[0] if langs is not None and len(langs) == 1 else None)
    rows: list[R] = []
    seen: dict[tuple[str, str | None], str] = {}
    for file_lang, path in lang_paths(template, langs):
        for where, number, row in iter_rows(path):
            if file_lang is not None:
                if row.setdefault("lang", file_lang) != file_lang:
                    raise PolyriseError(f"{where}: lang {row['lang']!r} in the file of language {file_lang!r}")
                row.setdefault("id", str(number))
            elif only is not None:
                row.setdefault("lang", only)
            if isinstance(row.get("id"), int) and not isinstance(row["id"], bool):
                row["id"] = str(row["id"])
            try:
                item = record.model_validate(row)
            except ValidationError as e:
                raise PolyriseError(f"{where}: {_describe(e)}") from None
            if langs is not None and row.get("lang") not in langs:
                continue
            problem = check(item) if check else None
            if problem:
                raise PolyriseError(f"{where}: {problem}")
            if unique_ids:
                key = (row["id"], row.get("lang"))
                if key in seen:
                    raise PolyriseError(f"{where}: duplicate id {key[0]!r} (first at {seen[key]})")
                seen[key] = f"item {number - 1}" if path.suffix == ".json" else f"line {number}"
            rows.append(item)
    return rows


def refuse_duplicate_ids(path: str | Path, rows: Iterable[Any], *fields: str) -> None:
    """One error naming `path` and the id of the first row whose id and `fields` (its language, ...) repeat an
    earlier row's: a later row would silently replace the first."""
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = (row.id, *(getattr(row, name) for name in fields))
        if key in seen:
            of = ", ".join(f"{name} {value!r}" for name, value in zip(fields, key[1:], strict=True))
            raise PolyriseError(f"{path}: duplicate id {row.id!r}" + (f" ({of})" if of else "") + ": give each once")
        seen.add(key)


def first_per_lang(rows: Iterable[L], limit: int | None) -> list[L]:
    """The first `limit` rows of every language (all rows with None), in their order."""
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[row.lang] = seen.get(row.lang, 0) + 1
        if limit is None or seen[row.lang] <= limit:
            kept.append(row)
    return kept


DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""The OS errors of a full or read-only disk, or of a place the user may not write: theirs to fix, not a bug."""


@contextmanager
def writing_into(where: Path, what: str) -> Iterator[None]:
    """A full or read-only disk (or no permission) inside the block is one error naming the file the OS names, else
    `where`: what the block writes into."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise PolyriseError(f"{e.filename or where}: cannot write {what} ({e.strerror})") from None


def _umask() -> int:
    """The process' umask (read by setting it back at once: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_files(*paths: str | Path) -> Iterator[list[IO[str]]]:
    """Temporary files beside `paths`, one each; only when the block finishes and every one is written do they
    replace `paths` (all of them or, but for a failed rename, none). They get the mode a plain write would (0666
    less the umask), not mkstemp's 0600. An OS error writing them (a full or read-only disk, no permission) is one
    error naming the file."""
    targets = [Path(p) for p in paths]
    mode = 0o666 & ~_umask()
    temps: list[tuple[Path, IO[str]]] = []

    def cannot(e: OSError, *where: Path) -> PolyriseError:
        return PolyriseError(f"{', '.join(map(str, where))}: cannot write ({e.strerror or e})")

    try:
        for target in targets:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            except OSError as e:
                raise PolyriseError(f"{target.parent}: cannot write here ({e.strerror})") from None
            temps.append((Path(name), os.fdopen(fd, "w", encoding="utf-8")))
            os.fchmod(fd, mode)
        try:
            yield [fh for _, fh in temps]
        except OSError as e:  # a write in the block; another file's error is not ours to name
            if e.filename is not None and Path(e.filename) not in {tmp for tmp, _ in temps}:
                raise
            raise cannot(e, *targets) from None
        for (_, fh), target in zip(temps, targets, strict=True):
            try:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            except OSError as e:
                raise cannot(e, target) from None
        for (tmp, _), target in zip(temps, targets, strict=True):
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise cannot(e, target) from None
    finally:
        for tmp, fh in temps:
            with suppress(OSError):  # closing a file whose buffered bytes no longer fit fails again
                fh.close()
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[str]]:
    """Open a temporary file beside `path`; it replaces `path` only if the block finishes (`atomic_files`)."""
    with atomic_files(path) as (fh,):
        yield fh


def write_png(fig: Any, path: Path) -> Path:
    """A matplotlib figure as a PNG, written beside `path` and renamed into place (a full disk leaves no half image;
    its error names `path`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing_into(path, "the figure"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(tmp, format="png", dpi=110)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


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
