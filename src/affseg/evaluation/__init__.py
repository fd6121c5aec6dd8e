"""Segmentation metrics: VOI, adapted Rand, CREMI score, split/merge curves."""
from .curves import BEST_BY, best_threshold, decimal_threshold, plot_split_merge, split_merge_curve
from .metrics import adapted_rand_error, evaluate, variation_of_information

__all__ = [
    "BEST_BY",
    "adapted_rand_error",
    "best_threshold",
    "decimal_threshold",
    "evaluate",
    "plot_split_merge",
    "split_merge_curve",
    "variation_of_information",
]
