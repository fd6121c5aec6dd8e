"""Segmentation metrics: VOI, adapted Rand, CREMI score, split/merge curves, error reports."""
from .curves import BEST_BY, best_threshold, decimal_threshold, plot_split_merge, split_merge_curve
from .metrics import adapted_rand_error, evaluate, variation_of_information
from .report import error_report, write_report

__all__ = [
    "BEST_BY",
    "adapted_rand_error",
    "best_threshold",
    "decimal_threshold",
    "error_report",
    "evaluate",
    "plot_split_merge",
    "split_merge_curve",
    "variation_of_information",
    "write_report",
]
