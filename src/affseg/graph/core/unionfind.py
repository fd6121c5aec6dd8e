"""Union-find on int64 parent arrays, shared by the kernels."""
from numba import njit


@njit(cache=True, nogil=True)
def find(parent, i):
    """Root of ``i``, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def union(parent, i, j):
    """Join the sets of ``i`` and ``j``; the smaller root becomes the root."""
    ri = find(parent, i)
    rj = find(parent, j)
    if ri == rj:
        return ri
    if ri < rj:
        parent[rj] = ri
        return ri
    parent[ri] = rj
    return rj
