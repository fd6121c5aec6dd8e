"""Machinery shared by every kernel family: union-find, relabelling, grid edge ids, prefetch."""
