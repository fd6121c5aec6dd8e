"""affseg: learned, affinity-based instance segmentation of EM volumes."""
__version__ = "0.1.0"
