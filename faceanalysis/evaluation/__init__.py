"""Evaluation protocols, metrics and report for ``faceanalysis eval`` (see :mod:`faceanalysis.evaluate`)."""
from . import metrics
from .protocols import BENCHMARK_TASKS, DATASETS, PROTOCOLS, Context, Row

__all__ = ["metrics", "BENCHMARK_TASKS", "DATASETS", "PROTOCOLS", "Context", "Row"]
