"""Machinery shared by every kernel family: union-find, binary heap, hash tables,
relabelling, grid edges, prefetch."""
