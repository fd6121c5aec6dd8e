"""The seeded random walker (Grady 2006) on a 2D or 3D grid graph with any offsets.

Each unseeded voxel gets, for every seed label ``k``, the probability that a random walk started
there first reaches a seed of label ``k``, where the walk moves along an edge with probability
proportional to its weight. The probabilities ``x_k`` solve ``L_U x_k = B_k``: ``L_U`` is the
graph Laplacian restricted to the unseeded voxels and ``B_k`` sums the weights of the edges that
join each unseeded voxel to seeds of label ``k``. ``L_U`` is factorised (or given an algebraic
multigrid preconditioner) once and reused for every label, and again by the adjoint solves of
:mod:`affseg.learn.random_walker`.

Documented results instead of singular systems: a voxel whose component (over the edges of
positive weight inside the mask) holds no seed is *unreached*: label 0 and probability 0 for
every label. Voxels outside the mask are unreached too. Zero weights remove edges.
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from scipy.sparse import csgraph

from ..._checks import as_array, as_flag, as_labels, as_mask, as_number, as_offsets, as_spacing, describe
from ...errors import InputError
from ..core.edges import edge_list, edge_slices
from ._kernels import (
    cg_direction,
    cg_step,
    column_dots,
    jacobi_sweep,
    spmm,
)
from ._kernels import residual as block_residual

__all__ = ["RandomWalkerSystem", "image_weights", "random_walker"]

SOLVERS = ("auto", "direct", "cg")
# "auto" factorises up to these numbers of unknowns (SuperLU's fill grows much faster in 3D than
# in 2D); a rule of thumb, the crossover with multigrid CG was not measured
DIRECT_MAX_UNKNOWNS = {2: 250_000, 3: 40_000}
# weight given to affinities of exactly 0 by the pipeline and the training loss, so that the
# walk still reaches every voxel (a weight of 0 removes the edge)
MIN_AFFINITY_WEIGHT = 1e-6
# columns solved together by the direct solver: bounds the dense right-hand sides in memory
_DIRECT_BLOCK = 32
# memory for the work arrays of block CG (8 blocks of unknowns x columns, float64), and the
# fewest columns per block: wider blocks lose cache locality, narrower ones the shared matrix reads
_CG_BLOCK_BYTES = 1 << 28
_CG_MIN_BLOCK = 3


def image_weights(image: ArrayLike, *, beta: float = 130.0, spacing: ArrayLike | None = None,
                  eps: float = 1e-10) -> np.ndarray:
    """scikit-image's random-walker edge weights of a grey-value image, in affseg's layout.

    ``w = exp(-beta * g**2 / (10 * std(image))) + eps`` where ``g`` is the difference of the two
    voxels divided by the spacing of their axis, exactly as
    ``skimage.segmentation.random_walker`` builds its Laplacian. Channel ``d`` at voxel ``u``
    weighs the edge between ``u`` and ``u - e_d`` (the default offsets); the first index of axis
    ``d`` has no such edge and holds 0.

    Parameters
    ----------
    image : (z, y, x) or (y, x) array_like of float
        Grey values as scikit-image sees them: integer images are used as they are (cast to
        float64), so pass ``img_as_float(image)`` (uint8 divided by 255) to match scikit-image.
    beta : float
        Penalisation of intensity differences (skimage's default 130), >= 0.
    spacing : sequence of float, optional
        Voxel size per axis (positive), default 1.
    eps : float
        Added to every weight so that no edge vanishes, >= 0.

    Returns
    -------
    weights : (ndim, z, y, x) or (ndim, y, x) float64
        Channel ``d`` weighs the edge ``(u, u - e_d)``; 0 on the first index of axis ``d``.

    Raises
    ------
    InputError
        If ``image`` is not a non-empty 2D or 3D numeric array of finite values (or its
        differences overflow float64), or ``beta``, ``eps`` or ``spacing`` are invalid.
    """
    image = as_array(image, name="image")
    if image.ndim not in (2, 3):
        raise InputError(f"image must be 2D (y, x) or 3D (z, y, x), got shape {image.shape}")
    if image.dtype.kind not in "fiu":
        raise InputError(f"image must be numeric, got dtype {image.dtype}")
    if image.size == 0:
        raise InputError(f"image is empty, shape {image.shape}")
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise InputError(f"image contains {int(np.count_nonzero(~np.isfinite(image)))} NaN or infinite values")
    beta = as_number(beta, name="beta", low=0.0)
    eps = as_number(eps, name="eps", low=0.0)
    spacing = np.ones(image.ndim) if spacing is None else as_spacing(spacing, image.ndim, name="spacing")
    with np.errstate(over="ignore", invalid="ignore"):
        std = image.std()
        scale = -beta / (10 * std) if std > 0 else 0.0
        weights = np.zeros((image.ndim,) + image.shape)
        for d in range(image.ndim):
            inner = (slice(None),) * d + (slice(1, None),)
            weights[d][inner] = np.exp(scale * (np.diff(image, axis=d) / spacing[d]) ** 2) + eps
    if not (np.isfinite(std) and np.all(np.isfinite(weights))):  # differences beyond float64
        raise InputError(f"image values span [{image.min()}, {image.max()}]: their differences overflow float64")
    return weights


def _as_weights(weights, offsets, *, name: str = "weights") -> tuple[np.ndarray, np.ndarray]:
    arr = as_array(weights, name=name)
    if arr.ndim not in (3, 4):
        raise InputError(f"{name} must have the shape (channels, z, y, x) or (channels, y, x), got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name} must be float (or integer), got dtype {arr.dtype}")
    offsets = as_offsets(offsets, arr.ndim - 1, channels=arr.shape[0])
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputError(f"{name} contains {int(np.count_nonzero(bad))} NaN or infinite values")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} must not be negative (edge diffusivities), found {arr.min()}")
    return arr, offsets


class RandomWalkerSystem:
    """The linear system of one seeded random-walker problem, solved for any right-hand side.

    Parameters
    ----------
    weights : (C, z, y, x) or (C, y, x) float
        Non-negative edge weights: channel ``c`` at ``u`` weighs the edge ``(u, u + offsets[c])``.
        Affinities (1 = same object) are weights as they are.
    seeds : (z, y, x) or (y, x) int
        Seed labels, 0 = unseeded.
    offsets : (C, ndim) array_like of int, optional
    mask : bool array of the spatial shape, optional
        Voxels outside take no part (no edges); seeds there are an error.
    solver : {"auto", "direct", "cg"}
        ``direct``: sparse LU (SuperLU) of ``L_U``, reused for all labels; ``cg``: conjugate
        gradients preconditioned by smoothed-aggregation algebraic multigrid (pyamg), built once;
        ``auto``: direct up to :data:`DIRECT_MAX_UNKNOWNS` unknowns, cg above.
    tol : float
        Relative residual ``|L_U x - b| <= tol |b|`` at which cg stops (unused by direct). A
        small residual is not a small error where ``L_U`` is ill-conditioned: on weights spanning
        1e-10..1 (log-uniform, 32x32 and 64x64 grids, 4 seed labels) cg at the default 1e-6
        gave probabilities up to 0.20 away from the exact answer (direct agreed with a dense
        solve to 2e-9), on weights spanning 1e-8..1 up to 0.02, on 1e-6..1 up to 0.004, on
        1e-4..1 below 1e-4. A smaller tol narrows the gap only partly (tol 1e-10: still 0.05
        to 0.14 on the 1e-10..1 weights, where cg stalls at 1000 iterations with a
        RuntimeWarning): use ``solver="direct"`` where the exact probabilities matter.

    Attributes
    ----------
    labels : (K,) uint64
        The seed labels in increasing order; probability channel ``k`` belongs to ``labels[k]``.
    unknown : (U,) int64
        Flat indices of the unseeded voxels that some seed reaches.
    unreached : (n,) bool
        Flat mask of the voxels no seed reaches (including masked-out voxels).
    laplacian : (U, U) scipy.sparse.csr_array
    coupling : (U, K) scipy.sparse.csr_array
        ``B``: total weight between each unknown voxel and the seeds of each label.
    """

    def __init__(self, weights, seeds, offsets=None, *, mask=None, solver: str = "auto", tol: float = 1e-6):
        weights, offsets = _as_weights(weights, offsets)
        shape = weights.shape[1:]
        seeds = as_labels(seeds, name="seeds", shape=shape)
        mask = as_mask(mask, shape)
        if not isinstance(solver, str) or solver not in SOLVERS:
            raise InputError(f"unknown solver {describe(solver)}; choose one of {SOLVERS}")
        tol = as_number(tol, name="tol")
        if not 0 < tol < 1:
            raise InputError(f"tol must lie in (0, 1), got {tol}")
        flat_seeds = seeds.reshape(-1)
        seeded = np.flatnonzero(flat_seeds)
        if seeded.size == 0:
            raise InputError(f"seeds of shape {seeds.shape} hold no seed (all 0)")
        if mask is not None and not mask.reshape(-1)[seeded].all():
            outside = int(np.count_nonzero(~mask.reshape(-1)[seeded]))
            raise InputError(f"{outside} seed voxels lie outside the mask")
        self.shape, self.offsets, self.mask, self.tol = tuple(shape), offsets, mask, tol
        n = flat_seeds.size
        self.labels, seed_index = np.unique(flat_seeds[seeded], return_inverse=True)
        self.label_index = np.full(n, -1, np.int64)
        self.label_index[seeded] = seed_index
        u, v, e = edge_list(shape, offsets)
        w = weights.reshape(-1)[e]
        positive = w[w > 0]
        self.weight_range = (float(positive.min()), float(positive.max())) if positive.size else (0.0, 0.0)
        keep = w > 0
        if mask is not None:
            flat_mask = mask.reshape(-1)
            keep &= flat_mask[u] & flat_mask[v]
        u, v, w = u[keep], v[keep], w[keep]
        del e, keep
        self.unreached = ~self._reached(n, u, v, seeded)
        self.unknown = np.flatnonzero(~self.unreached & (self.label_index < 0))
        self.laplacian, self.coupling = self._assemble(n, u, v, w)
        n_unknown = self.unknown.size
        if solver == "auto":
            solver = "direct" if n_unknown <= DIRECT_MAX_UNKNOWNS[len(shape)] else "cg"
        self.solver = solver
        self._factor = None
        self._preconditioner = None
        self.not_converged = 0

    def _reached(self, n, u, v, seeded) -> np.ndarray:
        graph = sparse.coo_array((np.ones(u.size, np.int8), (u, v)), shape=(n, n))
        _, component = csgraph.connected_components(graph, directed=False)
        seeded_components = np.zeros(int(component.max()) + 1, bool)
        seeded_components[component[seeded]] = True
        return seeded_components[component]

    def _assemble(self, n, u, v, w):
        local = np.full(n, -1, np.int64)
        local[self.unknown] = np.arange(self.unknown.size)
        lu, lv = local[u], local[v]
        size, k = self.unknown.size, self.labels.size
        diagonal = (np.bincount(lu[lu >= 0], weights=w[lu >= 0], minlength=size)
                    + np.bincount(lv[lv >= 0], weights=w[lv >= 0], minlength=size))
        both = (lu >= 0) & (lv >= 0)
        rows = np.concatenate([lu[both], lv[both], np.arange(size)])
        cols = np.concatenate([lv[both], lu[both], np.arange(size)])
        vals = np.concatenate([-w[both], -w[both], diagonal])
        laplacian = sparse.csr_array((vals, (rows, cols)), shape=(size, size))
        # edges from an unknown voxel to a seed feed the right-hand side of the seed's label
        to_seed_v = (lu >= 0) & (self.label_index[v] >= 0)
        to_seed_u = (lv >= 0) & (self.label_index[u] >= 0)
        rows = np.concatenate([lu[to_seed_v], lv[to_seed_u]])
        cols = np.concatenate([self.label_index[v[to_seed_v]], self.label_index[u[to_seed_u]]])
        vals = np.concatenate([w[to_seed_v], w[to_seed_u]])
        coupling = sparse.csr_array((vals, (rows, cols)), shape=(size, k))
        return laplacian, coupling

    # ------------------------------------------------------------------ solving

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_U^{-1} rhs`` for ``rhs`` of shape ``(U,)`` or ``(U, m)`` (float64)."""
        rhs = np.asarray(rhs, dtype=np.float64)
        if rhs.shape[0] != self.unknown.size:
            raise InputError(f"rhs has {rhs.shape[0]} rows, the system {self.unknown.size} unknowns")
        if self.unknown.size == 0:
            return np.zeros_like(rhs)
        columns = rhs.reshape(rhs.shape[0], -1)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if self.solver == "direct":
                    out = np.empty_like(columns)
                    for start in range(0, columns.shape[1], _DIRECT_BLOCK):
                        block = slice(start, start + _DIRECT_BLOCK)
                        out[:, block] = self._lu().solve(np.asfortranarray(columns[:, block]))
                else:
                    out = self._cg(columns)
        except (RuntimeError, np.linalg.LinAlgError) as err:  # SuperLU: "exactly singular"; Cholesky
            raise self._singular() from err
        if not np.all(np.isfinite(out)):
            raise self._singular()
        return out.reshape(rhs.shape)

    def _singular(self, what: str = "singular") -> InputError:
        lo, hi = self.weight_range
        return InputError(
            f"the random-walker system is {what} in float64: the positive weights span {lo:.3g} to {hi:.3g}, "
            "more than float64 resolves where they meet (about 1e-15 of the weights at a voxel); set negligible "
            "weights to 0 (which removes the edge) or raise them"
        )

    def block_width(self) -> int:
        """How many right-hand sides are solved together."""
        if self.solver == "direct":
            return _DIRECT_BLOCK
        return max(_CG_MIN_BLOCK, _CG_BLOCK_BYTES // (8 * 8 * max(1, self.unknown.size)))

    def _lu(self):
        if self._factor is None:
            from scipy.sparse.linalg import splu

            self._factor = splu(sparse.csc_matrix(self.laplacian), permc_spec="MMD_AT_PLUS_A")
        return self._factor

    def _cg(self, columns: np.ndarray) -> np.ndarray:
        out = np.zeros_like(columns)
        width = self.block_width()
        multigrid = self._amg()
        for start in range(0, columns.shape[1], width):
            block = slice(start, start + width)
            # level 0 of the hierarchy is L_U itself, already in the kernels' layout
            out[:, block], failed = _block_pcg(multigrid.matrices[0], columns[:, block], multigrid, self.tol)
            self.not_converged += failed
        return out

    def _amg(self) -> _BlockMultigrid:
        if self._preconditioner is None:
            self._preconditioner = _BlockMultigrid(self.laplacian)
        return self._preconditioner

    def unknown_probabilities(self, labels=None) -> np.ndarray:
        """``(U, K)`` probabilities of the unknown voxels (the columns of ``labels`` indices)."""
        cols = np.arange(self.labels.size) if labels is None else np.asarray(labels)
        rhs = self.coupling[:, cols].toarray() if cols.size else np.zeros((self.unknown.size, 0))
        return self.solve(rhs)

    def full(self, unknown_values: np.ndarray, seed_values: bool) -> np.ndarray:
        """``(K, n)`` values on all voxels: ``unknown_values`` (``(U, K)``) on the unknown ones,
        the seed indicator (or 0 if not ``seed_values``) on seeds, 0 on unreached voxels."""
        k = unknown_values.shape[1]
        out = np.zeros((k, self.label_index.size), dtype=unknown_values.dtype)
        out[:, self.unknown] = unknown_values.T
        if seed_values:
            seeded = np.flatnonzero(self.label_index >= 0)
            out[self.label_index[seeded], seeded] = 1
        return out

    def edge_gradient(self, x_full: np.ndarray, adjoint_full: np.ndarray) -> np.ndarray:
        """``dLoss/dw`` for every edge, ``(C, *shape)``: ``-sum_k (l_u - l_v)(x_u - x_v)`` with the
        adjoint ``l = L_U^{-1} dLoss/dx`` (0 off the unknowns); 0 for edges outside the volume or mask."""
        k = x_full.shape[0]
        x = x_full.reshape((k,) + self.shape)
        lam = adjoint_full.reshape((k,) + self.shape)
        grad = np.zeros((len(self.offsets),) + self.shape)
        for c, offset in enumerate(self.offsets):
            src, dst = edge_slices(offset, self.shape)
            ks = (slice(None),)
            g = -np.einsum("k...,k...->...", lam[ks + src] - lam[ks + dst], x[ks + src] - x[ks + dst])
            if self.mask is not None:
                g *= self.mask[src] & self.mask[dst]
            grad[c][src] = g
        return grad


class _Csr:
    """The arrays of a CSR matrix, for the block kernels."""

    def __init__(self, matrix):
        matrix = sparse.csr_array(matrix)
        matrix.sort_indices()
        self.shape = matrix.shape
        self.arrays = (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64),
                       matrix.data.astype(np.float64))

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((self.shape[0], x.shape[1]))
        spmm(*self.arrays, np.ascontiguousarray(x), out)
        return out

    def residual(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty_like(b)
        block_residual(*self.arrays, x, b, out)
        return out


class _BlockMultigrid:
    """A V-cycle of smoothed-aggregation algebraic multigrid (pyamg's setup) applied to a block of
    right-hand sides at once: every sparse product reads its matrix once for all columns.

    Damped Jacobi smoothing (one sweep before and after, omega 2/3: the spectrum of ``D^-1 L``
    of a weighted graph Laplacian lies in [0, 2]) keeps the cycle symmetric, as CG needs; the
    coarsest level is solved by a dense Cholesky factorisation.
    """

    def __init__(self, laplacian):
        import pyamg
        from scipy.linalg import cho_factor

        ml = pyamg.smoothed_aggregation_solver(sparse.csr_matrix(laplacian), symmetry="symmetric",
                                               max_coarse=500, keep=False)
        self.matrices = [_Csr(level.A) for level in ml.levels]
        self.restrict = [_Csr(level.R) for level in ml.levels[:-1]]
        self.prolong = [_Csr(level.P) for level in ml.levels[:-1]]
        self.damped_inverse_diagonal = [(2.0 / 3.0) / sparse.csr_array(level.A).diagonal()
                                        for level in ml.levels[:-1]]
        self.coarse = cho_factor(ml.levels[-1].A.toarray())

    def __call__(self, b: np.ndarray) -> np.ndarray:
        return self._cycle(0, np.ascontiguousarray(b))

    def _cycle(self, level: int, b: np.ndarray) -> np.ndarray:
        from scipy.linalg import cho_solve

        if level == len(self.matrices) - 1:
            return cho_solve(self.coarse, b)
        a, dinv = self.matrices[level], self.damped_inverse_diagonal[level]
        x = dinv[:, None] * b
        x += self.prolong[level] @ self._cycle(level + 1, self.restrict[level] @ a.residual(x, b))
        out = np.empty_like(x)
        jacobi_sweep(*a.arrays, dinv, x, b, out)
        return out


def _block_pcg(a: _Csr, b: np.ndarray, precondition, tol: float, maxiter: int = 1000) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients for the columns of ``b`` side by side (each column has
    its own step sizes); converged columns leave the block. Returns the solution and the number
    of columns that missed ``|r| <= tol |b|``."""
    b = np.ascontiguousarray(b)
    x = np.zeros_like(b)
    target = tol * np.linalg.norm(b, axis=0)
    live = np.flatnonzero(target > 0)
    if live.size == 0:
        return x, 0
    r = b[:, live].copy()
    z = precondition(r)
    p = z.copy()
    rz = np.empty(live.size)
    column_dots(r, z, rz)
    xs = np.zeros_like(r)
    for _ in range(maxiter):
        ap = a @ p
        pap = np.empty(live.size)
        column_dots(p, ap, pap)
        alpha = rz / pap
        squared = np.empty(live.size)
        cg_step(xs, r, p, ap, alpha, squared)
        # a column is done at its tolerance, or when its residual vanished (exact preconditioner)
        done = (np.sqrt(squared) <= target[live]) | ~(rz > 0)
        if done.any():
            x[:, live[done]] = xs[:, done]
            keep = ~done
            live, r, p, xs, rz = live[keep], r[:, keep], p[:, keep], xs[:, keep], rz[keep]
            if live.size == 0:
                return x, 0
        z = precondition(r)
        rz_new = np.empty(live.size)
        column_dots(r, z, rz_new)
        cg_direction(z, p, rz_new / rz)
        rz = rz_new
    x[:, live] = xs
    return x, int(live.size)


def random_walker(
    weights: ArrayLike,
    seeds: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    mask: ArrayLike | None = None,
    solver: str = "auto",
    tol: float = 1e-6,
    return_probabilities: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment a volume with the seeded random walker on affinities or edge weights.

    Parameters
    ----------
    weights : (C, z, y, x) or (C, y, x) float
        Non-negative, finite edge weights (diffusivities); channel ``c`` at ``u`` weighs the edge
        between ``u`` and ``u + offsets[c]``. Affinities are used as they are (1 = same object);
        :func:`image_weights` gives scikit-image's weights of a grey-value image. A weight of 0
        removes the edge. Only ratios matter (any scale works), but where positive weights at
        a voxel differ by more than float64 resolves (about 1e-15) the system can be singular
        in float64: then an InputError says so.
    seeds : (z, y, x) or (y, x) int
        Seed labels (any positive ids), 0 = unseeded. At least one seed is needed.
    offsets : (C, ndim) array_like of int, optional
        Default: the nearest neighbours ``-e_d``.
    mask : bool array of the spatial shape, optional
        Voxels outside are not part of the graph: label 0, probability 0.
    solver : {"auto", "direct", "cg"}
        See :class:`RandomWalkerSystem`.
    tol : float
        Relative residual for the cg solver (a positive number below 1). On ill-conditioned
        weights cg's answer can be far from the exact one at the default 1e-6: up to 0.20 in
        probability measured on weights spanning 1e-10..1 (see :class:`RandomWalkerSystem`);
        use ``solver="direct"`` (or a smaller tol, which helps only partly) where that matters.
    return_probabilities : bool
        Also return the probabilities.

    Returns
    -------
    segmentation : uint64 array, spatial shape
        Each voxel gets the label of its most probable seed (ties: the smaller label), seeds keep
        theirs; voxels no seed reaches (see the module docstring) and masked voxels get 0. With a
        single seed label every reached voxel gets it (no solve).
    probabilities : (K, z, y, x) or (K, y, x) float32, if ``return_probabilities``
        Channel ``k`` for the ``k``-th smallest seed label (``np.unique(seeds[seeds > 0])``); 1 on
        the seeds of that label, 0 on other seeds and on unreached voxels; clipped to [0, 1]
        (rounding, or cg's tolerance, may step just outside; more than 0.01 is an InputError
        about the weights, or with cg the tol).

    Raises
    ------
    InputError
        If the weights, seeds, offsets, mask or options are invalid, no voxel is seeded, a seed
        lies outside the mask, or the system is singular or too ill-conditioned in float64.

    Warns
    -----
    RuntimeWarning
        If conjugate gradients did not reach ``tol`` for some labels.
    """
    return_probabilities = as_flag(return_probabilities, name="return_probabilities")
    weights, offsets = _as_weights(weights, offsets)
    top = float(weights.max(initial=0.0))
    if top > 0 and not 2.0**-64 <= top <= 2.0**64:
        # the walk does not see a global scale: bring the largest weight to [0.5, 1) by a power
        # of two (exact), so that the sums of the solve neither overflow nor lose subnormal bits
        weights = np.ldexp(weights, -int(np.frexp(top)[1]))
    system = RandomWalkerSystem(weights, seeds, offsets, mask=mask, solver=solver, tol=tol)
    n_labels = system.labels.size
    n = system.label_index.size
    best = np.full(n, -1, np.int64)
    seeded = system.label_index >= 0
    best[seeded] = system.label_index[seeded]
    probabilities = np.zeros((n_labels, n), np.float32) if return_probabilities else None
    if return_probabilities:
        probabilities[system.label_index[seeded], np.flatnonzero(seeded)] = 1
    if n_labels == 1:
        best[system.unknown] = 0
        if return_probabilities:
            probabilities[0, system.unknown] = 1
    elif system.unknown.size:
        top = np.full(system.unknown.size, -np.inf)
        arg = np.zeros(system.unknown.size, np.int64)
        block = system.block_width()
        for start in range(0, n_labels, block):
            cols = np.arange(start, min(start + block, n_labels))
            x = system.unknown_probabilities(cols)
            if x.size and (x.min() < -0.01 or x.max() > 1.01):  # probabilities: far off means no precision left
                if system.solver == "cg" and tol > 1e-4:
                    raise InputError(f"cg at tol={tol} gave probabilities in [{x.min():.3g}, {x.max():.3g}]: "
                                     "use a smaller tol or solver='direct'")
                raise system._singular("too ill-conditioned")
            for j, k in enumerate(cols):
                better = x[:, j] > top
                top[better], arg[better] = x[better, j], k
                if return_probabilities:  # rounding (or cg's tolerance) may step just outside [0, 1]
                    probabilities[k, system.unknown] = np.clip(x[:, j], 0.0, 1.0)
        best[system.unknown] = arg
        if system.not_converged:
            warnings.warn(f"conjugate gradients did not reach tol={tol} for {system.not_converged} of "
                          f"{n_labels} labels", RuntimeWarning, stacklevel=2)
    segmentation = np.where(best >= 0, system.labels[np.maximum(best, 0)], np.uint64(0)).astype(np.uint64)
    segmentation = segmentation.reshape(system.shape)
    if return_probabilities:
        return segmentation, probabilities.reshape((n_labels,) + system.shape)
    return segmentation
