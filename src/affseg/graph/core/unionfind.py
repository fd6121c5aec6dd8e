"""Union-find, shared by the kernels.

``parent`` is a 1D array of parents, or a 2D array of node records whose column 0 is the
parent (the Mutex Watershed and MALIS keep a node's other fields in the same cache line).
:func:`find` is inlined (numba IR), so kernels compiled with ``_nrt=False`` can call it.
"""
from numba import njit, types
from numba.extending import overload


def _parent(parent, i):
    """``parent[i]`` of a 1D array, ``parent[i, 0]`` of node records (numba only)."""
    raise NotImplementedError


def _set_parent(parent, i, p):
    """Set ``parent[i]`` (1D) or ``parent[i, 0]`` (node records) to ``p`` (numba only)."""
    raise NotImplementedError


def _records(parent):
    return isinstance(parent, types.Array) and parent.ndim == 2


@overload(_parent, inline="always")
def _parent_impl(parent, i):
    if _records(parent):
        return lambda parent, i: parent[i, 0]
    return lambda parent, i: parent[i]


@overload(_set_parent, inline="always")
def _set_parent_impl(parent, i, p):
    if _records(parent):
        def set_record(parent, i, p):
            parent[i, 0] = p
        return set_record

    def set_entry(parent, i, p):
        parent[i] = p
    return set_entry


@njit(cache=True, nogil=True, inline="always")
def find(parent, i, skip_short=False):
    """Root of ``i``, halving the path on the way.

    With ``skip_short`` (a constant at the call), nothing is stored where the path is already
    short (the parent is the root): fewer dirty cache lines where nodes are visited at random
    (the Mutex Watershed's union-find ran about 5 % slower without it), but an extra branch
    that costs about 10 % on paths walked in raster order (connected components).
    """
    p = _parent(parent, i)
    while p != i:
        g = _parent(parent, p)
        if skip_short and g == p:
            return p
        _set_parent(parent, i, g)
        i = g
        p = _parent(parent, i)
    return i


@njit(cache=True, nogil=True)
def union(parent, i, j):
    """Join the sets of ``i`` and ``j``; the smaller root becomes the root."""
    ri = find(parent, i)
    rj = find(parent, j)
    if ri == rj:
        return ri
    if ri < rj:
        _set_parent(parent, rj, ri)
        return ri
    _set_parent(parent, ri, rj)
    return rj
