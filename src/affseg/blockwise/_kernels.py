"""Numba kernels of the graph store (no I/O)."""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def add_packed_histograms(histogram, row_edge, row_records, data):
    """Add sparse histogram rows to dense ones, in place.

    Parameters
    ----------
    histogram : (E, B) uint32
        The dense histograms, added to.
    row_edge : (R,) int64
        The edge (row of ``histogram``) of each sparse row.
    row_records : (R,) int64
        The records of each sparse row; the rows' records follow one another in ``data``.
    data : (5 * sum(row_records),) uint8
        Packed records of 5 bytes: the bin (uint8), then its count (uint32, little-endian).
        Read byte by byte, so that no aligned copy of the counts is made.
    """
    position = 0
    for r in range(row_edge.shape[0]):
        e = row_edge[r]
        for _ in range(row_records[r]):
            count = (data[position + 1] | (data[position + 2] << 8) | (data[position + 3] << 16)
                     | (data[position + 4] << 24))
            histogram[e, data[position]] += count
            position += 5
