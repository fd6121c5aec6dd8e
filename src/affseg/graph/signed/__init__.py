"""Signed graphs: the Mutex Watershed and GASP."""
