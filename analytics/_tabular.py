"""Reading users' exports: CSV (comma, semicolon or tab) or whitespace-separated, with a header or given names."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analytics._base import DataError, Vector

__all__ = ["Table", "read_table", "write_rows"]

_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y.%m.%d.%H.%M.%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d")


@dataclass
class Table:
    """Columns of text as read; conversions name the file, column and first bad row on failure."""

    path: Path
    names: list[str]
    cols: dict[str, list[str]]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def need(self, names: Sequence[str], what: str) -> None:
        missing = [n for n in names if n not in self.cols]
        if missing:
            raise DataError(
                f"{self.path}: {what} column(s) {', '.join(missing)} not found; the columns are: {', '.join(self.names)}"
            )

    def numeric(self, name: str) -> Vector:
        """A column as floats; empty, 'nan' and 'NA' cells become NaN."""
        self.need([name], "a")
        out = np.empty(len(self))
        for i, v in enumerate(self.cols[name]):
            s = v.strip()
            if s in {"", "nan", "NaN", "NA", "null"}:
                out[i] = math.nan
                continue
            try:
                out[i] = float(s)
            except ValueError as exc:
                raise DataError(f"{self.path}: column {name!r} row {i + 2}: {v!r} is not a number") from exc
        return out

    def is_numeric(self, name: str) -> bool:
        try:
            self.numeric(name)
        except DataError:
            return False
        return True

    def hours(self, name: str) -> Vector:
        """A time column in hours: numbers are taken as hours already, timestamps become hours since 1970."""
        if self.is_numeric(name):
            return self.numeric(name)
        out = np.empty(len(self))
        for i, v in enumerate(self.cols[name]):
            out[i] = _parse_time(v.strip(), f"{self.path}: column {name!r} row {i + 2}")
        return out


def _parse_time(v: str, where: str) -> float:
    for fmt in _TIME_FORMATS:
        try:
            dt = datetime.strptime(v, fmt)
        except ValueError:
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp() / 3600.0
    raise DataError(f"{where}: {v!r} is neither a number of hours nor a timestamp like 2024-01-31 12:00:00")


def read_table(path: Path, columns: Sequence[str] | None = None) -> Table:
    """Read ``path``; with ``columns`` the file has no header and these name its columns in order."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"{path} is empty")
    first = lines[0]
    delim = next((d for d in (",", ";", "\t") if d in first), None)
    if delim is None:
        rows = [ln.split() for ln in lines]
    else:
        rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delim)]
    if columns:
        names = list(columns)
    else:
        names = rows[0]
        rows = rows[1:]
        if all(_is_number(n) for n in names if n):
            raise DataError(
                f"{path}: the first line looks like data, not a header; name the columns with --columns a,b,c"
            )
        names = [n if n else f"column{i + 1}" for i, n in enumerate(names)]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: duplicate column name(s): {', '.join(dup)}")
    for i, r in enumerate(rows):
        if len(r) != len(names):
            line = i + (1 if columns else 2)
            raise DataError(f"{path}: line {line} has {len(r)} fields, expected {len(names)} ({', '.join(names)})")
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    cols = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    return Table(path, names, cols)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def write_rows(path: Path | None, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Write CSV to ``path`` (or return it as text when ``path`` is None)."""
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r))
    text = "\n".join(lines) + "\n"
    if path is not None:
        path.write_text(text)
    return text
