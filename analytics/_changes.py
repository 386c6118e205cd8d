"""Row-to-row changes of one unit's sensors: what levels hide, for a detector to see.

Machines of one type differ in rated parameters (flow, current, insulation resistance), so the normal range of a
sensor's level across a fleet is wide, and a spike, the edge of a step or a burst of noise can stay inside it. Its
change from the row before cannot: within one machine and operating regime, consecutive rows differ by little.
"""

from __future__ import annotations

import numpy as np

from analytics._base import Matrix
from analytics._regime import Codes

__all__ = ["row_changes"]


def row_changes(x: Matrix, codes: Codes, *, warmup: int) -> Matrix:
    """Each row less the one before it, for one unit's rows in time order.

    A change of operating regime moves every sensor for a good reason, and so does a cold start: those rows (the
    first ``warmup`` rows, and every row whose regime differs from the row before) get 0, "no change". NaN (a
    sensor that did not report) stays NaN, so a dropout still shows as missing.
    """
    out = np.vstack([x[:1] - x[:1], np.diff(x, axis=0)]) if len(x) else x.copy()
    steady = np.concatenate([[False], codes[1:] == codes[:-1]])[: len(x)]
    steady[:warmup] = False
    return np.asarray(np.where(steady[:, None], out, np.where(np.isnan(x), np.nan, 0.0)), dtype=np.float64)
