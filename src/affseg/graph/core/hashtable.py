"""Open-addressing hash tables of non-zero uint64 keys (0 marks an empty slot), shared by the kernels.

A table is a ``keys`` array whose length is a power of two, probed linearly from a home slot
given by a hash of the key; a map keeps its values in ``vals``, at the slots of their keys.
Node pairs are keyed by :func:`pair_key`. Callers keep tables at most 3/4 full (and grow or
rebuild them), so a probe always ends. :func:`set_probe`, :func:`set_add` and :func:`set_home` are
inlined (numba IR), so kernels compiled with ``_nrt=False`` can call them.

Sets hash with splitmix64 (:func:`mix`): the Mutex Watershed's set of mutex pairs is large,
read at random and tuned with it. Maps (GASP's edges, MALIS's label lists, the signed region
graph) hash with one multiply (Fibonacci hashing, :func:`map_home`): their lookups are many and
cheap, and splitmix64's extra multiply and shifts made GASP on voxels about 5 % slower (a
one-off A/B measurement, no script kept; the kept comparison is benchmarks/bench_revisions.py).
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def mix(x):
    """splitmix64 finaliser: a uniform pseudo-random uint64 from any uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def set_home(keys, key):
    """The slot where the probe for ``key`` starts in a set (splitmix64)."""
    return np.int64(mix(key) & np.uint64(keys.shape[0] - 1))


@njit(cache=True, nogil=True, inline="always")
def map_home(keys, key):
    """The slot where the probe for ``key`` starts in a map: a multiply by 2**64 / phi (as in
    Fibonacci hashing) and a fold of the high bits into the low ones, whose low bits index the
    table. Maps and sets hash differently: probe a map only through :func:`hash_put` /
    :func:`hash_get`, a set through :func:`set_probe` / :func:`set_add`."""
    h = key * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(keys.shape[0] - 1))


@njit(cache=True, nogil=True, inline="always")
def probe_from(keys, key, i):
    """The slot holding ``key``, or the empty slot where it would go, probing linearly from ``i``."""
    mask = np.int64(keys.shape[0] - 1)
    while keys[i] != 0 and keys[i] != key:
        i = (i + 1) & mask
    return i


@njit(cache=True, nogil=True, inline="always")
def set_probe(keys, key):
    """The slot of ``key`` in a set (see :func:`probe_from`)."""
    return probe_from(keys, key, set_home(keys, key))


@njit(cache=True, nogil=True)
def pair_key(a, b, n):
    """The key of the unordered node pair ``{a, b}`` (nodes ``0 .. n``)."""
    lo, hi = min(a, b), max(a, b)
    return np.uint64(lo) * np.uint64(n + 1) + np.uint64(hi) + np.uint64(1)


# ---------------------------------------------------------------- sets


@njit(cache=True, nogil=True, inline="always")
def set_add(keys, key):
    """Add ``key`` to the set; True if it was new."""
    i = set_probe(keys, key)
    if keys[i] == key:
        return False
    keys[i] = key
    return True


@njit(cache=True, nogil=True)
def grown_set(keys):
    """The set at twice the capacity."""
    new_keys = np.zeros(keys.shape[0] * 2, dtype=np.uint64)
    for k in range(keys.shape[0]):
        if keys[k] != 0:
            set_add(new_keys, keys[k])
    return new_keys


# ---------------------------------------------------------------- maps


@njit(cache=True, nogil=True)
def hash_put(keys, vals, key, value):
    """Map ``key`` to ``value``; True if the key was new."""
    i = probe_from(keys, key, map_home(keys, key))
    fresh = keys[i] == 0
    keys[i] = key
    vals[i] = value
    return fresh


@njit(cache=True, nogil=True)
def hash_get(keys, vals, key):
    """The value of ``key``, or -1 if it is not in the map."""
    i = probe_from(keys, key, map_home(keys, key))
    if keys[i] == 0:
        return -1
    return vals[i]


@njit(cache=True, nogil=True)
def hash_fill(keys, vals, eu, ev, deleted, n):
    """(Re)build a map from node pairs to edges from the live edges; returns the number of keys."""
    keys[:] = 0
    count = 0
    for e in range(eu.shape[0]):
        if not deleted[e]:
            hash_put(keys, vals, pair_key(eu[e], ev[e], n), e)
            count += 1
    return count
