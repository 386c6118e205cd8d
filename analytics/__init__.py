"""Analytics: anomaly flags and remaining-useful-life estimates per machine, from committed readings.

Every detector follows one streaming contract (:class:`Detector`: ``learn_one``/``score_one`` over feature
dicts, higher is more anomalous) with thresholds in :class:`Thresholded`; every RUL model fits on run-to-failure
histories and predicts with an interval (:class:`RulEstimator`). The worker, the offline CLI and the evaluation
all use these same classes.
"""

from typing import TYPE_CHECKING

from wearline.lazy import lazy_exports

if TYPE_CHECKING:
    from analytics._base import (
        AnalyticsError,
        DataError,
        Detector,
        Features,
        ModelError,
        RulEstimator,
        RulPrediction,
        RunHistory,
        clone,
    )
    from analytics._batch import BaselineDetector
    from analytics._bench import run_bench
    from analytics._evaluate import evaluate_dir
    from analytics._ewma import EwmaMad
    from analytics._iforest import IsolationForest
    from analytics._knn import KnnDistance
    from analytics._mahalanobis import Mahalanobis
    from analytics._offline import DETECTORS, AnomalyModel, RulModel, make_detector, make_rul
    from analytics._pca import PcaT2Q
    from analytics._regime import ConditionEncoder, RegimeScaler
    from analytics._registry import RegisteredModel, list_models, read_model_file, register_model, unusable_for_type
    from analytics._rul_cv import evaluate_cmapss
    from analytics._rul_gbm import GbmRul
    from analytics._rul_score import cv_line
    from analytics._store import convert_pickle, load_model, save_model
    from analytics._tabular import Table, read_table, write_rows
    from analytics._threshold import Thresholded
    from analytics._worker import AnalyticsSummary, run_analytics

__all__ = [
    "DETECTORS",
    "AnalyticsError",
    "AnalyticsSummary",
    "AnomalyModel",
    "BaselineDetector",
    "ConditionEncoder",
    "DataError",
    "Detector",
    "EwmaMad",
    "Features",
    "GbmRul",
    "IsolationForest",
    "KnnDistance",
    "Mahalanobis",
    "ModelError",
    "PcaT2Q",
    "RegimeScaler",
    "RegisteredModel",
    "RulEstimator",
    "RulModel",
    "RulPrediction",
    "RunHistory",
    "Table",
    "Thresholded",
    "clone",
    "convert_pickle",
    "cv_line",
    "evaluate_cmapss",
    "evaluate_dir",
    "list_models",
    "load_model",
    "make_detector",
    "make_rul",
    "read_model_file",
    "read_table",
    "register_model",
    "run_analytics",
    "run_bench",
    "save_model",
    "unusable_for_type",
    "write_rows",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AnalyticsError": "analytics._base",
        "DataError": "analytics._base",
        "Detector": "analytics._base",
        "Features": "analytics._base",
        "ModelError": "analytics._base",
        "RulEstimator": "analytics._base",
        "RulPrediction": "analytics._base",
        "RunHistory": "analytics._base",
        "clone": "analytics._base",
        "BaselineDetector": "analytics._batch",
        "run_bench": "analytics._bench",
        "evaluate_dir": "analytics._evaluate",
        "EwmaMad": "analytics._ewma",
        "IsolationForest": "analytics._iforest",
        "KnnDistance": "analytics._knn",
        "Mahalanobis": "analytics._mahalanobis",
        "DETECTORS": "analytics._offline",
        "AnomalyModel": "analytics._offline",
        "RulModel": "analytics._offline",
        "make_detector": "analytics._offline",
        "make_rul": "analytics._offline",
        "PcaT2Q": "analytics._pca",
        "ConditionEncoder": "analytics._regime",
        "RegimeScaler": "analytics._regime",
        "RegisteredModel": "analytics._registry",
        "list_models": "analytics._registry",
        "read_model_file": "analytics._registry",
        "register_model": "analytics._registry",
        "unusable_for_type": "analytics._registry",
        "evaluate_cmapss": "analytics._rul_cv",
        "GbmRul": "analytics._rul_gbm",
        "cv_line": "analytics._rul_score",
        "convert_pickle": "analytics._store",
        "load_model": "analytics._store",
        "save_model": "analytics._store",
        "Table": "analytics._tabular",
        "read_table": "analytics._tabular",
        "write_rows": "analytics._tabular",
        "Thresholded": "analytics._threshold",
        "AnalyticsSummary": "analytics._worker",
        "run_analytics": "analytics._worker",
    },
)
