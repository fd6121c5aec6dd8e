"""Numba kernels of the random walker: the assembly of the system from the grid, and the
sparse-matrix times block-of-columns products of its multigrid CG.

The assembly reads the weights on the grid directly (no edge lists): reachability from the seeds,
``L_U`` in CSR with sorted column indices (int32 where they fit), and the seed coupling in the
order of the edges. The solve kernels read each matrix row once for all columns (float64
vectors), fuse the residual with the restriction, and split the rows over the available cores in
fixed parts, so that no result depends on the number of threads.
The multigrid setup kernels count the entries of the matrices they build in int64 (the caller
narrows them to int32 where they fit), so that a product never overflows the index dtype of its
factors.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# rows per task of the parallel loops (each task keeps one float64 accumulator per column)
_CHUNK = 256

# ---------------------------------------------------------------------------------------- assembly


@njit(cache=True, nogil=True, inline="always")
def _coordinates(i, shape):
    """``(z, y, x)`` of flat index ``i`` in a C-ordered 3D volume of ``shape``."""
    x = i % shape[2]
    rest = i // shape[2]
    return rest // shape[1], rest % shape[1], x


@njit(cache=True, nogil=True, inline="always")
def _shifted(z, y, x, offset, sign, shape):
    """Flat index of voxel ``(z, y, x) + sign * offset``, -1 outside the volume."""
    zz, yy, xx = z + sign * offset[0], y + sign * offset[1], x + sign * offset[2]
    if zz < 0 or zz >= shape[0] or yy < 0 or yy >= shape[1] or xx < 0 or xx >= shape[2]:
        return -1
    return (zz * shape[1] + yy) * shape[2] + xx


@njit(cache=True, nogil=True)
def edge_weight_range(weights, offsets, shape):
    """Smallest and largest positive weight over the edges inside the volume.

    Parameters
    ----------
    weights : (C, n) float64
        Channel ``c`` at voxel ``u`` weighs the edge ``(u, u + offsets[c])``.
    offsets : (C, 3) int64
    shape : (3,) int64
        The volume (a 2D one as one z-section).

    Returns
    -------
    low, high : float
        0, 0 without a positive weight.
    """
    low, high = np.inf, 0.0
    for c in range(weights.shape[0]):
        u = 0
        for z in range(shape[0]):
            for y in range(shape[1]):
                for x in range(shape[2]):
                    w = weights[c, u]
                    if w > 0 and _shifted(z, y, x, offsets[c], 1, shape) >= 0:
                        low = min(low, w)
                        high = max(high, w)
                    u += 1
    if high == 0.0:
        return 0.0, 0.0
    return low, high


@njit(cache=True, nogil=True)
def reached_voxels(weights, offsets, shape, active, seeded):
    """Voxels joined to a seed by a path of edges of positive weight between active voxels.

    Parameters
    ----------
    weights : (C, n) float64
    offsets : (C, 3) int64
    shape : (3,) int64
    active : (n,) bool
        The mask (all True without one).
    seeded : (S,) int64
        Flat indices of the seeds.

    Returns
    -------
    reached : (n,) bool
    """
    n = weights.shape[1]
    reached = np.zeros(n, np.bool_)
    queue = np.empty(n, np.int64)
    end = 0
    for s in seeded:
        if not reached[s]:
            reached[s] = True
            queue[end] = s
            end += 1
    start = 0
    while start < end:
        u = queue[start]
        start += 1
        z, y, x = _coordinates(u, shape)
        for c in range(weights.shape[0]):
            v = _shifted(z, y, x, offsets[c], 1, shape)  # edge (u, u + o) of weight weights[c, u]
            if v >= 0 and not reached[v] and weights[c, u] > 0 and active[v]:
                reached[v] = True
                queue[end] = v
                end += 1
            v = _shifted(z, y, x, offsets[c], -1, shape)  # edge (u - o, u) of weight weights[c, u - o]
            if v >= 0 and not reached[v] and weights[c, v] > 0 and active[v]:
                reached[v] = True
                queue[end] = v
                end += 1
    return reached


@njit(cache=True, nogil=True)
def laplacian_csr(weights, offsets, shape, active, unknown, local, directions, index_dtype_sample):
    """``L_U`` in CSR: the graph Laplacian of the edges of positive weight between active voxels,
    restricted to the unknown voxels, with sorted column indices.

    Parameters
    ----------
    weights : (C, n) float64
    offsets : (C, 3) int64
    shape : (3,) int64
    active : (n,) bool
    unknown : (U,) int64
        Flat indices of the unknown voxels, increasing.
    local : (n,) int64
        Row of each unknown voxel, -1 elsewhere (seeds, unreached voxels).
    directions : (2 C,) int64
        The channels in the order of their flat step from a voxel to its neighbour: ``c`` is the
        neighbour ``u + offsets[c]`` (edge weight ``weights[c, u]``), ``-1 - c`` the neighbour
        ``u - offsets[c]`` (weight ``weights[c, u - offsets[c]]``); increasing steps give
        increasing columns, the diagonal goes between the negative and the positive steps.
    index_dtype_sample : (0,) int32 or int64
        Its dtype is that of ``indptr`` and ``indices``.

    Returns
    -------
    indptr : (U + 1,), indices : (nnz,), data : (nnz,) float64
        The diagonal is the sum over the edges at the voxel (those to seeds included): first
        the edges on which it is ``u``, channel by channel, then those on which it is ``v``.
        An edge given twice (offsets ``o`` and ``-o``) is one entry, the sum of both.
    """
    size = unknown.size
    n_dir = directions.size
    indptr = np.zeros(size + 1, index_dtype_sample.dtype)
    # one pass into arrays for the most entries a row can have (the caller's index dtype holds
    # that many), returned as views of their filled part
    indices = np.empty(size * (n_dir + 1), index_dtype_sample.dtype)
    data = np.empty(size * (n_dir + 1))
    k = 0
    for r in range(size):
        u = unknown[r]
        z, y, x = _coordinates(u, shape)
        as_u = 0.0
        as_v = 0.0
        for c in range(offsets.shape[0]):
            v = _shifted(z, y, x, offsets[c], 1, shape)
            if v >= 0 and weights[c, u] > 0 and active[v]:
                as_u += weights[c, u]
        for c in range(offsets.shape[0]):
            v = _shifted(z, y, x, offsets[c], -1, shape)
            if v >= 0 and weights[c, v] > 0 and active[v]:
                as_v += weights[c, v]
        start = k
        diagonal_done = False
        for d in range(n_dir):
            c = directions[d]
            if c >= 0:
                v = _shifted(z, y, x, offsets[c], 1, shape)
                w = weights[c, u] if v >= 0 else 0.0
            else:
                v = _shifted(z, y, x, offsets[-1 - c], -1, shape)
                w = weights[-1 - c, v] if v >= 0 else 0.0
            if v < 0 or not w > 0 or not active[v] or local[v] < 0:
                continue
            if not diagonal_done and v > u:
                indices[k], data[k] = r, as_u + as_v
                k += 1
                diagonal_done = True
            if k > start and indices[k - 1] == local[v]:  # the same edge from both of its channels
                data[k - 1] += -w
            else:
                indices[k], data[k] = local[v], -w
                k += 1
        if not diagonal_done:
            indices[k], data[k] = r, as_u + as_v
            k += 1
        indptr[r + 1] = k
    return indptr, indices[:k], data[:k]


@njit(cache=True, nogil=True)
def seed_coupling(weights, offsets, shape, active, local, label_index, seeded):
    """The entries of ``B`` (unknown voxel, seed label, weight), one per edge from an unknown voxel
    to a seed, in the order of the edge list (channel by channel, voxels in increasing order):
    first the edges ``(u, seed)``, then the edges ``(seed, v)``. Only the seeds' edges are read
    (an edge ``(u, seed)`` of channel ``c`` starts at ``seed - offsets[c]``, so increasing seeds
    give increasing ``u``).

    Parameters
    ----------
    weights : (C, n) float64
    offsets : (C, 3) int64
    shape : (3,) int64
    active : (n,) bool
    local : (n,) int64
        Row of each unknown voxel, -1 elsewhere.
    label_index : (n,) int64
        Label index of each seed, -1 elsewhere.
    seeded : (S,) int64
        Flat indices of the seeds, increasing.

    Returns
    -------
    rows : (E,) int64, cols : (E,) int64, vals : (E,) float64
    """
    count = 0
    for fill in range(2):
        if fill == 1:
            rows = np.empty(count, np.int64)
            cols = np.empty(count, np.int64)
            vals = np.empty(count)
            count = 0
        for side in range(2):
            for c in range(offsets.shape[0]):
                for seed in seeded:
                    z, y, x = _coordinates(seed, shape)
                    # side 0: the edge (u, seed) with u = seed - offset; side 1: (seed, v), v = seed + offset
                    other = _shifted(z, y, x, offsets[c], 1 if side == 1 else -1, shape)
                    if other < 0 or local[other] < 0 or not (active[seed] and active[other]):
                        continue
                    w = weights[c, other] if side == 0 else weights[c, seed]
                    if not w > 0:
                        continue
                    if fill == 1:
                        rows[count] = local[other]
                        cols[count] = label_index[seed]
                        vals[count] = w
                    count += 1
    return rows, cols, vals


# ------------------------------------------------------------------------------------------- solve


@njit(cache=True, nogil=True, inline="always")
def _row_dot4(indptr, indices, data, x, i, j):
    """Row ``i`` of ``A @ x`` in the columns ``j .. j + 3`` (float64 sums kept in registers)."""
    s0 = s1 = s2 = s3 = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        a = data[p]
        col = indices[p]
        s0 += a * x[col, j]
        s1 += a * x[col, j + 1]
        s2 += a * x[col, j + 2]
        s3 += a * x[col, j + 3]
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, inline="always")
def _row_dot3(indptr, indices, data, x, i, j):
    """Row ``i`` of ``A @ x`` in the columns ``j .. j + 2``."""
    s0 = s1 = s2 = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        a = data[p]
        col = indices[p]
        s0 += a * x[col, j]
        s1 += a * x[col, j + 1]
        s2 += a * x[col, j + 2]
    return s0, s1, s2


@njit(cache=True, nogil=True, inline="always")
def _row_dot2(indptr, indices, data, x, i, j):
    """Row ``i`` of ``A @ x`` in the columns ``j, j + 1``."""
    s0 = s1 = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        a = data[p]
        col = indices[p]
        s0 += a * x[col, j]
        s1 += a * x[col, j + 1]
    return s0, s1


@njit(cache=True, nogil=True, inline="always")
def _row_dot1(indptr, indices, data, x, i, j):
    """Row ``i`` of ``A @ x`` in column ``j``."""
    s = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        s += data[p] * x[indices[p], j]
    return s


@njit(cache=True, nogil=True, inline="always")
def _row_product(indptr, indices, data, x, i, acc):
    """``acc[:] = (A @ x)[i]``: the columns four at a time, the remaining ones in one more pass
    over the row."""
    m = x.shape[1]
    j = 0
    while j + 4 <= m:
        acc[j], acc[j + 1], acc[j + 2], acc[j + 3] = _row_dot4(indptr, indices, data, x, i, j)
        j += 4
    if m - j == 3:
        acc[j], acc[j + 1], acc[j + 2] = _row_dot3(indptr, indices, data, x, i, j)
    elif m - j == 2:
        acc[j], acc[j + 1] = _row_dot2(indptr, indices, data, x, i, j)
    elif m - j == 1:
        acc[j] = _row_dot1(indptr, indices, data, x, i, j)


# what a pass over the rows of a CSR matrix writes (:func:`_row_pass`)
_SET, _ADD = 0, 1


@njit(cache=True, parallel=True, nogil=True)
def _row_pass(indptr, indices, data, x, out, mode):
    """One pass over CSR ``A`` for C-ordered ``x`` of shape (n, m), row chunks in parallel:
    ``out`` = ``A x`` (``_SET``) or ``out + A x`` (``_ADD``)."""
    n, m = out.shape
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        acc = np.empty(m)
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            _row_product(indptr, indices, data, x, i, acc)
            if mode == _SET:
                for j in range(m):
                    out[i, j] = acc[j]
            else:
                for j in range(m):
                    out[i, j] += acc[j]


def spmm(indptr, indices, data, x, out):
    """``out = A @ x`` for CSR ``A`` and C-ordered ``x`` of shape (n, m)."""
    _row_pass(indptr, indices, data, x, out, _SET)


def prolong_add(indptr, indices, data, coarse, x):
    """``x += P @ coarse`` for CSR ``P``."""
    _row_pass(indptr, indices, data, coarse, x, _ADD)


@njit(cache=True, nogil=True, inline="always")
def _sum_chunks(partial, out):
    """``out[j] = sum of partial[:, j]`` in chunk order, in one thread: ``.sum()`` inside a
    parallel kernel becomes a parallel reduction, whose order follows the number of threads."""
    for j in range(partial.shape[1]):
        total = 0.0
        for chunk in range(partial.shape[0]):
            total += partial[chunk, j]
        out[j] = total


@njit(cache=True, parallel=True, nogil=True)
def spmm_dots(indptr, indices, data, x, out, dots):
    """``out = A @ x`` and ``dots[j] = x[:, j] . out[:, j]`` in the same pass: the bits of
    :func:`spmm` followed by :func:`column_dots` (the same chunks, summed in the same order, on
    any number of threads)."""
    n, m = out.shape
    chunks = (n + _CHUNK - 1) // _CHUNK
    partial = np.zeros((chunks, m))
    for chunk in prange(chunks):
        acc = np.empty(m)
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            _row_product(indptr, indices, data, x, i, acc)
            for j in range(m):
                out[i, j] = acc[j]
                partial[chunk, j] += x[i, j] * acc[j]
    _sum_chunks(partial, dots)


@njit(cache=True, parallel=True, nogil=True)
def gauss_seidel(indptr, indices, data, inverse_diagonal, x, b, bounds, backward):
    """One Gauss-Seidel sweep for ``A x = b`` in place on ``x`` (n, m), in a fixed order of parts.

    The rows are split into the parts ``bounds[t] .. bounds[t + 1]``, and a row of part ``t`` must
    couple only rows of parts ``t - 1 .. t + 1`` (the caller chooses parts at least as long as the
    matrix's bandwidth). Forward: the even parts (in parallel: they share no row), then the odd
    ones, each part's rows in increasing order; backward (``backward=True``): the exact reverse,
    the adjoint sweep, so that a forward pre-smoothing and a backward post-smoothing keep the
    V-cycle symmetric. Every row is updated after the same rows as in one thread: the result does
    not depend on the number of threads.
    """
    parts = bounds.size - 1
    m = x.shape[1]
    for phase in range(2):
        parity = 1 - phase if backward else phase
        for q in prange((parts - parity + 1) // 2):
            t = parity + 2 * q
            acc = np.empty(m)
            low, high = bounds[t], bounds[t + 1]
            for k in range(high - low):
                i = high - 1 - k if backward else low + k
                _row_product(indptr, indices, data, x, i, acc)
                d = inverse_diagonal[i]
                for j in range(m):
                    x[i, j] += d * (b[i, j] - acc[j])


@njit(cache=True, parallel=True, nogil=True)
def residual_restrict(a_indptr, a_indices, a_data, x, b, p_indptr, p_indices, p_data, coarse, partial):
    """``coarse = P^T (b - A x)`` for CSR ``A`` (n x n) and ``P`` (n x n_coarse), without storing the
    residual or forming ``P^T``: the fine rows in ``partial.shape[0] + 1`` equal parts, each
    scattered into its own sum (part 0 into ``coarse``, the others into ``partial``, shape
    (parts - 1, n_coarse, m)), then added in part order: the same sums in the same order on any
    number of threads."""
    n, m = x.shape
    parts = partial.shape[0] + 1
    for t in prange(parts):
        into = coarse if t == 0 else partial[t - 1]
        into[:, :] = 0.0
        acc = np.empty(m)
        for i in range(t * n // parts, (t + 1) * n // parts):
            _row_product(a_indptr, a_indices, a_data, x, i, acc)
            for c in range(m):
                acc[c] = b[i, c] - acc[c]
            for p in range(p_indptr[i], p_indptr[i + 1]):
                j = p_indices[p]
                v = p_data[p]
                for c in range(m):
                    into[j, c] += v * acc[c]
    for chunk in prange((coarse.shape[0] + _CHUNK - 1) // _CHUNK):
        for j in range(chunk * _CHUNK, min(coarse.shape[0], (chunk + 1) * _CHUNK)):
            for t in range(parts - 1):
                for c in range(m):
                    coarse[j, c] += partial[t, j, c]


@njit(cache=True, parallel=True, nogil=True)
def scale_rows(inverse_diagonal, b, out):
    """``out = D^-1 b``: the coarsest level's solve where it has no dense factorisation (exact
    where it is diagonal, one Jacobi step from 0 where it is too large)."""
    n, m = out.shape
    for i in prange(n):
        d = inverse_diagonal[i]
        for j in range(m):
            out[i, j] = d * b[i, j]


@njit(cache=True, parallel=True, nogil=True)
def cg_step(x, r, p, ap, alpha, squared_norm):
    """``x += alpha p``, ``r -= alpha ap`` per column, and the squared norms of the new ``r``."""
    n, m = r.shape
    chunks = (n + _CHUNK - 1) // _CHUNK
    partial = np.zeros((chunks, m))
    for chunk in prange(chunks):
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            for j in range(m):
                x[i, j] += alpha[j] * p[i, j]
                r[i, j] -= alpha[j] * ap[i, j]
                partial[chunk, j] += r[i, j] * r[i, j]
    _sum_chunks(partial, squared_norm)


@njit(cache=True, parallel=True, nogil=True)
def column_dots(a, b, out):
    """``out[j] = a[:, j] . b[:, j]``."""
    n, m = a.shape
    chunks = (n + _CHUNK - 1) // _CHUNK
    partial = np.zeros((chunks, m))
    for chunk in prange(chunks):
        for i in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            for j in range(m):
                partial[chunk, j] += a[i, j] * b[i, j]
    _sum_chunks(partial, out)


@njit(cache=True, parallel=True, nogil=True)
def cg_direction(z, p, beta):
    """``p = z + beta p`` per column, in place."""
    n, m = p.shape
    for i in prange(n):
        for j in range(m):
            p[i, j] = z[i, j] + beta[j] * p[i, j]


@njit(cache=True, nogil=True)
def fold_label(x, label, top, best, probabilities, unknown):
    """Fold the probabilities ``x`` (U,) of seed label index ``label`` into the running maximum
    ``top`` and its label index ``best`` (ties: the smaller index), and write ``x`` clipped to
    [0, 1] into ``probabilities[unknown]`` (skipped when ``probabilities`` is empty). Returns the
    smallest and largest value of ``x``."""
    low, high = np.inf, -np.inf
    keep = probabilities.size > 0
    for i in range(x.size):
        v = x[i]
        low = min(low, v)
        high = max(high, v)
        if v > top[i] or (v == top[i] and label < best[i]):
            top[i] = v
            best[i] = label
        if keep:
            probabilities[unknown[i]] = min(max(v, 0.0), 1.0)
    return low, high


@njit(cache=True, nogil=True)
def keep_columns(flat, n, m, keep):
    """Compact the C-ordered ``(n, m)`` block stored at the start of ``flat`` in place to its
    columns ``keep`` (increasing), an ``(n, keep.size)`` block at the start of ``flat``."""
    k = keep.size
    for i in range(n):  # in increasing order: a row's new place never overlaps a later row's old one
        for jj in range(k):
            flat[i * k + jj] = flat[i * m + keep[jj]]


# --------------------------------------------------------------- smoothed-aggregation multigrid setup


@njit(cache=True, nogil=True)
def improve_candidate(indptr, indices, data, b, sweeps):
    """``sweeps`` symmetric Gauss-Seidel sweeps (forward, then backward) on ``A b = 0``, in place:
    the near-null-space candidate of smoothed aggregation, smoothed.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of ``A`` (n x n), float64 values
    b : (n,) float64
    sweeps : int
    """
    n = indptr.size - 1
    for _ in range(sweeps):
        for forward in (True, False):
            for k in range(n):
                i = k if forward else n - 1 - k
                diagonal = 0.0
                rest = 0.0
                for p in range(indptr[i], indptr[i + 1]):
                    j = indices[p]
                    if j == i:
                        diagonal += data[p]
                    else:
                        rest += data[p] * b[j]
                if diagonal != 0.0:
                    b[i] = -rest / diagonal


@njit(cache=True, nogil=True)
def smoothed_prolongator(indptr, indices, data, aggregate, n_aggregates, candidate, weight):
    """The tentative prolongator of the aggregates smoothed by one damped Jacobi step,
    ``P = (I - weight D^-1 A) T`` with ``T[i, aggregate[i]] = candidate[i] / |candidate on the
    aggregate|``; and the coarse candidate ``|candidate on each aggregate|``.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of ``A`` (n x n), float64 values
    aggregate : (n,) int32
        Aggregate of each row, -1 for none.
    n_aggregates : int
    candidate : (n,) float64
    weight : float
        Damping over the spectral radius of ``D^-1 A``.

    Returns
    -------
    indptr : (n + 1,) int64
    indices : CSR column indices of ``P`` (n x n_aggregates), dtype of ``indices``
    data : float64
    coarse_candidate : (n_aggregates,) float64
    """
    n = indptr.size - 1
    norm = np.zeros(n_aggregates)
    for i in range(n):
        if aggregate[i] >= 0:
            norm[aggregate[i]] += candidate[i] * candidate[i]
    norm = np.sqrt(norm)
    tentative = np.zeros(n)
    for i in range(n):
        a = aggregate[i]
        if a >= 0 and norm[a] > 0:
            tentative[i] = candidate[i] / norm[a]
    where = np.full(n_aggregates, -1, np.int64)
    p_indptr = np.zeros(n + 1, np.int64)
    for fill in range(2):
        if fill == 1:
            for i in range(n):
                p_indptr[i + 1] += p_indptr[i]
            p_indices = np.empty(p_indptr[n], indices.dtype)
            p_data = np.empty(p_indptr[n])
        for i in range(n):
            diagonal = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                if indices[p] == i:
                    diagonal += data[p]
            scale = weight / diagonal if diagonal != 0.0 else 0.0
            start = p_indptr[i] if fill == 1 else 0
            k = 0
            if aggregate[i] >= 0:
                where[aggregate[i]] = start
                if fill == 1:
                    p_indices[start] = aggregate[i]
                    p_data[start] = tentative[i]
                k = 1
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                a = aggregate[j]
                if a < 0:
                    continue
                if where[a] < 0:
                    where[a] = start + k
                    if fill == 1:
                        p_indices[start + k] = a
                        p_data[start + k] = 0.0
                    k += 1
                if fill == 1:
                    p_data[where[a]] -= scale * data[p] * tentative[j]
            if fill == 0:
                p_indptr[i + 1] = k
            # forget this row's positions (the next row starts further on)
            for p in range(indptr[i], indptr[i + 1]):
                if aggregate[indices[p]] >= 0:
                    where[aggregate[indices[p]]] = -1
            if aggregate[i] >= 0:
                where[aggregate[i]] = -1
    return p_indptr, p_indices, p_data, norm


@njit(cache=True, nogil=True)
def transpose_csr(indptr, indices, data, n_cols):
    """The CSR arrays of the transpose of an ``(n, n_cols)`` CSR matrix (sorted indices): ``indptr``
    int64, ``indices`` in the dtype of ``indptr`` (row numbers), values in the dtype of ``data``."""
    n = indptr.size - 1
    t_indptr = np.zeros(n_cols + 1, np.int64)
    for p in range(indptr[n]):
        t_indptr[indices[p] + 1] += 1
    for c in range(n_cols):
        t_indptr[c + 1] += t_indptr[c]
    fill = t_indptr[:-1].copy()
    t_indices = np.empty(indptr[n], indptr.dtype)
    t_data = np.empty(indptr[n], data.dtype)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            t_indices[fill[c]] = i
            t_data[fill[c]] = data[p]
            fill[c] += 1
    return t_indptr, t_indices, t_data


@njit(cache=True, nogil=True)
def sparse_product(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols):
    """The CSR arrays of ``A @ B`` (``A``: n x k, ``B``: k x n_cols, CSR), float64 values; row by
    row with a dense accumulator (Gustavson), in one pass. The entries go into arrays sized for
    the most the product can have (the sum of the ``B`` rows each entry of ``A`` reaches), whose
    pages past the entries written are never touched, so never resident: the views returned
    hold that allocation (copy them to free it; counting the entries first took a second pass,
    some 40 % of a product). A row's column indices come in the order they are first reached
    (deterministic, not sorted: the kernels need no order, sorting took half the time of a
    product, and the sparse products of a sorted coarse level were no faster). ``indptr`` is
    int64 (the product may hold more entries than its factors' index dtype counts), ``indices``
    in the dtype of ``b_indices`` (column numbers of ``B``)."""
    n = a_indptr.size - 1
    bound = 0
    for q in range(a_indptr[n]):
        i = a_indices[q]
        bound += b_indptr[i + 1] - b_indptr[i]
    c_indptr = np.zeros(n + 1, np.int64)
    c_indices = np.empty(bound, b_indices.dtype)
    c_data = np.empty(bound)
    acc = np.zeros(n_cols)
    marker = np.full(n_cols, -1, np.int64)
    k = 0
    for row in range(n):
        start = k
        for q in range(a_indptr[row], a_indptr[row + 1]):
            i = a_indices[q]
            value = a_data[q]
            for s in range(b_indptr[i], b_indptr[i + 1]):
                col = b_indices[s]
                if marker[col] != row:
                    marker[col] = row
                    c_indices[k] = col
                    k += 1
                acc[col] += value * b_data[s]
        for t in range(start, k):
            c_data[t] = acc[c_indices[t]]
            acc[c_indices[t]] = 0.0
        c_indptr[row + 1] = k
    return c_indptr, c_indices[:k], c_data[:k]


@njit(cache=True, nogil=True)
def bandwidth(indptr, indices):
    """The largest distance ``|j - i|`` of an entry ``(i, j)`` of a CSR matrix from the diagonal."""
    widest = 0
    for i in range(indptr.size - 1):
        for p in range(indptr[i], indptr[i + 1]):
            widest = max(widest, abs(np.int64(indices[p]) - i))
    return widest


@njit(cache=True, nogil=True)
def lanczos_radius(indptr, indices, data, steps):
    """An estimate of the spectral radius of ``D^-1 A`` for symmetric ``A`` with positive diagonal:
    the largest Ritz value of ``steps`` Lanczos steps on ``D^-1/2 A D^-1/2`` from a fixed
    pseudo-random start (a multiplicative hash of the row index)."""
    n = indptr.size - 1
    scale = np.zeros(n)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i and data[p] > 0:
                scale[i] = 1.0 / np.sqrt(data[p])
    v = np.empty(n)
    norm = 0.0
    for i in range(n):
        v[i] = ((i * 2654435761 + 12345) % 4294967296) / 4294967296.0 - 0.5
        norm += v[i] * v[i]
    norm = np.sqrt(norm)
    for i in range(n):
        v[i] /= norm
    # each step's vector operations fused into three passes, with no temporary arrays
    v_old = np.zeros(n)
    w = np.empty(n)
    alphas = np.zeros(steps)
    betas = np.zeros(steps)
    beta = 0.0
    k = 0
    scaled = np.empty(n)
    for k in range(steps):
        for i in range(n):
            scaled[i] = scale[i] * v[i]
        alpha = 0.0
        for i in range(n):
            acc = 0.0
            for p in range(indptr[i], indptr[i + 1]):
                acc += data[p] * scaled[indices[p]]
            w[i] = scale[i] * acc - beta * v_old[i]
            alpha += w[i] * v[i]
        squared = 0.0
        for i in range(n):
            w[i] -= alpha * v[i]
            squared += w[i] * w[i]
        alphas[k] = alpha
        beta = np.sqrt(squared)
        betas[k] = beta
        if beta < 1e-12:
            break
        for i in range(n):
            v_old[i] = v[i]
            v[i] = w[i] / beta
    size = k + 1
    tri = np.zeros((size, size))
    for t in range(size):
        tri[t, t] = alphas[t]
        if t + 1 < size:
            tri[t, t + 1] = betas[t]
            tri[t + 1, t] = betas[t]
    return np.abs(np.linalg.eigvalsh(tri)).max()
