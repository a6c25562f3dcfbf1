"""Monitoring: the prediction log and the tables monitoring reads and writes."""

from .prediction_log import SPOOL_CAP_BYTES, PredictionLog

__all__ = ["SPOOL_CAP_BYTES", "PredictionLog"]
