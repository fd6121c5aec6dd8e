"""A binary min-heap on ``(key, tie)`` pairs with one item per entry, shared by the kernels.

The heap is three arrays of the same length (``keys``, ``ties``, ``items``) and a size the
caller keeps; entries leave in increasing ``(key, tie)`` order (entries equal on both leave in
no set order). ``ties`` may be None: the order is then that of ``keys`` alone. Callers pick
what the keys hold: a score and an age (agglomeration), a negated priority and an edge id
(GASP), or one key packing a height and an arrival count (seeded watershed). Inlined (numba
IR), so that each caller compiles it for its own array types.
"""
from numba import njit, types
from numba.extending import overload


def _tie_before(tie, other_tie):
    """``tie < other_tie``, False without ties (numba only)."""
    raise NotImplementedError


def _place(keys, ties, items, pos, key, tie, item):
    """Write an entry at ``pos`` (numba only)."""
    raise NotImplementedError


def _tie(ties, pos):
    """``ties[pos]``, or None without ties (numba only)."""
    raise NotImplementedError


@overload(_tie_before, inline="always")
def _tie_before_impl(tie, other_tie):
    if isinstance(tie, types.NoneType):
        return lambda tie, other_tie: False
    return lambda tie, other_tie: tie < other_tie


@overload(_place, inline="always")
def _place_impl(keys, ties, items, pos, key, tie, item):
    if isinstance(ties, types.NoneType):
        def place_keyed(keys, ties, items, pos, key, tie, item):
            keys[pos] = key
            items[pos] = item
        return place_keyed

    def place(keys, ties, items, pos, key, tie, item):
        keys[pos] = key
        ties[pos] = tie
        items[pos] = item
    return place


@overload(_tie, inline="always")
def _tie_impl(ties, pos):
    if isinstance(ties, types.NoneType):
        return lambda ties, pos: None
    return lambda ties, pos: ties[pos]


@njit(cache=True, nogil=True, inline="always")
def _before(key, tie, other_key, other_tie):
    return key < other_key or (key == other_key and _tie_before(tie, other_tie))


@njit(cache=True, nogil=True, inline="always")
def heap_push(keys, ties, items, size, key, tie, item):
    """Insert an entry into a heap of ``size`` entries (the arrays have room for one more)."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if not _before(key, tie, keys[parent], _tie(ties, parent)):
            break
        _place(keys, ties, items, pos, keys[parent], _tie(ties, parent), items[parent])
        pos = parent
    _place(keys, ties, items, pos, key, tie, item)


@njit(cache=True, nogil=True, inline="always")
def heap_pop(keys, ties, items, size):
    """Remove the first entry (index 0) of a heap of ``size`` >= 1 entries."""
    size -= 1
    if size == 0:
        return
    key, tie, item = keys[size], _tie(ties, size), items[size]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _before(keys[child + 1], _tie(ties, child + 1), keys[child], _tie(ties, child)):
            child += 1
        if not _before(keys[child], _tie(ties, child), key, tie):
            break
        _place(keys, ties, items, pos, keys[child], _tie(ties, child), items[child])
        pos = child
    _place(keys, ties, items, pos, key, tie, item)
