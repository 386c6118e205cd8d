"""One battery of generic checks, run over every detector and every RUL estimator."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from analytics import (
    Detector,
    EwmaMad,
    GbmRul,
    IsolationForest,
    KnnDistance,
    Mahalanobis,
    ModelError,
    PcaT2Q,
    RulEstimator,
    RunHistory,
    Thresholded,
    clone,
)
from analytics._features import unit_feature_names, unit_features
from analytics._regime import RegimeScaler
from analytics._store import deserialize, serialize
from tests.analytics import synth

NAMES = [*synth.SENSORS, "cond"]

DETECTORS: dict[str, Callable[[], Detector]] = {
    "ewma": lambda: EwmaMad(slow_span=100.0, condition=["cond"]),
    "pca": lambda: PcaT2Q(condition=["cond"], seed=3),
    "mahalanobis": lambda: Mahalanobis(condition=["cond"], seed=3),
    "knn": lambda: KnnDistance(condition=["cond"], seed=3),
    "iforest": lambda: IsolationForest(trees=50, condition=["cond"], seed=3),
}
RULS: dict[str, Callable[[], RulEstimator]] = {
    "gbm": lambda: GbmRul(iterations=40, seed=3),
}


def _trained(make: Callable[[], Detector], seed: int = 1) -> Detector:
    det = make()
    det.set_features(NAMES)
    det.learn_many(synth.healthy(400, seed))
    return det


def _as_dict(row: np.ndarray) -> dict[str, float | None]:
    return {n: float(v) for n, v in zip(NAMES, row, strict=True)}


@pytest.fixture(params=sorted(DETECTORS))
def make_det(request: pytest.FixtureRequest) -> Callable[[], Detector]:
    return DETECTORS[request.param]


@pytest.fixture(params=sorted(RULS))
def make_rul(request: pytest.FixtureRequest) -> Callable[[], RulEstimator]:
    return RULS[request.param]


# -- detectors -------------------------------------------------------------------------------------------------
def test_clone_is_unfitted_with_same_params(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    twin = clone(det)
    assert twin.params() == det.params()
    assert twin.feature_names == []
    twin.set_features(NAMES)
    twin.learn_many(synth.healthy(400, 1))
    test = synth.faulty(200, 9)
    np.testing.assert_allclose(twin.score_many(test), det.score_many(test))


def test_model_file_round_trip_scores_the_same(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    test = synth.faulty(200, 9)
    before = det.score_many(test)
    again = deserialize(serialize(det), "detector")  # the model files' format: only trusted types
    np.testing.assert_allclose(again.score_many(test), before)


def test_same_seed_same_result(make_det: Callable[[], Detector]) -> None:
    test = synth.faulty(200, 9)
    np.testing.assert_array_equal(_trained(make_det).score_many(test), _trained(make_det).score_many(test))


def test_score_one_does_not_learn_and_matches_the_matrix_path(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    row = synth.faulty(200, 9)[150]
    first = det.score_one(_as_dict(row))
    assert det.score_one(_as_dict(row)) == first
    assert first == pytest.approx(float(det.score_many(row[None, :])[0]))
    assert first >= 0


def test_dict_interface_learns_like_the_matrix_one(make_det: Callable[[], Detector]) -> None:
    det = make_det()
    for row in synth.healthy(400, 1):
        det.learn_one(_as_dict(row))
    assert det.feature_names == NAMES
    ref = _trained(make_det)
    test = synth.faulty(100, 9)
    # The streaming detector clips outliers against the band at the start of each batch chunk, so row-by-row
    # learning differs slightly from batch learning.
    assert np.isclose(det.score_many(test), ref.score_many(test), rtol=0.02).mean() > 0.95


def test_missing_features_give_finite_scores(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    row = _as_dict(synth.healthy(10, 5)[3])
    row["temp"] = None
    del row["flow"]
    assert np.isfinite(det.score_one(row))
    assert np.isfinite(det.score_one({"unknown_sensor": 1.0}))
    rows = synth.faulty(100, 9)
    rows[::3, 1] = np.nan
    assert np.isfinite(det.score_many(rows)).all()
    names = list(det.explain_one(row))
    assert set(names) == set(NAMES)


def test_constant_feature_does_not_break_scores(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    rows = synth.healthy(100, 7)
    assert np.isfinite(det.score_many(rows)).all()


def test_better_than_chance_on_faults_and_names_the_faulty_sensors(make_det: Callable[[], Detector]) -> None:
    det = _trained(make_det)
    rows = synth.faulty(400, 11)
    labels = synth.fault_labels(400)
    if isinstance(det, EwmaMad):
        det.learn_many(synth.healthy(200, 12))  # a streaming detector scores in order, warmed on this machine
    scores = det.score_many(rows)
    # Chance is 0.5; an adaptive streaming detector flags the onset and then follows the new level.
    assert synth.auc(scores[~labels], scores[labels]) > 0.65
    worst = int(np.argmax(scores))
    drivers = list(det.explain_one(_as_dict(rows[worst])))[:2]
    assert {"vib", "temp"} & set(drivers)


def test_baseline_detectors_refuse_to_score_before_learning() -> None:
    for name in ("pca", "mahalanobis", "iforest"):
        with pytest.raises(ModelError, match="learned no rows"):
            DETECTORS[name]().score_one({"a": 1.0})


def test_threshold_wrapper_picks_a_threshold_from_normal_rows_only(make_det: Callable[[], Detector]) -> None:
    det = make_det()
    det.set_features(NAMES)
    wrapped = Thresholded(det, persistence=2).calibrate(synth.healthy(600, 1))
    assert wrapped.threshold is not None
    assert wrapped.threshold > 0
    healthy_flags = wrapped.flag_many(det.score_many(synth.healthy(300, 21)))
    assert healthy_flags.mean() < 0.02
    params = clone(wrapped).params()
    assert params["persistence"] == 2
    assert type(params["detector"]) is type(det)


def test_threshold_wrapper_without_threshold_refuses() -> None:
    with pytest.raises(ModelError, match="threshold is not set"):
        Thresholded(EwmaMad()).flag_many(np.array([1.0]))


# -- RUL estimators --------------------------------------------------------------------------------------------
FEATURES = ["vib", "temp", "current", "const"]


def _fitted(make: Callable[[], RulEstimator], *, const: bool = True) -> RulEstimator:
    return make().fit(synth.runs(12, 1, const=const), FEATURES)


def _test_cuts() -> tuple[list[RunHistory], np.ndarray]:
    cuts = [synth.truncate(r, s) for r, s in zip(synth.runs(10, 99), np.linspace(0.3, 0.95, 10), strict=True)]
    return [c for c, _ in cuts], np.array([t for _, t in cuts])


def test_rul_clone_model_file_and_seed(make_rul: Callable[[], RulEstimator]) -> None:
    est = _fitted(make_rul)
    cuts, _ = _test_cuts()
    pred = [p.rul for p in est.predict(cuts)]
    assert clone(est).params() == est.params()
    assert [p.rul for p in deserialize(serialize(est), "estimator").predict(cuts)] == pred
    assert [p.rul for p in _fitted(make_rul).predict(cuts)] == pred


def test_rul_intervals_are_ordered_and_better_than_chance(make_rul: Callable[[], RulEstimator]) -> None:
    est = _fitted(make_rul)
    cuts, truth = _test_cuts()
    preds = est.predict(cuts)
    rul = np.array([p.rul for p in preds])
    assert all(p.lower <= p.rul <= p.upper for p in preds)
    assert [p.unit for p in preds] == [c.unit for c in cuts]
    chance = np.sqrt(np.mean((truth - truth.mean()) ** 2))
    assert np.sqrt(np.mean((rul - truth) ** 2)) < 0.8 * chance


def test_rul_handles_missing_and_constant_features(make_rul: Callable[[], RulEstimator]) -> None:
    runs = synth.runs(8, 2)
    holey = []
    for r in runs:
        v = r.values.copy()
        v[::4, 0] = np.nan
        holey.append(RunHistory(r.unit, r.time, v, r.condition))
    est = make_rul().fit(holey, FEATURES)
    preds = est.predict([synth.truncate(r, 0.5)[0] for r in holey])
    assert all(np.isfinite([p.rul, p.lower, p.upper]).all() for p in preds)


def test_rul_unfitted_refuses(make_rul: Callable[[], RulEstimator]) -> None:
    with pytest.raises(ModelError, match="before fit"):
        make_rul().predict(synth.runs(1, 0))


def test_rul_predicts_from_short_histories(make_rul: Callable[[], RulEstimator]) -> None:
    # A live machine may have only a few rows (or only a recent window of them): still a finite prediction.
    est = _fitted(make_rul)
    run = synth.runs(1, 5)[0]
    short = [
        RunHistory(run.unit, run.time[:k], run.values[:k], None if run.condition is None else run.condition[:k], False)
        for k in (1, 2, 5)
    ]
    preds = est.predict(short)
    assert all(np.isfinite([p.rul, p.lower, p.upper]).all() and p.lower <= p.rul <= p.upper for p in preds)


def _unit_features(run: RunHistory, scaler: RegimeScaler) -> np.ndarray:
    return unit_features(run, scaler, windows=(10, 50), slope_rows=60, reference_rows=48)


def test_unit_features_use_only_rows_up_to_each_time() -> None:
    # The reference to the unit's own first rows must not peek ahead: training rows must look like live ones.
    run = synth.runs(1, 4)[0]
    scaler = RegimeScaler().fit(run.values[:50], run.condition[:50] if run.condition is not None else None)
    full = _unit_features(run, scaler)
    for k in (3, 20, 47, 120):
        part = RunHistory(run.unit, run.time[:k], run.values[:k], None if run.condition is None else run.condition[:k])
        np.testing.assert_allclose(_unit_features(part, scaler), full[:k])
    assert full.shape[1] == len(unit_feature_names(FEATURES, (10, 50)))


def test_unit_features_drift_ignores_a_machines_own_level() -> None:
    # Two machines that differ only in their rated level (a constant offset) drift alike.
    run = synth.runs(1, 6)[0]
    shifted = RunHistory(run.unit, run.time, run.values + np.array([0.7, 5.0, 3.0, 0.0]), run.condition)
    scaler = RegimeScaler().fit(run.values, run.condition)
    a, b = _unit_features(run, scaler), _unit_features(shifted, scaler)
    n = len(FEATURES)
    np.testing.assert_allclose(a[:, 1 + n :], b[:, 1 + n :], atol=1e-9)
    assert not np.allclose(a[:, 1 : 1 + n], b[:, 1 : 1 + n])


def test_gbm_rul_intervals_cover_held_out_units() -> None:
    # Cross-conformal intervals are calibrated on units each model did not see, so they hold on new units.
    est = GbmRul(iterations=60, seed=1).fit(synth.runs(20, 7), FEATURES)
    cuts = [synth.truncate(r, s) for r, s in zip(synth.runs(40, 8), np.linspace(0.1, 0.9, 40), strict=True)]
    preds = est.predict([c for c, _ in cuts])
    truth = np.array([t for _, t in cuts])
    inside = np.mean([p.lower <= t <= p.upper for p, t in zip(preds, truth, strict=True)])
    assert inside >= 0.75


def test_ewma_scores_do_not_depend_on_how_the_stream_is_batched() -> None:
    # The worker scores a few rows a pass, evaluation a whole history at once: the same stream, the same scores.
    rows = synth.faulty(900, 4)[:, :-1]
    whole = EwmaMad(warmup=60, slow_span=300.0)
    whole.set_features(synth.SENSORS)
    in_pieces = clone(whole)
    in_pieces.set_features(synth.SENSORS)
    expected = whole.process_many(rows)
    got = np.concatenate([in_pieces.process_many(rows[i : i + 7]) for i in range(0, len(rows), 7)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_persistence_counts_consecutive_rows_across_calls() -> None:
    wrapped = Thresholded(EwmaMad(), threshold=1.0, persistence=3)
    assert wrapped.flag_many(np.array([2.0, 2.0, 0.0, 2.0, 2.0])).tolist() == [False] * 5
    assert wrapped.flag_many(np.array([2.0, 2.0, 0.0, 2.0])).tolist() == [True, True, False, False]


def test_window_rule_flags_a_sustained_rise_that_no_single_row_crosses() -> None:
    wrapped = Thresholded(EwmaMad(), threshold=10.0, persistence=3, window=4, sustained=2.0)
    # Each row stays far below the row threshold; the 4-row mean passes 2 only once four raised rows are in.
    flags = wrapped.flag_many(np.array([1.0, 1.0, 3.0, 3.0, 3.0]))
    assert flags.tolist() == [False, False, False, False, True]
    # The window carries across calls, and a fresh stream starts with no history.
    assert wrapped.flag_many(np.array([3.0])).tolist() == [True]
    assert wrapped.restarted().flag_many(np.array([3.0, 3.0, 3.0])).tolist() == [False] * 3
    assert Thresholded(EwmaMad(), threshold=10.0).flag_many(np.array([3.0] * 6)).tolist() == [False] * 6


def test_calibrate_sets_the_window_threshold_out_of_fold(make_det: Callable[[], Detector]) -> None:
    det = make_det()
    det.set_features(NAMES)
    wrapped = Thresholded(det, persistence=2, window=6).calibrate(synth.healthy(600, 1))
    assert wrapped.sustained is not None
    assert wrapped.threshold is not None
    # A mean of scores is less spread than the scores: its extreme quantile lies below the rows'.
    assert 0 < wrapped.sustained < wrapped.threshold
    assert wrapped.flag_many(det.score_many(synth.healthy(300, 21))).mean() < 0.02
    # Folds shorter than one window give no evidence for a sustained threshold: the rule stays off.
    short = Thresholded(clone(det), window=400).calibrate(synth.healthy(600, 1))
    assert short.sustained is None
