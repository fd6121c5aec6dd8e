"""A binary min-heap on ``(key, tie)`` pairs with one item per entry, shared by the kernels.

The heap is three arrays of the same length (``keys``, ``ties``, ``items``) and a size the
caller keeps; entries leave in increasing ``(key, tie)`` order (entries equal on both leave in
no set order). ``ties`` may be None: the order is then that of ``keys`` alone. Callers pick
what the keys hold: a score and an age (agglomeration), a negated priority and an edge id
(GASP), or one key packing a height and an arrival count (seeded watershed). Inlined (numba
IR), so that each caller compiles it for its own array types. A caller that is compiled with
reference counting calls :func:`heap_push_call` / :func:`heap_pop_call` instead: inlined into
it, the helpers' array arguments were counted up and down on every step (GASP on voxels executed
about 6 % more instructions, counted once under valgrind; no script kept).
"""
from numba import njit, types
from numba.extending import overload

# The ties are read only where the keys are equal (inside the short-circuit of ``or``): loading
# them up front, with the keys, made GASP's heap operations about 2.5 % of its instructions
# slower than the hand-written heap they replaced (counted once under valgrind; no script kept).


def _tie_lt_entry(tie, ties, pos):
    """``tie < ties[pos]``; False without ties (numba only)."""
    raise NotImplementedError


def _entry_tie_lt(ties, pos, tie):
    """``ties[pos] < tie``; False without ties (numba only)."""
    raise NotImplementedError


def _entries_tie_lt(ties, a, b):
    """``ties[a] < ties[b]``; False without ties (numba only)."""
    raise NotImplementedError


def _move(keys, ties, items, dst, src):
    """Copy the entry at ``src`` to ``dst`` (numba only)."""
    raise NotImplementedError


def _place(keys, ties, items, pos, key, tie, item):
    """Write an entry at ``pos`` (numba only)."""
    raise NotImplementedError


def _tie(ties, pos):
    """``ties[pos]``, or None without ties (numba only)."""
    raise NotImplementedError


def _no_ties(ties) -> bool:
    return isinstance(ties, types.NoneType)


@overload(_tie_lt_entry, inline="always")
def _tie_lt_entry_impl(tie, ties, pos):
    if _no_ties(ties):
        return lambda tie, ties, pos: False
    return lambda tie, ties, pos: tie < ties[pos]


@overload(_entry_tie_lt, inline="always")
def _entry_tie_lt_impl(ties, pos, tie):
    if _no_ties(ties):
        return lambda ties, pos, tie: False
    return lambda ties, pos, tie: ties[pos] < tie


@overload(_entries_tie_lt, inline="always")
def _entries_tie_lt_impl(ties, a, b):
    if _no_ties(ties):
        return lambda ties, a, b: False
    return lambda ties, a, b: ties[a] < ties[b]


@overload(_move, inline="always")
def _move_impl(keys, ties, items, dst, src):
    if _no_ties(ties):
        def move_keyed(keys, ties, items, dst, src):
            keys[dst] = keys[src]
            items[dst] = items[src]
        return move_keyed

    def move(keys, ties, items, dst, src):
        keys[dst] = keys[src]
        ties[dst] = ties[src]
        items[dst] = items[src]
    return move


@overload(_place, inline="always")
def _place_impl(keys, ties, items, pos, key, tie, item):
    if _no_ties(ties):
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
    if _no_ties(ties):
        return lambda ties, pos: None
    return lambda ties, pos: ties[pos]


@njit(cache=True, nogil=True, inline="always")
def heap_push(keys, ties, items, size, key, tie, item):
    """Insert an entry into a heap of ``size`` entries (the arrays have room for one more)."""
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if not (key < keys[parent] or (key == keys[parent] and _tie_lt_entry(tie, ties, parent))):
            break
        _move(keys, ties, items, pos, parent)
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
        right = child + 1
        if right < size and (keys[right] < keys[child]
                             or (keys[right] == keys[child] and _entries_tie_lt(ties, right, child))):
            child = right
        if not (keys[child] < key or (keys[child] == key and _entry_tie_lt(ties, child, tie))):
            break
        _move(keys, ties, items, pos, child)
        pos = child
    _place(keys, ties, items, pos, key, tie, item)


@njit(cache=True, nogil=True, _nrt=False)
def heap_push_call(keys, ties, items, size, key, tie, item):
    """:func:`heap_push` as a call compiled without reference counting (it allocates nothing)."""
    heap_push(keys, ties, items, size, key, tie, item)


@njit(cache=True, nogil=True, _nrt=False)
def heap_pop_call(keys, ties, items, size):
    """:func:`heap_pop` as a call compiled without reference counting."""
    heap_pop(keys, ties, items, size)
