"""Persistent generation cache: SQLite in WAL mode, keyed by (model fingerprint, rendered prompt, sampling).

Also holds log-likelihoods (`Generator.loglikelihood`), keyed by the continuation instead of sampling. Several
processes on one machine may share a cache file (`polyrise generate --shard K/N`): WAL lets them read while one
writes, and a writer waits up to `BUSY_TIMEOUT` for another's commit. WAL needs shared memory, so not across machines
(a network filesystem).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.settings import SamplingSettings

LOG = logging.getLogger(__name__)

APPLICATION_ID = 0x706F6C79
"""`PRAGMA application_id` of polyrise's caches ("poly"): only a file that has it (or, made before it was set, the
`outputs` table) is ever moved aside."""
_SQLITE_MAGIC = b"SQLite format 3\0"

BUSY_TIMEOUT = 60.0
"""Seconds a process waits for another's write (several `--shard` processes share one cache)."""


def _damaged(error: sqlite3.Error) -> bool:
    """Whether SQLite says the file is not a database or is corrupt (not: locked, unwritable)."""
    return any(words in str(error) for words in ("malformed", "not a database", "disk image", "Could not decode"))


def _ours(path: Path) -> bool:
    """Whether `path` is a cache polyrise made (perhaps damaged past its header): SQLite's header with polyrise's
    application id, a database with its `outputs` table, or an empty database (one that another process is
    creating at this moment: its header is written before its application id and table)."""
    with path.open("rb") as fh:
        head = fh.read(100)
    if not head.startswith(_SQLITE_MAGIC):
        return False
    if int.from_bytes(head[68:72], "big") == APPLICATION_ID:
        return True
    try:
        # the timeout waits out the creating process's write lock instead of taking a locked file for a foreign one
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)) as db:
            names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            return not names or "outputs" in names
    except sqlite3.Error:
        return False


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL, so readers and one writer of several processes never block each other. While another
    process creates the same file SQLite refuses the switch at once (`database is locked`) instead of waiting out
    the busy timeout, so it is retried here for as long."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class GenerationCache:
    """A disposable cache: a damaged file of polyrise's is moved aside (`<name>.corrupt`), said once, and rebuilt
    empty; any other file at its path is an error, left as it is."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PolyriseError(f"{self.path}: cannot open generation cache ({e})") from None
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            if self.path.is_file() and self.path.stat().st_size and not _ours(self.path):
                raise PolyriseError(
                    f"{self.path}: not a polyrise generation cache; polyrise neither uses nor moves it: give the "
                    "cache another path (or remove this file)"
                )
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        except (sqlite3.Error, OSError) as e:
            raise PolyriseError(f"{self.path}: cannot open generation cache ({e})") from None
        try:
            _use_wal(db)
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
            db.execute("SELECT COUNT(*) FROM outputs").fetchone()
            db.commit()
            return db
        except (sqlite3.DatabaseError, OSError) as e:
            db.close()  # a connection left open would hold the file (and its disk) until exit
            if isinstance(e, sqlite3.DatabaseError) and _damaged(e):
                return self._rebuild(e)
            raise PolyriseError(f"{self.path}: cannot open generation cache ({e})") from None

    def _rebuild(self, error: sqlite3.Error) -> sqlite3.Connection:
        """Move the damaged cache aside and start an empty one; the loss is only time (outputs are regenerated)."""
        if getattr(self, "_db", None) is not None:
            self._db.close()
        aside = self.path.with_name(self.path.name + ".corrupt")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.replace(Path(f"{aside}{suffix}"))
        LOG.warning(
            "%s: the generation cache is damaged (%s); moved it to %s and started an empty one "
            "(cached outputs will be generated again)",
            self.path,
            str(error)[:200],
            aside,
        )
        return self._open()  # closing the old connection again, if this rebuild fails too, is a no-op

    @staticmethod
    def key(fingerprint: str, rendered: str, params: SamplingSettings | Mapping[str, Any]) -> str:
        """`params`: the sampling settings, or what else besides the prompt determines a cached value."""
        dumped = params.model_dump() if isinstance(params, SamplingSettings) else dict(params)
        blob = json.dumps([fingerprint, rendered, dumped], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            try:
                found.update(self._db.execute(f"SELECT key, output FROM outputs WHERE key IN ({marks})", part))
            except sqlite3.DatabaseError as e:  # a damaged page deep in the file
                if not _damaged(e):
                    raise PolyriseError(f"{self.path}: generation cache: {str(e)[:200]}") from None
                self._db = self._rebuild(e)
                return {}
        return found

    def put_many(self, items: Mapping[str, str]) -> None:
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?)", items.items())
        except sqlite3.DatabaseError as e:
            if not _damaged(e):
                raise PolyriseError(f"{self.path}: generation cache: {str(e)[:200]}") from None
            self._db = self._rebuild(e)
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?)", items.items())

    def get_json(self, keys: Iterable[str]) -> dict[str, Any]:
        """`get_many` of values stored by `put_json`."""
        return {k: json.loads(v) for k, v in self.get_many(keys).items()}

    def put_json(self, items: Mapping[str, Any]) -> None:
        self.put_many({k: json.dumps(v) for k, v in items.items()})

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])

    def close(self) -> None:
        self._db.close()
