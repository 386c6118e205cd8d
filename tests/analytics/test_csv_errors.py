"""Users' exports with mistakes in them (issue 10, item 7): a text cell in a numeric column and a bad time value are
reported at their own line of the file, with the column and the value; the usual spellings of "missing" are NaN."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analytics import DataError, read_table


def _file(tmp_path: Path, rows: list[str], header: str = "unit,time,temp_c,vib") -> Path:
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_text_cell_in_a_numeric_column_is_refused_at_its_line(tmp_path: Path) -> None:
    """Before: the column silently dropped out of the default features."""
    rows = [f"u1,{h},{20 + h / 10},{0.1 * h}" for h in range(100)]
    rows[58] = "u1,58,n/a?,5.8"  # line 60: the header is line 1
    table = read_table(_file(tmp_path, rows))
    with pytest.raises(DataError, match=r"data\.csv line 60, column temp_c: 'n/a\?' is not a number"):
        table.is_numeric("temp_c")
    assert table.is_numeric("vib")


@pytest.mark.parametrize("na", ["", "NA", "NaN", "nan", "null", "NULL", "N/A", "n/a", "-"])
def test_the_usual_spellings_of_missing_are_nan(tmp_path: Path, na: str) -> None:
    table = read_table(_file(tmp_path, ["u1,0,20,1", f"u1,1,{na},2", "u1,2,22,3"]))
    temp = table.numeric("temp_c")
    assert temp[0] == 20
    assert math.isnan(temp[1])
    np.testing.assert_array_equal(table.numeric("vib"), [1, 2, 3])


def test_a_bad_time_value_is_reported_at_its_own_line_with_its_own_value(tmp_path: Path) -> None:
    """Before: 'yesterday' on line 61 was reported as row 2, value 0.0."""
    rows = [f"u1,2024-01-01 {h % 24:02d}:00:00,20,1" for h in range(100)]
    rows[59] = "u1,yesterday,20,1"
    with pytest.raises(DataError, match=r"data\.csv line 61, column time: 'yesterday' is neither a number of hours"):
        read_table(_file(tmp_path, rows)).hours("time")


def test_lines_count_as_an_editor_counts_them_past_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("# exported from the historian\nunit,time,temp_c,vib\n\nu1,0,20,1\nu1,1,oops,2\n")
    with pytest.raises(DataError, match=r"line 5, column temp_c: 'oops' is not a number"):
        read_table(path).numeric("temp_c")


def test_a_text_column_stays_text(tmp_path: Path) -> None:
    table = read_table(_file(tmp_path, ["u1,0,pump,1", "u1,1,fan,2", "u1,2,-,3"], "unit,time,kind,vib"))
    assert not table.is_numeric("kind")
