"""Analytics: anomaly flags and remaining-useful-life estimates per machine, from committed readings."""

from analytics._worker import AnalyticsSummary, run_analytics
from analytics._zscore import RobustZ, ZResult

__all__ = ["AnalyticsSummary", "RobustZ", "ZResult", "run_analytics"]
