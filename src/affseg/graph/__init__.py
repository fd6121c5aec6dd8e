"""Graph kernels: numpy arrays in, numpy arrays out, no I/O."""
