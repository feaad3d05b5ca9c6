"""Persistent generation cache: SQLite in WAL mode, keyed by (model fingerprint, rendered prompt, sampling).

Also holds log-likelihoods (`Generator.loglikelihood`), keyed by the continuation instead of sampling.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from polyrise.errors import PolyriseError
from polyrise.settings import SamplingSettings


class GenerationCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise PolyriseError(f"{self.path}: cannot open generation cache ({e})") from None

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
            rows = self._db.execute(f"SELECT key, output FROM outputs WHERE key IN ({marks})", part)
            found.update(rows.fetchall())
        return found

    def put_many(self, items: Mapping[str, str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?)", items.items())

    def get_json(self, keys: Iterable[str]) -> dict[str, Any]:
        """`get_many` of values stored by `put_json`."""
        return {k: json.loads(v) for k, v in self.get_many(keys).items()}

    def put_json(self, items: Mapping[str, Any]) -> None:
        self.put_many({k: json.dumps(v) for k, v in items.items()})

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]

    def close(self) -> None:
        self._db.close()
