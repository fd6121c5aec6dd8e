"""Sparse-matrix times block-of-columns kernels for the random walker's multigrid CG.

scipy's CSR products run on one core and need a separate pass for every ``b - A x``; these
read each matrix row once for all columns, fuse the residual and Jacobi updates, and split the
rows over the available cores.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, nogil=True)
def spmm(indptr, indices, data, x, out):
    """``out = A @ x`` for CSR ``A`` and C-ordered ``x`` of shape (n, m)."""
    m = x.shape[1]
    for i in prange(indptr.size - 1):
        for j in range(m):
            out[i, j] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            a = data[p]
            col = indices[p]
            for j in range(m):
                out[i, j] += a * x[col, j]


@njit(cache=True, nogil=True, inline="always")
def _residual_row(indptr, indices, data, x, b, out, i):
    """``out[i] = b[i] - (A @ x)[i]``."""
    for j in range(x.shape[1]):
        out[i, j] = b[i, j]
    for p in range(indptr[i], indptr[i + 1]):
        a = data[p]
        col = indices[p]
        for j in range(x.shape[1]):
            out[i, j] -= a * x[col, j]


@njit(cache=True, parallel=True, nogil=True)
def residual(indptr, indices, data, x, b, out):
    """``out = b - A @ x``."""
    for i in prange(indptr.size - 1):
        _residual_row(indptr, indices, data, x, b, out, i)


@njit(cache=True, parallel=True, nogil=True)
def jacobi_sweep(indptr, indices, data, damped_inverse_diagonal, x, b, out):
    """``out = x + D^-1 omega (b - A @ x)``, one damped Jacobi sweep (one pass over ``A``)."""
    m = x.shape[1]
    for i in prange(indptr.size - 1):
        _residual_row(indptr, indices, data, x, b, out, i)
        d = damped_inverse_diagonal[i]
        for j in range(m):
            out[i, j] = x[i, j] + d * out[i, j]


@njit(cache=True, parallel=True, nogil=True)
def cg_step(x, r, p, ap, alpha, squared_norm):
    """``x += alpha p``, ``r -= alpha ap`` per column, and the squared norms of the new ``r``."""
    n, m = r.shape
    partial = np.zeros((n, m))
    for i in prange(n):
        for j in range(m):
            x[i, j] += alpha[j] * p[i, j]
            r[i, j] -= alpha[j] * ap[i, j]
            partial[i, j] = r[i, j] * r[i, j]
    for j in range(m):
        squared_norm[j] = partial[:, j].sum()


@njit(cache=True, parallel=True, nogil=True)
def column_dots(a, b, out):
    """``out[j] = a[:, j] . b[:, j]``."""
    n, m = a.shape
    for j in range(m):
        out[j] = 0.0
    chunks = 64
    partial = np.zeros((chunks, m))
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        for i in range(c * step, min(n, (c + 1) * step)):
            for j in range(m):
                partial[c, j] += a[i, j] * b[i, j]
    for j in range(m):
        out[j] = partial[:, j].sum()


@njit(cache=True, parallel=True, nogil=True)
def cg_direction(z, p, beta):
    """``p = z + beta p`` per column, in place."""
    n, m = p.shape
    for i in prange(n):
        for j in range(m):
            p[i, j] = z[i, j] + beta[j] * p[i, j]
