"""numba kernels of the Mutex Watershed (Wolf et al. 2018/2020) on grids and explicit graphs.

Edges are processed once, strongest ``|weight|`` first: an attractive edge (weight > 0) joins
its two clusters unless a mutex (a repulsive edge processed earlier) or two different seeds
separate them; a repulsive edge (weight <= 0) adds a mutex between its clusters.

Ordering (grids) is a stable LSD radix sort on a 31-bit key, ``|w|`` cut to 30 bits and a tie
bit; runs that the key ties are then put in the tie order (by default first the edges that
the edges beside them agree with, then a hash of the edge id; or a sign first, then channel
and raster order), and entries that float64 tells apart are put in exact order. The
sorted edges are then kept as 4-byte entries.

State, passed around as plain arrays:

- ``node`` ``(n, 3)``: per node its union-find ``PARENT`` and, on roots, the ``COUNT`` of mutex
  partners listed and the ``HEAD`` block of that list (one row, so one cache miss brings all).
- ``blocks`` ``(b, BLOCK + 1)``: the partner lists, ``BLOCK`` partners per block plus the index
  of the next block; only a list's head block is partly filled (``COUNT % BLOCK``).
- ``keys``: the set of root pairs with a mutex (open addressing, at most 3/4 full).
- ``seed``: seed id per root (0 = none), ``state``: blocks used, free-block list head, pairs
  in the set, free blocks, and the room the last stopped edge needed.

When two clusters join, the one with more partners stays root and the other's partners are
re-keyed and moved over (small into large, so each moves O(log n) times). The run is bound by
cache misses on random nodes and pair slots; the loops prefetch them some edges ahead. When the
pair set or the block pool is short, the loop stops before the edge and :func:`run` grows them
and resumes, so the loops allocate nothing and compile without reference counting.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..core.edges import edge_bounds, edge_ends
from ..core.hashtable import grown_set, mix, pair_key, set_add, set_home, set_probe
from ..core.prefetch import prefetch
from ..core.unionfind import find

PARENT, COUNT, HEAD = 0, 1, 2  # PARENT first: core.unionfind.find reads column 0 of node records
BLOCK = 7  # partners per block: a block row is 8 ids, 32 bytes with 32-bit ids
USED, FREE, PAIRS, N_FREE, NEED_PAIRS, NEED_BLOCKS = range(6)  # entries of ``state``
NODES_AHEAD = 32  # edges ahead whose end nodes are prefetched
PARENTS_AHEAD = 24  # edges ahead whose end nodes' parents are prefetched
ROOTS_AHEAD = 16  # edges ahead whose pair slot is prefetched
EXACT_AHEAD = 64  # entries ahead whose exact weight is prefetched while runs are scanned
SHORT_RUN = 32  # runs of key ties up to this length are sorted without allocating
MOVE_BATCH = 63  # partners gathered (and prefetched) at a time when a list moves
KEY_SHIFT = 33  # grid entries: the sort key above an inexact flag, the repulsive bit and the id
KEY_MANTISSA = 25  # mantissa bits of |w| in the sort key, below a 5-bit binade
KEY_BINADE_ZERO = 992  # float64 biased exponent of 2**-31: binade 1 is [2**-30, 2**-29)
# order of exact ties of |w| (see grid_edges, exact_order)
TIES_AGREEMENT, TIES_HASH, TIES_REPULSIVE, TIES_ATTRACTIVE = 0, 1, 2, 3
TIE_DIGIT = 11  # bits per counting-sort pass of the tie order: the radix sort's digit width
TIE_BUCKETS = 1 << TIE_DIGIT
# a channel's agreement levels are computed for all its edges (raster order, 15-30 ns an
# edge) when the long tie runs hold more than this fraction of them; else edge by edge (about
# 120 ns each in a run's order, and more when many runs share the channel): one-off timings
LEVELS_FRACTION = 0.25


# ---------------------------------------------------------------------------------- edge order

@njit(cache=True, nogil=True, inline="always")
def _kept(c, i, delta, n, keep_prob, threshold, rng_seed, flat_mask, use_mask):
    """Whether the edge ``(i, i + delta)`` of channel ``c`` survives the mask and sub-sampling."""
    if use_mask and not (flat_mask[i] and flat_mask[i + delta]):
        return False
    if keep_prob < 1.0:
        return mix(np.uint64(c * n + i) ^ rng_seed) < threshold
    return True


@njit(cache=True, nogil=True, inline="always")
def _strength_key(strength):
    """The 30-bit key of ``|w|`` (``0 <= |w| < 1``), monotone, and whether it is inexact.

    Float64 bits cut to a 5-bit binade (1 for ``[2**-30, 2**-29)`` ... 30 for ``[0.5, 1)``,
    0 below ``2**-30``) and the top ``KEY_MANTISSA`` = 25 mantissa bits: float32 affinities
    minus a bias mostly fit, so few keys are inexact, and ties between inexact keys (the only
    ones :func:`exact_order` must look up) are rare; a float32 key had 27x more.
    """
    bits = np.float64(strength).view(np.uint64)
    binade = np.int64(bits >> np.uint64(52)) - KEY_BINADE_ZERO
    if binade <= 0:
        return np.uint64(0), strength != 0.0
    cut = 52 - KEY_MANTISSA
    key = np.uint64(binade) << np.uint64(KEY_MANTISSA) | (bits & np.uint64((1 << 52) - 1)) >> np.uint64(cut)
    return key, (bits & np.uint64((1 << cut) - 1)) != 0


@njit(cache=True, nogil=True, inline="always")
def _key_value(entry):
    """The ``|w|`` that the key of a packed entry stands for (exact for exact entries)."""
    key = np.uint64(0x3FFFFFFF) - (entry >> np.uint64(KEY_SHIFT + 1))
    binade = np.int64(key >> np.uint64(KEY_MANTISSA))
    if binade == 0:
        return 0.0
    mantissa = key & np.uint64((1 << KEY_MANTISSA) - 1)
    bits = np.uint64(binade + KEY_BINADE_ZERO) << np.uint64(52) | mantissa << np.uint64(52 - KEY_MANTISSA)
    return np.uint64(bits).view(np.float64)


@njit(cache=True, nogil=True, inline="always")
def _entry(w, edge_id, ties):
    """The packed grid entry of an edge of weight ``w`` (``|w| < 1``), see :func:`grid_edges`."""
    key, inexact = _strength_key(abs(w))
    rank = np.uint64(0x3FFFFFFF) - key  # strongest first
    repulsive = np.uint64(0 if w > 0 else 1)
    # the key's tie bit (1 goes after 0)
    # (TIES_AGREEMENT and TIES_HASH leave both signs in one run for exact_order)
    later = np.uint64(0)
    if ties == TIES_ATTRACTIVE:
        later = repulsive
    elif ties == TIES_REPULSIVE:
        later = np.uint64(1) - repulsive
    return ((rank << np.uint64(1) | later) << np.uint64(KEY_SHIFT) | np.uint64(inexact) << np.uint64(32)
            | repulsive << np.uint64(31) | np.uint64(edge_id))


def grid_edges(affs, offsets, bias, strides, keep_prob, rng_seed, mask, use_mask, ties=TIES_ATTRACTIVE):
    """The kept grid edges as packed uint64 in processing order, a scratch buffer of the same
    size (free memory for the later stages), and how many edges repel.

    An entry holds, from the top: a 31-bit sort key (the key of ``|w|``, :func:`_strength_key`,
    inverted, then a tie bit: on exact ties of ``|w|`` attractive edges go first with
    ``TIES_ATTRACTIVE``, repulsive ones with ``TIES_REPULSIVE``; with ``TIES_AGREEMENT`` and
    ``TIES_HASH`` the bit is 0 and :func:`exact_order` orders the tied runs), a bit set where
    the key does not hold ``|w|`` exactly, the repulsive bit again and the edge id ``c * n + i`` (31 bits;
    the low 32 bits are the compact entry of :func:`compact`). Order: a stable radix sort of
    the key in three 11-bit digits, so ties stay in channel then raster order (until
    :func:`exact_order` reorders them for the agreement and hash orders); see
    :func:`exact_order` for the inexact ties. Needs ``C * n < 2**31``.

    The two buffers are numpy's, not numba's: numpy advises the kernel to back large arrays
    with huge pages, and the state carved from them later is read at random (TLB misses cost
    about a tenth of the run on 4 KiB pages).
    """
    args = (affs, offsets, bias, strides, keep_prob, np.uint64(rng_seed), mask.reshape(-1), use_mask)
    n_kept = _count_edges(*args)
    entries = np.empty(n_kept, dtype=np.uint64)
    other = np.empty(n_kept, dtype=np.uint64)
    return _sorted_edges(*args, entries, other, int(ties))


@njit(cache=True, nogil=True)
def _count_edges(affs, offsets, bias, strides, keep_prob, seed, flat_mask, use_mask):
    n_kept = 0
    for c in range(affs.shape[0]):
        n_kept += _edge_loop(affs, offsets, bias, strides, keep_prob, seed, flat_mask, use_mask, c, n_kept,
                             np.empty(0, dtype=np.uint64), np.empty((0, 0), dtype=np.int64), False, TIES_ATTRACTIVE)
    return n_kept


@njit(cache=True, nogil=True)
def _sorted_edges(affs, offsets, bias, strides, keep_prob, seed, flat_mask, use_mask, entries, other, ties):
    """:func:`grid_edges` into the given buffers (which come back swapped where the sort
    ends in ``other``)."""
    # digit histograms, filled as entries are written; counts[3, 0]: the repulsive edges
    counts = np.zeros((4, 2049), dtype=np.int64)
    done = 0
    for c in range(affs.shape[0]):
        done += _edge_loop(affs, offsets, bias, strides, keep_prob, seed, flat_mask, use_mask, c, done,
                           entries, counts, True, ties)
    n_repulsive = counts[3, 0]
    for d in range(3):
        for b in range(2048):
            counts[d, b + 1] += counts[d, b]
    for d in range(3):
        if _one_bucket(counts[d]):
            continue  # every key has this digit: already in order
        _scatter(entries, other, d, counts[d])
        entries, other = other, entries
    return entries, other, n_repulsive


@njit(cache=True, nogil=True)
def _edge_loop(affs, offsets, bias, strides, keep_prob, seed, flat_mask, use_mask, c, start, out, counts, write,
               ties):
    """Channel ``c``'s kept edges in raster order: their number, and with ``write`` their
    entries (:func:`_entry`) written to ``out`` from ``start`` and their digits counted in
    ``counts`` (:func:`_digit`, ``counts[d, digit + 1]``)."""
    _, nz, ny, nx = affs.shape
    n = nz * ny * nx
    flat = affs.reshape(-1)
    oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
    sz, sy, sx = strides[c, 0], strides[c, 1], strides[c, 2]
    delta = (oz * ny + oy) * nx + ox
    threshold = np.uint64(min(keep_prob[c], 1.0) * 18446744073709549568.0)
    b_c = bias[c]
    base = c * n
    k = start
    z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, oz, oy, ox)
    for z in range(z0, z1, sz):
        for y in range(y0, y1, sy):
            for x in range(x0, x1, sx):
                i = (z * ny + y) * nx + x
                if not _kept(c, i, delta, n, keep_prob[c], threshold, seed, flat_mask, use_mask):
                    continue
                if write:
                    entry = _entry(np.float64(flat[base + i]) - b_c, base + i, ties)
                    out[k] = entry
                    counts[3, 0] += np.int64((entry >> np.uint64(31)) & np.uint64(1))
                    for d in range(3):
                        counts[d, _digit(entry, d) + 1] += 1
                k += 1
    return k - start


@njit(cache=True, nogil=True, inline="always")
def _digit(entry, d):
    return np.int64((entry >> np.uint64(KEY_SHIFT + 11 * d)) & np.uint64(2047))


@njit(cache=True, nogil=True)
def _one_bucket(starts):
    total = starts[starts.shape[0] - 1]
    for b in range(starts.shape[0] - 1):
        if starts[b + 1] - starts[b] == total:
            return True
    return False


@njit(cache=True, nogil=True)
def _scatter(src, dst, d, starts):
    """One stable counting-sort pass on digit ``d`` (``starts``: bucket offsets, consumed)."""
    for j in range(src.shape[0]):
        digit = _digit(src[j], d)
        dst[starts[digit]] = src[j]
        starts[digit] += 1


def exact_order(packed, affs, bias, *, offsets=None, scratch=None, ties=TIES_ATTRACTIVE, mask=None):
    """Put runs of equal sort keys in the tie order, then in exact float64 ``|w|`` order, in place.

    With ``TIES_AGREEMENT`` or ``TIES_HASH`` (edges from ``grid_edges(..., ties)`` with the same
    ``ties``, whose key leaves both signs in one run and keeps each run in edge id order, which
    the agreement's pass per channel needs) each run of two or more edges is first put in the tie
    order (:func:`_tie_order`: by the hash alone for runs of at most ``SHORT_RUN`` edges). ``scratch`` is a buffer at least as long as ``packed``, ``offsets`` (C, 3) the
    channels' offsets, ``mask`` the voxel mask of the edges (the agreement ignores the edges
    outside it). Then only entries flagged inexact can differ from their run's key value
    (:func:`_key_value`), so only they are looked up (random reads) and sorted; the exact ones
    keep their order between the inexact entries that are stronger and those that are weaker.
    """
    keyed = ties in (TIES_AGREEMENT, TIES_HASH)
    if keyed and (scratch is None or scratch.shape[0] < packed.shape[0]):
        scratch = np.empty(packed.shape[0], dtype=np.uint64)
    elif scratch is None:
        scratch = np.empty(0, dtype=np.uint64)
    offsets = np.zeros((affs.shape[0], 3), np.int64) if offsets is None else np.asarray(offsets, np.int64)
    use_mask = mask is not None
    flat_mask = mask.reshape(-1) if use_mask else np.ones(1, dtype=bool)
    _exact_order(packed, scratch, affs, offsets, bias, int(ties) if keyed else -1, flat_mask, use_mask)


@njit(cache=True, nogil=True)
def _exact_order(packed, other, affs, offsets, bias, ties, flat_mask, use_mask):
    if ties == TIES_AGREEMENT:
        _agreement_tie_keys(packed, other, affs, offsets, bias, flat_mask, use_mask)
    n = affs[0].size
    flat = affs.reshape(-1)
    m = packed.shape[0]
    scratch = np.empty(SHORT_RUN, dtype=np.float64)
    starts = np.empty(TIE_BUCKETS + 1, dtype=np.int64)
    run_start = 0
    n_inexact = 0
    for j in range(m + 1):
        if j + EXACT_AHEAD < m and (packed[j + EXACT_AHEAD] >> np.uint64(32)) & np.uint64(1):
            prefetch(flat, np.int64(packed[j + EXACT_AHEAD] & np.uint64(0x7FFFFFFF)))
        if j == m or (packed[j] >> np.uint64(KEY_SHIFT + 1)) != (packed[run_start] >> np.uint64(KEY_SHIFT + 1)):
            if j - run_start > 1:
                value = _key_value(packed[run_start])
                if ties >= 0:  # the sort key's bits are free from here: tie_order reuses them
                    _tie_order(packed[run_start:j], other[run_start:j], starts, ties)
                if n_inexact > 0:
                    if j - run_start <= SHORT_RUN:
                        _exact_order_short_run(packed[run_start:j], value, scratch, flat, bias, n)
                    else:
                        _exact_order_run(packed[run_start:j], value, n_inexact, flat, bias, n)
            run_start = j
            n_inexact = 0
        if j < m:
            n_inexact += np.int64((packed[j] >> np.uint64(32)) & np.uint64(1))


@njit(cache=True, nogil=True, inline="always")
def _edge_hash(edge_id):
    """The low ``TIE_DIGIT`` bits of splitmix64 of an edge id: a fixed pseudo-random order."""
    return mix(np.uint64(edge_id)) & np.uint64(TIE_BUCKETS - 1)


@njit(cache=True, nogil=True, inline="always")
def hash_key(edge_id):
    """A ``2 * TIE_DIGIT``-bit pseudo-random key of an edge id (two :func:`_edge_hash`)."""
    return _edge_hash(edge_id ^ 0x5BD1E995) << np.uint64(TIE_DIGIT) | _edge_hash(edge_id)


@njit(cache=True, nogil=True)
def hash_keys(edge_ids):
    """:func:`hash_key` of each of ``edge_ids`` (int64)."""
    out = np.empty(edge_ids.shape[0], dtype=np.uint64)
    for e in range(edge_ids.shape[0]):
        out[e] = hash_key(edge_ids[e])
    return out


def edge_hashes(m: int) -> np.ndarray:
    """:func:`hash_key` of the edge ids ``0 .. m - 1`` (the graph's hash tie order)."""
    return hash_keys(np.arange(m, dtype=np.int64))


@njit(cache=True, nogil=True)
def agreement(affs, offsets, bias, c, i, flat_mask, use_mask):
    """How far the edges beside edge ``(c, i)`` agree with its sign: their mean weight
    ``affinity - bias``, negated for a repulsive edge; in ``[-1, 1]``.

    Beside: channel ``c`` at the voxels ``i`` +- 1 along the axes where the channel's offset is
    0 (a 3 x 3 window across a nearest-neighbour edge in 3D), whose partners lie inside the
    volume and, with ``use_mask``, both ends inside the mask. A membrane crossed by the edge lies
    across the window, so the edges of a thin boundary agree with each other while a gap or a
    speck of noise disagrees with its surround.
    """
    _, _, ny, nx = affs.shape
    z, rest = divmod(i, ny * nx)
    y, x = divmod(rest, nx)
    return _agreement_at(affs, offsets, bias, c, z, y, x, flat_mask, use_mask)


@njit(cache=True, nogil=True, inline="always")
def _agreement_at(affs, offsets, bias, c, z, y, x, flat_mask, use_mask):
    """:func:`agreement` of the edge of channel ``c`` at voxel ``(z, y, x)``."""
    _, nz, ny, nx = affs.shape
    oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
    z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, oz, oy, ox)
    i = (z * ny + y) * nx + x
    # the window's rows: x is contiguous, so a window along x reads one cache line per row
    za, zb = (max(z - 1, z0), min(z + 2, z1)) if oz == 0 else (z, z + 1)
    ya, yb = (max(y - 1, y0), min(y + 2, y1)) if oy == 0 else (y, y + 1)
    xa, xb = (max(x - 1, x0), min(x + 2, x1)) if ox == 0 else (x, x + 1)
    flat = affs.reshape(-1)
    base = c * nz * ny * nx
    delta = (oz * ny + oy) * nx + ox
    total = 0.0
    count = 0
    for zz in range(za, zb):
        for yy in range(ya, yb):
            row = (zz * ny + yy) * nx
            for xx in range(xa, xb):
                if use_mask and not (flat_mask[row + xx] and flat_mask[row + xx + delta]):
                    continue
                total += flat[base + row + xx]
                count += 1
    mean = total / max(count, 1) - bias[c]  # the edge itself is always counted
    return mean if np.float64(flat[base + i]) - bias[c] > 0 else -mean


@njit(cache=True, nogil=True, inline="always")
def _agreement_level(agree):
    """The agreement ``agree`` in ``TIE_BUCKETS`` levels, stronger agreement lower."""
    q = min(max(np.int64((agree + 1.0) * (TIE_BUCKETS // 2)), 0), TIE_BUCKETS - 1)
    return TIE_BUCKETS - 1 - q


@njit(cache=True, nogil=True, inline="always")
def agreement_key(agree, edge_id):
    """The ``2 * TIE_DIGIT``-bit tie key (smaller goes first) of an edge whose neighbourhood has
    the :func:`agreement` ``agree``: stronger agreement first (``TIE_BUCKETS`` levels), then the
    edge hash."""
    return np.uint64(_agreement_level(agree)) << np.uint64(TIE_DIGIT) | _edge_hash(edge_id)


@njit(cache=True, nogil=True)
def channel_agreement_levels(affs, offsets, bias, c, flat_mask, use_mask, level):
    """``level[i]`` = :func:`_agreement_level` of the :func:`agreement` of edge ``(c, i)``, for
    every voxel ``i`` of the flat volume whose channel-``c`` edge lies inside it (the others are
    left alone); the same bits as :func:`agreement` edge by edge.

    In raster order, and where the window lies inside the volume (no mask) row by row with the
    window's values added in :func:`agreement`'s order, in loops over x: 15-30 ns per edge,
    where :func:`agreement` called in the order of a tied run reads the volume at random (the
    runs of quantised affinities hold edges from everywhere).
    """
    _, nz, ny, nx = affs.shape
    oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
    z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, oz, oy, ox)
    # the window's axes (offset 0 there; an axis of length 1 clips the window to the voxel)
    rz, ry, rx = (1 if oz == 0 and nz > 1 else 0), (1 if oy == 0 and ny > 1 else 0), (1 if ox == 0 and nx > 1 else 0)
    deltas = np.empty(27, dtype=np.int64)
    k = 0
    for dz in range(-rz, rz + 1):  # agreement()'s order: z, then y, then x
        for dy in range(-ry, ry + 1):
            for dx in range(-rx, rx + 1):
                deltas[k] = (dz * ny + dy) * nx + dx
                k += 1
    # voxels whose whole window lies inside the volume (along its axes the edges all exist)
    zi0, zi1 = max(z0, rz), min(z1, nz - rz)
    yi0, yi1 = max(y0, ry), min(y1, ny - ry)
    xi0, xi1 = max(x0, rx), min(x1, nx - rx)
    flat = affs.reshape(-1)
    base = c * nz * ny * nx
    b = bias[c]
    total = np.empty(nx, dtype=np.float64)
    for z in range(z0, z1):
        for y in range(y0, y1):
            row = (z * ny + y) * nx
            if not use_mask and zi0 <= z < zi1 and yi0 <= y < yi1 and xi0 < xi1:
                total[xi0:xi1] = 0.0
                for w in range(k):
                    start = base + row + deltas[w]
                    for x in range(xi0, xi1):
                        total[x] += flat[start + x]
                for x in range(xi0, xi1):
                    mean = total[x] / k - b
                    level[row + x] = _agreement_level(mean if np.float64(flat[base + row + x]) - b > 0 else -mean)
                # the row's ends, where the window is cut: agreement() itself
                _levels_by_agreement(affs, offsets, bias, c, flat_mask, use_mask, level, z, y, x0, xi0)
                _levels_by_agreement(affs, offsets, bias, c, flat_mask, use_mask, level, z, y, xi1, x1)
            else:
                _levels_by_agreement(affs, offsets, bias, c, flat_mask, use_mask, level, z, y, x0, x1)


@njit(cache=True, nogil=True, inline="always")
def _levels_by_agreement(affs, offsets, bias, c, flat_mask, use_mask, level, z, y, start, stop):
    """``level`` of the voxels ``(z, y, start .. stop - 1)``, each by :func:`agreement`."""
    row = (z * affs.shape[2] + y) * affs.shape[3]
    for x in range(start, stop):
        level[row + x] = _agreement_level(_agreement_at(affs, offsets, bias, c, z, y, x, flat_mask, use_mask))


@njit(cache=True, nogil=True, inline="always")
def _run_around(packed, j, low):
    """``(start, end)`` of the run of equal sort keys (sorted ``packed``) that holds entry ``j``,
    not reaching below ``low``: by galloping, then bisecting, both ways."""
    key = packed[j] >> np.uint64(KEY_SHIFT + 1)
    m = packed.shape[0]
    inside, step = j, 1  # forward: inside is in the run, inside + step beyond it (or the end)
    while inside + step < m and (packed[inside + step] >> np.uint64(KEY_SHIFT + 1)) == key:
        inside += step
        step *= 2
    end = _run_edge(packed, key, inside, min(inside + step, m))
    inside, step = j, 1  # backward
    while inside - step >= low and (packed[inside - step] >> np.uint64(KEY_SHIFT + 1)) == key:
        inside -= step
        step *= 2
    start = _run_edge(packed, key, inside, max(inside - step, low - 1)) + 1
    return start, end


@njit(cache=True, nogil=True, inline="always")
def _run_edge(packed, key, inside, outside):
    """Bisect between an entry ``inside`` the run of sort key ``key`` and an index ``outside``
    it (either side; an array end's outer neighbour is fine): the run's first index beyond it
    in that direction."""
    while abs(outside - inside) > 1:
        middle = (inside + outside) // 2
        if (packed[middle] >> np.uint64(KEY_SHIFT + 1)) == key:
            inside = middle
        else:
            outside = middle
    return outside


@njit(cache=True, nogil=True)
def _agreement_tie_keys(packed, other, affs, offsets, bias, flat_mask, use_mask):
    """The agreement tie key (:func:`agreement_key`) of every entry of a run of more than
    ``SHORT_RUN`` equal sort keys, into ``other`` at the entry's place (the only runs that
    :func:`_tie_order` puts in agreement order; it reads them from there).

    A run's entries come in edge id order (channel, then raster), so one pass per channel over
    the runs, with :func:`channel_agreement_levels` of that channel, serves them all: the
    volume is read in raster order whatever the number of runs.
    """
    m = packed.shape[0]
    runs = np.empty((16, 2), dtype=np.int64)  # (start, end) of each long run; grown by doubling
    n_long = 0
    # each probe SHORT_RUN + 1 after the last (or at the end of its run, if later) lands in every long run;
    # a probe's run is found by galloping over the sorted keys: few reads where runs are short
    probe, last_end = 0, 0
    while probe < m:
        start, end = _run_around(packed, probe, last_end)
        if end - start > SHORT_RUN:
            if n_long == runs.shape[0]:
                grown = np.empty((2 * n_long, 2), dtype=np.int64)
                grown[:n_long] = runs
                runs = grown
            runs[n_long, 0], runs[n_long, 1] = start, end
            n_long += 1
            last_end = end
        probe = max(probe + SHORT_RUN + 1, end)
    if n_long == 0:
        return
    cursor = runs[:n_long, 0].copy()
    end = runs[:n_long, 1].copy()
    n = affs[0].size
    level = np.empty(0, dtype=np.uint16)
    for c in range(affs.shape[0]):
        count = 0
        for r in range(n_long):
            j = cursor[r]
            while j < end[r] and np.int64(packed[j] & np.uint64(0x7FFFFFFF)) < (c + 1) * n:
                j += 1
            count += j - cursor[r]
        # the channel's levels where the runs hold many of its edges, else the edges one by one
        whole = count > LEVELS_FRACTION * n
        if whole:
            if level.shape[0] == 0:
                level = np.empty(n, dtype=np.uint16)
            channel_agreement_levels(affs, offsets, bias, c, flat_mask, use_mask, level)
        for r in range(n_long):
            j = cursor[r]
            while j < end[r]:
                e = np.int64(packed[j] & np.uint64(0x7FFFFFFF))
                if e >= (c + 1) * n:
                    break
                if e < c * n:  # (a run not in edge id order: entries of grid_edges with other ties)
                    raise ValueError("exact_order with the agreement ties needs runs in edge id order")
                other[j] = (np.uint64(level[e - c * n]) << np.uint64(TIE_DIGIT) | _edge_hash(e) if whole else
                            agreement_key(agreement(affs, offsets, bias, c, e - c * n, flat_mask, use_mask), e))
                j += 1
            cursor[r] = j


@njit(cache=True, nogil=True)
def _tie_order(run, other, starts, ties):
    """Put a run in the tie order, stable (key ties keep the run's order), in place: by the
    agreement key that :func:`_agreement_tie_keys` left in ``other`` (``TIES_AGREEMENT``, runs
    of more than ``SHORT_RUN`` edges), else by :func:`hash_key`.

    The key replaces the run's (equal) sort keys in the entries; short runs are then sorted by
    insertion, longer ones by two counting-sort passes on digits 0 and 1 through ``other`` (the
    result is back in ``run``).
    """
    m = run.shape[0]
    low = np.uint64((1 << KEY_SHIFT) - 1)
    # a short run is a coincidence of float values, a long one saturation or quantisation: only
    # long runs pay for the agreement, whose keys _agreement_tie_keys left in ``other``
    mode = TIES_HASH if m <= SHORT_RUN else ties
    for j in range(m):
        key = other[j] if mode == TIES_AGREEMENT else hash_key(np.int64(run[j] & np.uint64(0x7FFFFFFF)))
        run[j] = key << np.uint64(KEY_SHIFT) | (run[j] & low)
    if m <= SHORT_RUN:  # stable insertion sort on the key bits: no bucket arrays to clear
        for j in range(1, m):
            entry = run[j]
            k = j
            while k > 0 and (run[k - 1] >> np.uint64(KEY_SHIFT)) > (entry >> np.uint64(KEY_SHIFT)):
                run[k] = run[k - 1]
                k -= 1
            run[k] = entry
        return
    src, dst = run, other
    for d in range(2):
        starts[:] = 0
        for j in range(m):
            starts[_digit(src[j], d) + 1] += 1
        for b in range(TIE_BUCKETS):
            starts[b + 1] += starts[b]
        _scatter(src, dst, d, starts)
        src, dst = dst, src


@njit(cache=True, nogil=True, inline="always")
def _exact_strength(entry, flat, bias, n):
    e = np.int64(entry & np.uint64(0x7FFFFFFF))
    return abs(np.float64(flat[e]) - bias[e // n])


@njit(cache=True, nogil=True, inline="always")
def _exact_order_short_run(run, value, strength, flat, bias, n):
    """Stable insertion sort, strongest first, with no allocation (most runs are a few edges);
    ``value``: the run's key value (:func:`_key_value`)."""
    for j in range(run.shape[0]):
        entry = run[j]
        s = _exact_strength(entry, flat, bias, n) if (entry >> np.uint64(32)) & np.uint64(1) else value
        k = j
        while k > 0 and strength[k - 1] < s:
            run[k] = run[k - 1]
            strength[k] = strength[k - 1]
            k -= 1
        run[k] = entry
        strength[k] = s


@njit(cache=True, nogil=True)
def _exact_order_run(run, value, n_inexact, flat, bias, n):
    inexact = np.empty(n_inexact, dtype=np.uint64)
    strength = np.empty(n_inexact, dtype=np.float64)
    k = 0
    for j in range(run.shape[0]):
        if (run[j] >> np.uint64(32)) & np.uint64(1):
            inexact[k] = run[j]
            strength[k] = -_exact_strength(run[j], flat, bias, n)
            k += 1
    order = np.argsort(strength, kind="mergesort")  # stable, strongest first
    exact = run.copy()
    out = 0
    for k in range(n_inexact):
        if -strength[order[k]] > value:
            run[out] = inexact[order[k]]
            out += 1
    for j in range(exact.shape[0]):
        if not (exact[j] >> np.uint64(32)) & np.uint64(1):
            run[out] = exact[j]
            out += 1
    for k in range(n_inexact):
        if -strength[order[k]] < value:
            run[out] = inexact[order[k]]
            out += 1


@njit(cache=True, nogil=True)
def compact(packed):
    """The entries without their sort key, as uint32 ``repulsive << 31 | c * n + i``, written
    in place over the front half of ``packed``; returns that view."""
    low = packed.view(np.uint32)
    for j in range(packed.shape[0]):  # entry j's 4 bytes land at or before its own 8
        low[j] = np.uint32(packed[j] & np.uint64(0xFFFFFFFF))
    return low[:packed.shape[0]]


# ---------------------------------------------------------------------------------- state

def new_state(n_nodes: int, use_seeds: bool, n_repulsive: int, *, spare=()):
    """Fresh state (see the module docstring), 32-bit ids where they fit.

    The pair set starts at room for ``n_repulsive`` pairs at 3/4 load, the block pool at one
    block per 4 repulsive edges; :func:`run` grows either when an edge needs more. Arrays are
    carved from the ``spare`` buffers (uint8, e.g. the sort's scratch) where they fit: memory
    already in use costs a fill, fresh memory a page fault per page as well.
    """
    spare = list(spare)
    node_type = np.int32 if max(n_nodes, 2 * n_repulsive + 16) < 2**31 else np.int64
    capacity = 1 << max(16, int(-(-4 * n_repulsive // 3)).bit_length())
    keys = _carve(spare, (capacity,), np.uint64)
    keys[:] = 0
    node = _carve(spare, (n_nodes, 3), node_type)
    node[:, PARENT] = np.arange(n_nodes, dtype=node_type)
    node[:, COUNT] = 0
    node[:, HEAD] = -1
    blocks = _carve(spare, (max(1024, n_repulsive // 4), BLOCK + 1), node_type)
    seed = np.zeros(n_nodes if use_seeds else 1, dtype=np.uint64)
    state = np.array([0, -1, 0, 0, 0, 0], dtype=np.int64)
    return node, seed, keys, blocks, state


def _carve(spare: list, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-ordered array taken off the front of the first buffer in ``spare``
    with room (at a 64-byte boundary), or a new one."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    for k, buf in enumerate(spare):
        if buf.nbytes >= nbytes:
            spare[k] = buf[-(-nbytes // 64) * 64:]
            return buf[:nbytes].view(dtype).reshape(shape)
    return np.empty(shape, dtype=dtype)


def spare_bytes(buffer: np.ndarray, used_bytes: int = 0) -> np.ndarray:
    """The bytes of a C-contiguous ``buffer`` after its first ``used_bytes``, as uint8, from a
    64-byte boundary."""
    start = -(-used_bytes // 64) * 64
    return buffer.reshape(-1).view(np.uint8)[start:]


def run(process, edges, node, seed, use_seeds, keys, blocks, state):
    """Call ``process_grid`` or ``process_sorted`` (``edges``: their leading arguments) until
    every edge is processed, growing the pair set or the block pool whenever it stops for
    room. Returns the final ``keys`` and ``blocks``."""
    scratch = np.empty((2, MOVE_BATCH), dtype=node.dtype)
    done = 0
    while True:
        done = process(*edges, done, node, node.reshape(-1), seed, use_seeds, keys, blocks, state, scratch)
        if done < 0:
            return keys, blocks
        if _pairs_short(keys, state, state[NEED_PAIRS]):
            # the set also holds the stale keys of roots that have joined another: rebuild it
            # from the partner lists in place first, and grow only a set that is still half full
            state[PAIRS] = live_pairs(keys, node, blocks, node.shape[0])
            while (state[PAIRS] + state[NEED_PAIRS] + 1) * 2 > keys.shape[0]:
                keys = grown_set(keys)
        if blocks.shape[0] - state[USED] + state[N_FREE] < state[NEED_BLOCKS]:
            grown = np.empty((2 * len(blocks) + state[NEED_BLOCKS], BLOCK + 1), dtype=blocks.dtype)
            grown[:len(blocks)] = blocks
            blocks = grown


@njit(cache=True, nogil=True, inline="always")
def _pairs_short(keys, state, extra):
    """Whether ``extra`` more pairs (and one more) would fill the set beyond 3/4."""
    return (state[PAIRS] + extra + 1) * 4 > keys.shape[0] * 3


@njit(cache=True, nogil=True)
def live_pairs(keys, node, blocks, n_nodes):
    """Refill the pair set ``keys`` (in place) with the live pairs only: for every root, the
    roots of the partners in its list. Returns their number."""
    keys[:] = 0
    count = 0
    for r in range(node.shape[0]):
        if node[r, PARENT] != r or node[r, COUNT] == 0:
            continue
        blk = node[r, HEAD]
        fill = node[r, COUNT] % BLOCK
        if fill == 0:
            fill = BLOCK
        while blk >= 0:
            for t in range(fill):
                q = find(node, blocks[blk, t], skip_short=True)
                if q != r and set_add(keys, pair_key(r, q, n_nodes)):
                    count += 1
            blk = blocks[blk, BLOCK]
            fill = BLOCK
    return count


@njit(cache=True, nogil=True, inline="always")
def _has_room(keys, blocks, state, n_pairs, n_blocks):
    """Whether the set takes ``n_pairs`` more pairs and the pool ``n_blocks`` more blocks; if
    not, the needs are left in ``state`` for :func:`run`."""
    if not _pairs_short(keys, state, n_pairs) and blocks.shape[0] - state[USED] + state[N_FREE] >= n_blocks:
        return True
    state[NEED_PAIRS] = n_pairs
    state[NEED_BLOCKS] = n_blocks
    return False


@njit(cache=True, nogil=True, inline="always")
def _append(node, a, b, blocks, state):
    """List ``b`` as a partner of root ``a`` (the caller made room)."""
    pos = node[a, COUNT] % BLOCK
    if pos == 0:  # no head block yet, or a full one
        if state[FREE] >= 0:
            blk = state[FREE]
            state[FREE] = blocks[blk, BLOCK]
            state[N_FREE] -= 1
        else:
            blk = state[USED]
            state[USED] += 1
        blocks[blk, BLOCK] = node[a, HEAD]
        node[a, HEAD] = blk
    blocks[node[a, HEAD], pos] = b
    node[a, COUNT] += 1


@njit(cache=True, nogil=True, inline="always")
def _prefetch_ahead(node_flat, keys, node, u_far, v_far, u_mid, v_mid, u_near, v_near, n_nodes):
    """Prefetch the end nodes of a far edge, the parents of a nearer one's ends, and the pair
    slot of a near one's roots, taken as the grandparents of its ends (mostly the roots after
    path halving; no loop, no stores), even where they are one root: a wasted prefetch costs
    less than a mispredicted branch."""
    prefetch(node_flat, u_far * 3)
    prefetch(node_flat, v_far * 3)
    prefetch(node_flat, node[u_mid, PARENT] * 3)
    prefetch(node_flat, node[v_mid, PARENT] * 3)
    ru = node[node[u_near, PARENT], PARENT]
    rv = node[node[v_near, PARENT], PARENT]
    prefetch(keys, set_home(keys, pair_key(ru, rv, n_nodes)))


@njit(cache=True, nogil=True, inline="always")
def _process_edge(u, v, attractive, n_nodes, node, node_flat, seed, use_seeds, keys, blocks, state, scratch):
    """Process one edge; False (and nothing changed) if the set or the pool needs room first."""
    ru = find(node, u, skip_short=True)
    rv = find(node, v, skip_short=True)
    if ru == rv:
        return True
    key = pair_key(ru, rv, n_nodes)
    slot = -1
    if node[ru, COUNT] > 0 and node[rv, COUNT] > 0:  # else the pair cannot be in the set
        slot = set_probe(keys, key)
        if keys[slot] == key:
            return True
    if attractive:
        if use_seeds and seed[ru] != 0 and seed[rv] != 0 and seed[ru] != seed[rv]:
            return True
        moved = min(node[ru, COUNT], node[rv, COUNT])
        if not _has_room(keys, blocks, state, moved, 1):  # freed blocks cover the rest
            return False
        _join(ru, rv, n_nodes, node, node_flat, seed, use_seeds, keys, blocks, state, scratch[0], scratch[1])
        return True
    if not _has_room(keys, blocks, state, 1, 2):
        return False
    keys[slot if slot >= 0 else set_probe(keys, key)] = key  # a new pair: checked above
    state[PAIRS] += 1
    _append(node, ru, rv, blocks, state)
    _append(node, rv, ru, blocks, state)
    return True


@njit(cache=True, nogil=True, inline="always")
def _join(ru, rv, n_nodes, node, node_flat, seed, use_seeds, keys, blocks, state, gathered, roots):
    """Join two roots: the one with more partners stays root and takes the other's partners.

    The small root's blocks are read ``MOVE_BATCH`` partners at a time (prefetching their
    nodes, then their pair slots) and returned to the free list as they are read, before
    any partner is appended to the big root.
    """
    # on equal counts ``rv`` stays root: with negative offsets ``v`` is the earlier voxel, and in runs of
    # tied edges (raster order) linking the new voxel under the old cluster keeps paths short
    big, small = (ru, rv) if node[ru, COUNT] > node[rv, COUNT] else (rv, ru)
    node[small, PARENT] = big
    if use_seeds and seed[big] == 0:
        seed[big] = seed[small]
    blk = node[small, HEAD]
    fill = node[small, COUNT] % BLOCK
    if fill == 0:
        fill = BLOCK
    node[small, HEAD] = -1
    node[small, COUNT] = 0
    while blk >= 0:
        k = 0
        while blk >= 0 and k + BLOCK <= gathered.shape[0]:
            for t in range(fill):
                gathered[k] = blocks[blk, t]
                prefetch(node_flat, gathered[k] * 3)
                k += 1
            nxt = blocks[blk, BLOCK]
            blocks[blk, BLOCK] = state[FREE]
            state[FREE] = blk
            state[N_FREE] += 1
            blk = nxt
            fill = BLOCK
        for t in range(k):
            roots[t] = find(node, gathered[t], skip_short=True)
            prefetch(keys, set_home(keys, pair_key(big, roots[t], n_nodes)))
        for t in range(k):
            if set_add(keys, pair_key(big, roots[t], n_nodes)):
                state[PAIRS] += 1
                _append(node, big, roots[t], blocks, state)


# The two loops below are compiled without reference counting (``_nrt=False``): they allocate
# nothing, and numba's reference counts on the arrays that the inlined helpers share would
# otherwise cost about a third of the run. ``node_flat`` is ``node.reshape(-1)`` (for the
# prefetches), ``scratch`` two rows of ``MOVE_BATCH`` ids for the joins.

@njit(cache=True, nogil=True, _nrt=False)
def process_sorted(us, vs, attractive, n_nodes, start, node, node_flat, seed, use_seeds, keys, blocks, state,
                   scratch):
    """Run the Mutex Watershed over edges given in processing order (explicit graphs), from
    edge ``start``; returns -1 when done, or the edge at which it stopped for room."""
    m = us.shape[0]
    for j in range(start, m):
        if j + NODES_AHEAD < m:
            _prefetch_ahead(node_flat, keys, node, us[j + NODES_AHEAD], vs[j + NODES_AHEAD], us[j + PARENTS_AHEAD],
                            vs[j + PARENTS_AHEAD], us[j + ROOTS_AHEAD], vs[j + ROOTS_AHEAD], n_nodes)
        if not _process_edge(us[j], vs[j], attractive[j], n_nodes, node, node_flat, seed, use_seeds,
                             keys, blocks, state, scratch):
            return j
    return -1


@njit(cache=True, nogil=True, inline="always")
def _ends(entry, n, inv_n, deltas):
    """The two voxels of a compact grid entry."""
    return edge_ends(np.int64(entry & np.uint32(0x7FFFFFFF)), n, inv_n, deltas)


@njit(cache=True, nogil=True, _nrt=False)
def process_grid(deltas, n, entries, start, node, node_flat, seed, use_seeds, keys, blocks, state, scratch):
    """Run the Mutex Watershed over compact grid entries in processing order (see
    :func:`grid_edges` and :func:`compact`; ``deltas`` from :func:`affseg.conventions.flat_steps`, ``n`` voxels),
    from entry ``start``; returns -1 when done, or the entry at which it stopped for room."""
    m = entries.shape[0]
    inv_n = 1.0 / n
    for j in range(start, m):
        if j + NODES_AHEAD < m:
            u_far, v_far = _ends(entries[j + NODES_AHEAD], n, inv_n, deltas)
            u_mid, v_mid = _ends(entries[j + PARENTS_AHEAD], n, inv_n, deltas)
            u_near, v_near = _ends(entries[j + ROOTS_AHEAD], n, inv_n, deltas)
            _prefetch_ahead(node_flat, keys, node, u_far, v_far, u_mid, v_mid, u_near, v_near, n)
        u, v = _ends(entries[j], n, inv_n, deltas)
        attractive = entries[j] >> np.uint32(31) == 0
        if not _process_edge(u, v, attractive, n, node, node_flat, seed, use_seeds, keys, blocks, state, scratch):
            return j
    return -1


@njit(cache=True, nogil=True)
def premerge_seeds(seed_nodes, seed_ids, node, seed):
    """Join all nodes of each seed id (given sorted by id) and record the id on the root."""
    for k in range(seed_nodes.shape[0]):
        i = seed_nodes[k]
        if k > 0 and seed_ids[k] == seed_ids[k - 1]:
            r = find(node, seed_nodes[k - 1], skip_short=True)
            node[find(node, i, skip_short=True), PARENT] = r
        else:
            seed[find(node, i, skip_short=True)] = seed_ids[k]


@njit(cache=True, nogil=True)
def labels_from_roots(parent, seed, use_seeds, mask, use_mask, start):
    """uint64 labels from a union-find ``parent`` array (1D, e.g. ``node[:, PARENT]``): a seeded
    cluster gets its seed id, the others ``start, start + 1, ...`` in raster order of their
    first node; masked nodes get 0."""
    n = parent.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    flat_mask = mask.reshape(-1)
    next_label = np.uint64(start)
    for i in range(n):
        if use_mask and not flat_mask[i]:
            continue
        r = find(parent, i)
        if use_seeds and seed[r] != 0:
            out[i] = seed[r]
            continue
        if out[r] == 0:  # the root is reached first here or at itself (raster order)
            out[r] = next_label
            next_label += np.uint64(1)
        out[i] = out[r]
    return out
