"""The benchmark's embedded store: SQLite, one row per image × explainer × metric, plus curves.

Every row is keyed by ``(config, image, explainer, metric)``: ``config`` hashes what
decides a value (model weights, protocol, image size, batching, data source), and
explainers and metrics are keyed by their canonical spec (name + options), so adding
an explainer to a finished run computes only that explainer. One unit of work (a batch
of images × one explainer) is written in one transaction: a run killed at any point
leaves whole units only, and a rerun computes exactly what is missing. Writes are
``INSERT OR IGNORE``, so merging stores (ranks of a distributed run) never duplicates.

>>> import tempfile, pathlib
>>> store = Store(pathlib.Path(tempfile.mkdtemp()) / "bench.sqlite")
>>> store.write_unit("cfg", [RowRecord("img0", "gradcam", "gradcam", "average_drop", "average_drop", 12.5, "default")])
1
>>> store.done_keys("cfg")
{('img0', 'gradcam', 'average_drop')}
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configs (config TEXT PRIMARY KEY, settings TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    config TEXT NOT NULL, image TEXT NOT NULL,
    explainer_key TEXT NOT NULL, explainer TEXT NOT NULL,
    metric_key TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, protocol TEXT NOT NULL,
    PRIMARY KEY (config, image, explainer_key, metric_key)
);
CREATE TABLE IF NOT EXISTS curves (
    config TEXT NOT NULL, batch TEXT NOT NULL, explainer_key TEXT NOT NULL, metric_key TEXT NOT NULL,
    fractions TEXT NOT NULL, mean TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (config, batch, explainer_key, metric_key)
);
CREATE TABLE IF NOT EXISTS directions (
    config TEXT NOT NULL, metric TEXT NOT NULL, higher_is_better INTEGER NOT NULL,
    PRIMARY KEY (config, metric)
);
CREATE TABLE IF NOT EXISTS skipped (
    config TEXT NOT NULL, image TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (config, image)
);
CREATE TABLE IF NOT EXISTS errors (
    config TEXT NOT NULL, batch TEXT NOT NULL, explainer_key TEXT NOT NULL, metric_key TEXT NOT NULL,
    explainer TEXT NOT NULL, metric TEXT NOT NULL, images TEXT NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (config, batch, explainer_key, metric_key)
);
CREATE TABLE IF NOT EXISTS costs (
    config TEXT NOT NULL, batch TEXT NOT NULL, explainer_key TEXT NOT NULL, metric_key TEXT NOT NULL,
    images INTEGER NOT NULL, seconds REAL NOT NULL, forward INTEGER NOT NULL, backward INTEGER NOT NULL,
    PRIMARY KEY (config, batch, explainer_key, metric_key)
);
CREATE TABLE IF NOT EXISTS maps (
    config TEXT NOT NULL, image TEXT NOT NULL, explainer_key TEXT NOT NULL,
    shape TEXT NOT NULL, data BLOB NOT NULL, title TEXT NOT NULL,
    PRIMARY KEY (config, image, explainer_key)
);
"""


@dataclass(frozen=True)
class RowRecord:
    """One stored value: the keys (canonical specs) and the labels shown in results."""

    image: str
    explainer_key: str
    explainer: str
    metric_key: str
    metric: str
    value: float
    protocol: str


@dataclass(frozen=True)
class ErrorRecord:
    """A metric that raised on one batch × explainer: its values there are missing, the others are kept."""

    batch: str
    explainer_key: str
    metric_key: str
    explainer: str
    metric: str
    images: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class CostRecord:
    """What one batch × explainer cost: explaining (``metric_key`` ``""``) or one metric's engine runs."""

    batch: str
    explainer_key: str
    metric_key: str
    images: int
    seconds: float
    forward: int
    backward: int = 0


@dataclass(frozen=True)
class CurveRecord:
    """The mean curve of one progressive metric over one batch of ``n`` images."""

    batch: str
    explainer_key: str
    metric_key: str
    fractions: tuple[float, ...]
    mean: tuple[float, ...]
    n: int


class Store:
    """A benchmark store in one SQLite file (created on first use).

    Args:
        path: the ``.sqlite`` file; its folder is created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidArgumentError(
                f"store: {self.path} is a directory; expected a file such as {self.path / 'benchmark.sqlite'}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=60.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._conn:
            self._conn.executescript(_SCHEMA)
            found = self._conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if found is None:
                self._conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif found[0] != SCHEMA_VERSION:
                raise InvalidArgumentError(
                    f"store: {self.path} has schema {found[0]}, this xai-bridge writes {SCHEMA_VERSION}; use a "
                    "new --store file"
                )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    def register_config(self, config: str, settings: dict[str, Any]) -> None:
        """Record what a configuration hash stands for (first registration wins)."""
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO configs VALUES (?, ?, ?)",
                (config, json.dumps(settings, sort_keys=True, default=str), time.time()),
            )

    def set_directions(self, config: str, directions: dict[str, bool]) -> None:
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO directions VALUES (?, ?, ?)",
                [(config, m, int(bool(h))) for m, h in directions.items()],
            )

    def write_unit(
        self,
        config: str,
        rows: Sequence[RowRecord],
        curves: Sequence[CurveRecord] = (),
        errors: Sequence[ErrorRecord] = (),
        costs: Sequence[CostRecord] = (),
    ) -> int:
        """Write one unit of work in one transaction; returns the number of new rows.

        ``errors`` replace those stored for their (batch, explainer, metric); a metric that now
        has rows for a batch loses its stored error there.
        """
        with self._conn:
            self._conn.executemany(
                "DELETE FROM errors WHERE config = ? AND explainer_key = ? AND metric_key = ? AND batch = ?",
                sorted({(config, c.explainer_key, c.metric_key, c.batch) for c in costs if c.metric_key}),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        config,
                        e.batch,
                        e.explainer_key,
                        e.metric_key,
                        e.explainer,
                        e.metric,
                        json.dumps(e.images),
                        e.error,
                    )
                    for e in errors
                ],
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO costs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (config, c.batch, c.explainer_key, c.metric_key, c.images, c.seconds, c.forward, c.backward)
                    for c in costs
                ],
            )
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (config, r.image, r.explainer_key, r.explainer, r.metric_key, r.metric, _real(r.value), r.protocol)
                    for r in rows
                ],
            )
            added = self._conn.total_changes - before
            self._conn.executemany(
                "INSERT OR IGNORE INTO curves VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        config,
                        c.batch,
                        c.explainer_key,
                        c.metric_key,
                        json.dumps(list(c.fractions)),
                        json.dumps(list(c.mean)),
                        c.n,
                    )
                    for c in curves
                ],
            )
        return added

    def mark_skipped(self, config: str, image: str, reason: str) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?)", (config, image, reason))

    def put_map(self, config: str, image: str, explainer_key: str, array: Any, title: str) -> None:
        """Store one saliency map (float16) for the report's grid."""
        import numpy as np

        data = np.asarray(array, dtype=np.float16)
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO maps VALUES (?, ?, ?, ?, ?, ?)",
                (config, image, explainer_key, json.dumps(list(data.shape)), data.tobytes(), title),
            )

    def merge_from(self, other: Store | str | Path) -> int:
        """Copy every row, curve, direction, skip and map of ``other`` that is not here; returns new rows."""
        src = other if isinstance(other, Store) else Store(other)
        try:
            dump = src.dump()
        finally:
            if src is not other:
                src.close()
        return self.load_dump(dump)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table as lists of tuples (what ranks send to rank 0)."""
        return {
            t: [tuple(r) for r in self._conn.execute(f"SELECT * FROM {t}")]
            for t in ("configs", "rows", "curves", "directions", "skipped", "maps", "errors", "costs")
        }

    def load_dump(self, dump: dict[str, list[tuple[Any, ...]]]) -> int:
        """Insert a :meth:`dump` (rows are never duplicated or overwritten); returns new rows."""
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dump.get("rows", []))
            added = self._conn.total_changes - before
            for table, width in (
                ("configs", 3),
                ("curves", 7),
                ("directions", 3),
                ("skipped", 3),
                ("maps", 6),
                ("costs", 8),
            ):
                marks = ", ".join("?" * width)
                self._conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", dump.get(table, []))
            self._conn.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?, ?, ?, ?, ?, ?, ?, ?)", dump.get("errors", [])
            )
        return added

    def errors(self, config: str) -> list[ErrorRecord]:
        """The metrics that raised, per batch × explainer, in this configuration."""
        return [
            ErrorRecord(b, ek, mk, e, m, tuple(json.loads(images)), err)
            for b, ek, mk, e, m, images, err in self._conn.execute(
                "SELECT batch, explainer_key, metric_key, explainer, metric, images, error FROM errors "
                "WHERE config = ? ORDER BY batch, explainer_key, metric_key",
                (config,),
            )
        ]

    def costs(self, config: str) -> list[CostRecord]:
        """The measured cost of every batch × explainer (and of each metric's engine runs)."""
        return [
            CostRecord(*row)
            for row in self._conn.execute(
                "SELECT batch, explainer_key, metric_key, images, seconds, forward, backward FROM costs "
                "WHERE config = ? ORDER BY batch, explainer_key, metric_key",
                (config,),
            )
        ]

    # -- reading ---------------------------------------------------------------------------
    def done_keys(self, config: str) -> set[tuple[str, str, str]]:
        """``(image, explainer_key, metric_key)`` of every stored row of ``config``."""
        return {
            tuple(r)
            for r in self._conn.execute("SELECT image, explainer_key, metric_key FROM rows WHERE config=?", (config,))
        }

    def rows(self, config: str) -> list[RowRecord]:
        return [
            RowRecord(*r)
            for r in self._conn.execute(
                "SELECT image, explainer_key, explainer, metric_key, metric, value, protocol FROM rows WHERE config=?",
                (config,),
            )
        ]

    def count(self, config: str | None = None) -> int:
        if config is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM rows WHERE config=?", (config,)).fetchone()[0])

    def curves(self, config: str) -> list[CurveRecord]:
        return [
            CurveRecord(b, e, m, tuple(json.loads(f)), tuple(json.loads(v)), n)
            for b, e, m, f, v, n in self._conn.execute(
                "SELECT batch, explainer_key, metric_key, fractions, mean, n FROM curves WHERE config=?", (config,)
            )
        ]

    def directions(self, config: str) -> dict[str, bool]:
        return {
            m: bool(h)
            for m, h in self._conn.execute("SELECT metric, higher_is_better FROM directions WHERE config=?", (config,))
        }

    def skipped(self, config: str) -> dict[str, str]:
        return dict(self._conn.execute("SELECT image, reason FROM skipped WHERE config=?", (config,)).fetchall())

    def maps(self, config: str) -> dict[tuple[str, str], tuple[Any, str]]:
        """``(image, explainer_key) → (H×W float32 array, title)``."""
        import numpy as np

        out = {}
        for image, key, shape, data, title in self._conn.execute(
            "SELECT image, explainer_key, shape, data, title FROM maps WHERE config=?", (config,)
        ):
            out[(image, key)] = (
                np.frombuffer(data, dtype=np.float16).reshape(json.loads(shape)).astype(np.float32),
                title,
            )
        return out

    def settings(self, config: str) -> dict[str, Any] | None:
        found = self._conn.execute("SELECT settings FROM configs WHERE config=?", (config,)).fetchone()
        return None if found is None else json.loads(found[0])


def _real(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value  # NaN is stored as NULL


def merge_curves(records: Iterable[CurveRecord]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per ``(explainer_key, metric_key)``: the image-weighted mean of the batches' mean curves.

    Batches whose fractions differ from the first batch's are left out (they cannot be averaged).
    """
    sums: dict[tuple[str, str], tuple[tuple[float, ...], list[float], int]] = {}
    for c in sorted(records, key=lambda c: c.batch):
        key = (c.explainer_key, c.metric_key)
        if key not in sums:
            sums[key] = (c.fractions, [v * c.n for v in c.mean], c.n)
            continue
        fractions, total, n = sums[key]
        if len(fractions) != len(c.fractions) or any(
            abs(a - b) > 1e-9 for a, b in zip(fractions, c.fractions, strict=False)
        ):
            continue
        sums[key] = (fractions, [t + v * c.n for t, v in zip(total, c.mean, strict=False)], n + c.n)
    return {key: {"fractions": list(f), "mean": [t / n for t in total]} for key, (f, total, n) in sums.items()}
