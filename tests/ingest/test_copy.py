"""Ingest's own binary COPY encoding of readings, read back by a real PostgreSQL and compared with psycopg's."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest._copy import SIGNATURE, TRAILER, encode_readings
from tests.conftest import TEST_DSN

Rows = dict[tuple[int, int], list[float | None]]

TABLE = "CREATE TEMP TABLE r (machine_id int4, time timestamptz, vals float8[])"
CASES: Rows = {
    (1, 1_733_270_400_123): [1.5, -2.25, 0.0, 1e300, -1e-300],  # no NULLs
    (2, 1_733_270_400_123): [None, 3.0, None],  # NULL elements, first and last
    (3, 0): [None],  # only NULL, at the Unix epoch (before PostgreSQL's 2000 epoch: a negative offset)
    (2_147_483_647, 4_102_444_800_000): [7.0],  # the largest int4 machine, year 2100
    (4, -86_400_001): [],  # an empty array, before 1970
    (5, 1_733_270_400_999): [float(i) for i in range(256)],  # the widest machine ingest allows
}


def _read_back(stream: bytes) -> list[tuple[object, ...]]:
    with psycopg.connect(TEST_DSN, autocommit=True, options="-c timezone=UTC") as conn:
        conn.execute(TABLE)
        with conn.cursor().copy("COPY r (machine_id, time, vals) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)
        return conn.execute("SELECT machine_id, time, vals FROM r ORDER BY machine_id, time").fetchall()


def _psycopg_rows(rows: Rows) -> list[tuple[object, ...]]:
    """The same rows written by psycopg's own dumpers: what ingest did before."""
    with psycopg.connect(TEST_DSN, autocommit=True, options="-c timezone=UTC") as conn:
        conn.execute(TABLE)
        with conn.cursor().copy("COPY r (machine_id, time, vals) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "timestamptz", "float8[]"])
            for (machine_id, ms), vals in rows.items():
                copy.write_row((machine_id, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), vals))
        return conn.execute("SELECT machine_id, time, vals FROM r ORDER BY machine_id, time").fetchall()


def test_every_shape_reads_back_as_psycopg_wrote_it() -> None:
    stream = encode_readings(CASES)
    assert stream.startswith(SIGNATURE)
    assert stream.endswith(TRAILER)
    got = _read_back(stream)
    assert got == _psycopg_rows(CASES)
    # And what they are, independently of psycopg: the times to the millisecond, the values bit for bit.
    want = sorted(
        (mid, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms), vals) for (mid, ms), vals in CASES.items()
    )
    assert got == [(m, t, v) for m, t, v in want]


def test_no_rows_is_a_valid_empty_stream() -> None:
    assert _read_back(encode_readings({})) == []


def test_a_row_cut_short_is_refused_by_the_server() -> None:
    """The encoding is all the server checks: a truncated array must fail the COPY, not store a wrong row."""
    stream = encode_readings({(1, 1_733_270_400_000): [1.0, 2.0]})
    with pytest.raises(psycopg.errors.Error):
        _read_back(stream[: -len(TRAILER) - 4] + TRAILER)


finite = st.floats(allow_nan=False, allow_infinity=False)


def _bits(vals: object) -> list[bytes | None]:
    assert isinstance(vals, list)
    return [None if v is None else struct.pack(">d", v) for v in vals]


@settings(max_examples=50)  # two connections an example
@given(
    st.dictionaries(
        st.tuples(st.integers(1, 2**31 - 1), st.integers(-2_000_000_000_000, 8_000_000_000_000)),
        st.lists(st.one_of(st.none(), finite), max_size=12),
        max_size=20,
    )
)
def test_any_batch_reads_back_as_psycopg_wrote_it(rows: Rows) -> None:
    got = _read_back(encode_readings(rows))
    assert got == _psycopg_rows(rows)
    # Bit for bit, beyond ==: -0.0 stays -0.0.
    assert [_bits(vals) for _, _, vals in got] == [_bits(rows[k]) for k in sorted(rows)]
