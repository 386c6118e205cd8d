"""The batch's readings as one PostgreSQL binary COPY stream, encoded here rather than row by row by psycopg.

psycopg dumps a ``float8[]`` through its Python array dumper, about 15 us a row: at 10 readings a message that was
half of ingest's CPU per message after the MQTT receive path was replaced (issue 17). The rows have one fixed
shape, (int4 machine, timestamptz, float8[]), so one ``struct`` call a row writes them in the format of
https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4 (the array as ``array_send`` writes it).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache

__all__ = ["SIGNATURE", "TRAILER", "encode_readings"]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no header extension
TRAILER = b"\xff\xff"

_FLOAT8_OID = 701
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01 UTC, where timestamptz counts microseconds from
_NULL = b"\xff\xff\xff\xff"
# Field count, machine (length, int4), time (length, int8 microseconds), array length; then the array's header:
# dimensions, has-null flag, element type; one dimension's size and lower bound.
_HEAD = struct.Struct(">hiiiqi iii ii")
_EMPTY = struct.Struct(">hiiiqi iii")  # a zero-length array has no dimension
_ELEMENT = struct.Struct(">id")


@lru_cache(maxsize=64)
def _elements(n: int) -> struct.Struct:
    """n (length 8, float8) pairs: an array without NULLs in one call."""
    return struct.Struct(">" + "id" * n)


def encode_readings(rows: Mapping[tuple[int, int], list[float | None]]) -> bytes:
    """``(machine_id, epoch ms) -> values`` as a whole binary COPY stream (signature, rows, trailer) for a table
    ``(machine_id int4, time timestamptz, vals float8[])``; ``None`` values are NULL elements."""
    out = [SIGNATURE]
    append = out.append
    head, empty, element = _HEAD.pack, _EMPTY.pack, _ELEMENT.pack
    for (machine_id, ms), vals in rows.items():
        n = len(vals)
        micros = (ms - _PG_EPOCH_MS) * 1000
        if n == 0:
            append(empty(3, 4, machine_id, 8, micros, 12, 0, 0, _FLOAT8_OID))
            continue
        if None in vals:
            body = b"".join(_NULL if v is None else element(8, v) for v in vals)
            append(head(3, 4, machine_id, 8, micros, 20 + len(body), 1, 1, _FLOAT8_OID, n, 1))
            append(body)
        else:
            pairs: list[object] = [8] * (2 * n)
            pairs[1::2] = vals  # no None among them: checked above
            append(head(3, 4, machine_id, 8, micros, 20 + 12 * n, 1, 0, _FLOAT8_OID, n, 1))
            append(_elements(n).pack(*pairs))
    append(TRAILER)
    return b"".join(out)
