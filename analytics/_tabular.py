"""Reading users' exports: CSV (comma, semicolon or tab) or whitespace-separated, with a header or given names.

Every cell is kept as text with the line of the file it came from, so that a conversion that fails names the file,
the line as a text editor shows it (the header is line 1; comment and blank lines count), the column and the value.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from analytics._base import DataError, Vector

__all__ = ["NA_SPELLINGS", "Table", "read_table", "write_rows"]

_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y.%m.%d.%H.%M.%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d")
_TIMESTAMP_EXAMPLE = "a timestamp like 2024-01-31 12:00:00"

NA_SPELLINGS = ("", "NA", "NaN", "nan", "null", "NULL", "N/A", "n/a", "-")
"""Cells read as a missing value (after stripping spaces); any other text in a numeric column is refused."""
_NA = frozenset(NA_SPELLINGS)
_NA_HINT = "missing values may be empty or " + ", ".join(s for s in NA_SPELLINGS if s)


def _number(s: str) -> float | None:
    """``s`` as a float, NaN for a missing value, None when it is neither."""
    if s in _NA:
        return math.nan
    try:
        return float(s)
    except ValueError:
        return None


@dataclass
class Table:
    """Columns of text as read; conversions name the file, line, column and value on failure."""

    path: Path
    names: list[str]
    cols: dict[str, list[str]]
    lines: list[int] | None = None
    """The file line (1-based) of each row; None: row i is line i + 2 (a header, then no comment or blank line)."""
    _numbers: dict[str, Vector] = field(default_factory=dict, init=False, repr=False, compare=False)
    _text: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def line(self, row: int) -> int:
        """The line of the file that row ``row`` (0-based) came from."""
        return self.lines[row] if self.lines is not None else row + 2

    def need(self, names: Sequence[str], what: str) -> None:
        missing = [n for n in names if n not in self.cols]
        if missing:
            raise DataError(
                f"{self.path}: {what} column(s) {', '.join(missing)} not found; the columns are: {', '.join(self.names)}"
            )

    def _where(self, row: int, name: str) -> str:
        return f"{self.path} line {self.line(row)}, column {name}"

    def _parse(self, name: str) -> None:
        """Sort column ``name`` into numbers or text, once.

        A column is numeric when at least as many of its filled cells are numbers as are not: a text cell in it is
        an error (a stray 'n/a?' in a sensor column must not drop the whole sensor from the default features). A
        column where text is the majority (a machine type, a product) is a text column.
        """
        if name in self._numbers or name in self._text:
            return
        self.need([name], "a")
        cells = self.cols[name]
        out = np.empty(len(cells))
        first_bad, bad, numbers = -1, 0, 0
        for i, v in enumerate(cells):
            s = v.strip()
            x = _number(s)
            if x is None:
                bad += 1
                if first_bad < 0:
                    first_bad = i
                continue
            out[i] = x
            numbers += s not in _NA
        if not bad:
            self._numbers[name] = out
        elif numbers >= bad:
            v = cells[first_bad].strip()
            raise DataError(f"{self._where(first_bad, name)}: {v!r} is not a number ({_NA_HINT})")
        else:
            self._text.add(name)

    def numeric(self, name: str) -> Vector:
        """A column as floats; the cells in :data:`NA_SPELLINGS` become NaN, any other text is an error."""
        self._parse(name)
        if name in self._text:
            i, v = next((i, v) for i, v in enumerate(self.cols[name]) if _number(v.strip()) is None)
            raise DataError(f"{self._where(i, name)}: {v.strip()!r} is not a number (the column holds text)")
        return self._numbers[name].copy()

    def is_numeric(self, name: str) -> bool:
        """True for a numeric column, False for a text one; a numeric column with a text cell is an error."""
        self._parse(name)
        return name in self._numbers

    def hours(self, name: str) -> Vector:
        """A time column in hours: numbers are taken as hours already, timestamps become hours since 1970.

        The column is one or the other (whichever most filled cells are); a cell that is neither, or the other kind,
        is reported at its own line.
        """
        self.need([name], "a time")
        cells = [v.strip() for v in self.cols[name]]
        nums = [_number(s) for s in cells]
        filled = [x for x, s in zip(nums, cells, strict=True) if s not in _NA]
        as_numbers = sum(x is not None for x in filled) * 2 >= len(filled)
        out = np.empty(len(cells))
        for i, (s, x) in enumerate(zip(cells, nums, strict=True)):
            if s in _NA:
                out[i] = math.nan
            elif as_numbers:
                if x is None:
                    raise DataError(
                        f"{self._where(i, name)}: {s!r} is not a number of hours like the rest of the column"
                    )
                out[i] = x
            elif x is not None:
                raise DataError(
                    f"{self._where(i, name)}: {s!r} is a number, but the column holds timestamps like 2024-01-31 12:00:00"
                )
            else:
                out[i] = _parse_time(s, self._where(i, name))
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
    raise DataError(f"{where}: {v!r} is neither a number of hours nor {_TIMESTAMP_EXAMPLE}")


def _split(path: Path, text: str) -> tuple[list[list[str]], list[int]]:
    """The rows of ``text`` and the file line each starts on, without blank and ``#`` comment lines."""
    # Line numbers as an editor counts them: \r\n, \n and a lone \r end a line (str.splitlines also splits on
    # form feeds and Unicode separators, which would shift every number after one).
    kept = [
        (n, ln)
        for n, ln in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not kept:
        raise DataError(f"{path} is empty")
    numbers = [n for n, _ in kept]
    lines = [ln for _, ln in kept]
    delim = next((d for d in (",", ";", "\t") if d in lines[0]), None)
    if delim is None:
        return [ln.split() for ln in lines], numbers
    rows: list[list[str]] = []
    starts: list[int] = []
    reader = csv.reader(lines, delimiter=delim)
    consumed = 0
    try:
        for r in reader:
            starts.append(numbers[consumed])  # a quoted field may span lines: the row starts where it started
            rows.append([c.strip() for c in r])
            consumed = reader.line_num
    except csv.Error as exc:
        raise DataError(f"{path} line {numbers[min(consumed, len(numbers) - 1)]}: {exc}") from exc
    return rows, starts


def read_table(path: Path, columns: Sequence[str] | None = None) -> Table:
    """Read ``path``; with ``columns`` the file has no header and these name its columns in order."""
    try:
        # A .gz export (as public run-to-failure sets ship) is read as the text inside it.
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: not gzip, or cut short ({exc})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text") from exc
    rows, lines = _split(path, text)
    if columns:
        names = list(columns)
    else:
        names = rows[0]
        rows, lines = rows[1:], lines[1:]
        if all(_is_number(n) for n in names if n):
            raise DataError(
                f"{path}: the first line looks like data, not a header; name the columns with --columns a,b,c"
            )
        names = [n if n else f"column{i + 1}" for i, n in enumerate(names)]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: duplicate column name(s): {', '.join(dup)}")
    for r, line in zip(rows, lines, strict=True):
        if len(r) != len(names):
            raise DataError(f"{path} line {line} has {len(r)} fields, expected {len(names)} ({', '.join(names)})")
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    cols = {n: [r[j] for r in rows] for j, n in enumerate(names)}
    return Table(path, names, cols, lines)


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
