"""Operating regimes are found where the settings cluster, not cut from a grid (issue 13 item 1)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from analytics import ConditionEncoder

# Six set points of (altitude-like, Mach-like) settings plus a throttle category, as multi-condition fleets have.
POINTS = np.array([[0.0, 0.0, 100], [10.0, 0.25, 100], [20.0, 0.7, 100], [25.0, 0.62, 60], [35.0, 0.84, 100],
                   [42.0, 0.84, 100]])  # fmt: skip


def _six(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(POINTS), size=n)
    noise = np.column_stack([0.003 * rng.normal(size=n), 0.0003 * rng.normal(size=n), np.zeros(n)])
    return POINTS[which] + noise, which


def _one_point(n: int, seed: int) -> np.ndarray:
    """Small noise around one operating point (a single-condition fleet): no structure at all."""
    rng = np.random.default_rng(seed)
    return np.column_stack([0.002 * rng.normal(size=n), 0.0003 * rng.normal(size=n), np.full(n, 100.0)])


def test_noise_around_one_point_is_one_regime() -> None:
    enc = ConditionEncoder().fit(_one_point(5_000, 1))
    assert enc.regimes == 1
    assert set(enc.transform(_one_point(2_000, 2)).tolist()) == {0}


def test_six_set_points_are_six_regimes_each_pure() -> None:
    cond, which = _six(6_000, 3)
    enc = ConditionEncoder().fit(cond)
    assert enc.regimes == 6
    codes = enc.transform(cond)
    # Each set point maps to exactly one code and each code to one set point.
    pairs = set(zip(which.tolist(), codes.tolist(), strict=True))
    assert len(pairs) == 6
    new, new_which = _six(1_000, 4)
    mapping = dict(pairs)
    assert [mapping[w] for w in new_which.tolist()] == enc.transform(new).tolist()


def test_two_loads_are_two_regimes_and_a_value_between_goes_to_the_nearer() -> None:
    # The worker's hourly mean of a load that changed within the hour lies between the set points.
    rng = np.random.default_rng(5)
    load = np.where(rng.random(400) < 0.5, 0.4, 0.9)[:, None]
    enc = ConditionEncoder().fit(load)
    assert enc.regimes == 2
    low, high = enc.transform(np.array([[0.4], [0.9]])).tolist()
    assert low != high
    assert enc.transform(np.array([[0.55], [0.8], [5.0], [np.nan]])).tolist() == [low, high, high, low]


def test_a_setting_spread_over_many_values_is_never_gridded_into_many_regimes() -> None:
    # Ten times max_regimes distinct set points, evenly spread: no k up to 8 shows strong structure, so one regime
    # (the grid made one per value).
    rng = np.random.default_rng(6)
    points = np.arange(80, dtype=float)[rng.integers(0, 80, size=8_000)] * 10.0 + 0.01 * rng.normal(size=8_000)
    enc = ConditionEncoder(max_regimes=8).fit(points[:, None])
    assert enc.silhouette_ is not None
    assert enc.silhouette_ < enc.min_silhouette
    assert enc.regimes == 1


def test_transform_memory_grows_with_rows_not_rows_times_regimes() -> None:
    cond, _ = _six(6_000, 7)
    enc = ConditionEncoder().fit(cond)
    big, _ = _six(200_000, 8)
    tracemalloc.start()
    try:
        codes = enc.transform(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(codes) == len(big)
    # The input is 24 bytes a row; the 50-step grid's n x K x 3 distances were 489 x 24 bytes a row on FD001.
    assert peak < 200 * len(big), f"{peak / len(big):.0f} bytes a row"
