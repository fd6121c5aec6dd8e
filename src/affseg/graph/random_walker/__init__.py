"""The seeded random walker (scikit-image's probabilities, any offsets, K labels at once)."""
from .solver import MIN_AFFINITY_WEIGHT, RandomWalkerSystem, image_weights, random_walker

__all__ = ["MIN_AFFINITY_WEIGHT", "RandomWalkerSystem", "image_weights", "random_walker"]
