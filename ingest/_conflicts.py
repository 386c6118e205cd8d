"""Which messages of a batch re-sent a sensor's value at an instant with another value than the one kept.

The value kept is the one stored first: the database's, or when it had none, the batch's first. Every other
message that sent a different value for that sensor and instant is a conflict, kept as a dead letter. Computed only
for batches where something clashed, so the common batch pays nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wearline.wire import DecodedMessage, ms_to_datetime

__all__ = ["Clash", "Entry", "conflicts_of", "describe"]

Key = tuple[int, int]  # (machine_id, epoch ms)


@dataclass(frozen=True, slots=True)
class Clash:
    """One sensor value of a message that differs from the value kept."""

    ts_ms: int
    position: int  # 0-based index into vals
    sent: float
    kept: float


# A valid message of the batch: its machine id, that machine's sensor positions (1-based) and its samples. A plain
# tuple: one is built per message on the hot path.
Entry = tuple[int, Mapping[str, int], DecodedMessage]


def conflicts_of(
    entries: Sequence[Entry],
    in_batch: Mapping[int, list[Clash]],
    stored: Mapping[Key, Sequence[float | None]],
) -> dict[int, list[Clash]]:
    """Clashes per entry index.

    ``in_batch``: clashes with the batch's first value, found while the batch was assembled. ``stored``: the
    values the database held before this batch for the rows where the batch's first values clashed with them;
    there the stored value is the one kept, so those rows' messages are checked against it instead.
    """
    out: dict[int, list[Clash]] = {}
    for idx, clashes in in_batch.items():
        for c in clashes:
            old = stored.get((entries[idx][0], c.ts_ms))
            if old is not None and c.position < len(old) and old[c.position] is not None:
                continue  # decided against the stored value below
            out.setdefault(idx, []).append(c)
    if not stored:
        return out
    machines = {mid for mid, _ in stored}
    for idx, (machine_id, sensors, decoded) in enumerate(entries):
        if machine_id not in machines:
            continue
        for sample in decoded.samples:
            old = stored.get((machine_id, sample.ts_ms))
            if old is None:
                continue
            for name, value in sample.values.items():
                if value is None:
                    continue
                pos = sensors[name] - 1
                kept = old[pos] if pos < len(old) else None
                if kept is not None and kept != float(value):
                    out.setdefault(idx, []).append(Clash(sample.ts_ms, pos, float(value), kept))
    return out


def describe(entry: Entry, clashes: Sequence[Clash], limit: int = 5) -> str:
    """The dead letter's detail: which sensors, when, the value kept and the value sent."""
    names = {pos - 1: name for name, pos in entry[1].items()}
    parts = [
        f"{names.get(c.position, f'#{c.position + 1}')} at {_iso(c.ts_ms)} kept {c.kept!r} sent {c.sent!r}"
        for c in clashes[:limit]
    ]
    more = f" (+{len(clashes) - limit} more)" if len(clashes) > limit else ""
    return "re-sent value differs from the one stored first: " + "; ".join(parts) + more


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
