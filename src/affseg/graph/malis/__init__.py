"""MALIS: the structured loss's weights (Turaga 2009; constrained, Funke 2018) and its inference,
threshold + connected components."""
from .components import connected_components
from .weights import constrained_malis_weights, malis_pair_counts, malis_weights

__all__ = ["connected_components", "constrained_malis_weights", "malis_pair_counts", "malis_weights"]
