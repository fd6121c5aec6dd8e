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

import threading
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from ..._checks import as_array, as_flag, as_labels, as_mask, as_number, as_offsets, as_spacing, describe
from ...errors import InputError
from ..core.edges import edge_slices
from ._kernels import (
    bandwidth,
    cg_direction,
    cg_step,
    column_dots,
    edge_weight_range,
    fold_label,
    gauss_seidel,
    improve_candidate,
    keep_columns,
    lanczos_radius,
    laplacian_csr,
    prolong_add,
    reached_voxels,
    residual_restrict,
    scale_rows,
    seed_coupling,
    smoothed_prolongator,
    sparse_product,
    spmm_dots,
    transpose_csr,
)

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
# memory for the work arrays of block CG (5 blocks of unknowns x columns: CG's four, and about one
# for the coarse levels' arrays), and the fewest columns per block: 4, as many as one pass of the
# sparse products keeps in registers (a 3-column block costs about 1.4x as much per column)
_CG_BLOCK_BYTES = 1 << 26
_CG_MIN_BLOCK = 4
# the multigrid hierarchy: unknowns below which aggregation stops, the largest coarsest level
# solved by a dense Cholesky factorisation (a larger one, or one without off-diagonal entries, is
# solved by its inverse diagonal), most levels, Gauss-Seidel sweeps that smooth the
# near-null-space candidate, Lanczos steps for the Jacobi weight
_MAX_COARSE = 500
_MAX_DENSE = 2000
_MAX_LEVELS = 10
_CANDIDATE_SWEEPS = 4
_LANCZOS_STEPS = 10
# the restriction P^T r sums the fine rows in this many parts (in parallel), fixed so that the
# results do not depend on the number of threads
_RESTRICT_PARTS = 4
# Gauss-Seidel sweeps before and after the coarse correction, on the finest level and on the
# coarser ones (their sweeps are cheap, and they set how fast the cycle converges as much as
# the finest level's), and the most parts a sweep runs in parallel
_FINE_SWEEPS = 1
_COARSE_SWEEPS = 2
_SWEEP_PARTS = 16


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
        gradients preconditioned by smoothed-aggregation algebraic multigrid, built once;
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
        flat_weights = weights.reshape(len(offsets), n)
        shape3 = np.array((1,) * (3 - len(shape)) + tuple(shape), np.int64)
        offsets3 = np.zeros((len(offsets), 3), np.int64)
        offsets3[:, 3 - len(shape):] = offsets
        self.weight_range = tuple(float(w) for w in edge_weight_range(flat_weights, offsets3, shape3))
        active = np.ones(n, bool) if mask is None else np.ascontiguousarray(mask.reshape(-1))
        self.unreached = ~reached_voxels(flat_weights, offsets3, shape3, active, seeded.astype(np.int64))
        self.unknown = np.flatnonzero(~self.unreached & (self.label_index < 0))
        self.laplacian, self.coupling = self._assemble(flat_weights, offsets3, shape3, active)
        n_unknown = self.unknown.size
        if solver == "auto":
            solver = "direct" if n_unknown <= DIRECT_MAX_UNKNOWNS[len(shape)] else "cg"
        self.solver = solver
        self._factor = None
        self._preconditioner = None
        self._setup_lock = threading.Lock()
        self.not_converged = 0
        self._count_lock = threading.Lock()

    def _assemble(self, flat_weights, offsets3, shape3, active):
        n = self.label_index.size
        size, k = self.unknown.size, self.labels.size
        local = np.full(n, -1, np.int64)
        local[self.unknown] = np.arange(size)
        # the neighbours of a voxel in the order of their flat index: by the step of each direction
        strides = np.array([shape3[1] * shape3[2], shape3[2], 1], np.int64)
        steps = offsets3 @ strides
        channels = np.arange(len(offsets3))
        order = np.argsort(np.concatenate([steps, -steps]), kind="stable")
        directions = np.concatenate([channels, -1 - channels])[order]
        index_dtype = np.int32 if size * (directions.size + 1) < np.iinfo(np.int32).max else np.int64
        indptr, indices, data = laplacian_csr(flat_weights, offsets3, shape3, active, self.unknown, local,
                                              directions, np.empty(0, index_dtype))
        laplacian = sparse.csr_array((data, indices, indptr), shape=(size, size))
        laplacian.has_sorted_indices = True
        # edges from an unknown voxel to a seed feed the right-hand side of the seed's label
        rows, cols, vals = seed_coupling(flat_weights, offsets3, shape3, active, local, self.label_index,
                                         np.flatnonzero(self.label_index >= 0))
        coupling = sparse.csr_array((vals, (rows, cols)), shape=(size, k))
        return laplacian, coupling

    # ------------------------------------------------------------------ solving

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_U^{-1} rhs`` for ``rhs`` of shape ``(U,)`` or ``(U, m)`` (float64)."""
        return self._solve(np.asarray(rhs, dtype=np.float64))

    def _solve(self, rhs: np.ndarray, overwrite: bool = False) -> np.ndarray:
        """:meth:`solve` of float64 ``rhs``; ``overwrite``: ``rhs`` may be used as work space."""
        if rhs.shape[0] != self.unknown.size:
            raise InputError(f"rhs has {rhs.shape[0]} rows, the system {self.unknown.size} unknowns")
        if self.unknown.size == 0:
            return np.zeros(rhs.shape)
        columns = rhs.reshape(rhs.shape[0], -1)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if self.solver == "direct":
                    out = np.empty_like(columns)
                    for start in range(0, columns.shape[1], _DIRECT_BLOCK):
                        block = slice(start, start + _DIRECT_BLOCK)
                        out[:, block] = self._lu().solve(np.asfortranarray(columns[:, block]))
                else:
                    out = self._cg(columns, overwrite)
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

    def block_width(self, columns: int | None = None) -> int:
        """How many right-hand sides are solved together.

        The solver's budget (:data:`_DIRECT_BLOCK` columns for direct; for cg as many as fit
        five float64 work arrays of ``U`` rows in :data:`_CG_BLOCK_BYTES`, rounded down to a
        multiple of 4, at least :data:`_CG_MIN_BLOCK`). Given the number of ``columns`` to
        solve, the width that splits them into the same number of blocks as the budget does,
        as evenly as possible, rounded up to a multiple of 4 within the budget (and at most
        ``columns``): the sparse products keep 4 columns in registers, and a pass of 4 columns
        and one of 2 cost more per column than passes of 4 alone (the last block may then be
        narrower).
        """
        if self.solver == "direct":
            width = _DIRECT_BLOCK
        else:
            budget = _CG_BLOCK_BYTES // (5 * 8 * max(1, self.unknown.size))
            width = max(_CG_MIN_BLOCK, budget - budget % 4)
        if columns:
            even = -(-columns // -(-columns // width))
            width = min(width, even + -even % 4, columns)
        return width

    def _lu(self):
        with self._setup_lock:
            if self._factor is None:
                from scipy.sparse.linalg import splu

                self._factor = splu(sparse.csc_matrix(self.laplacian), permc_spec="MMD_AT_PLUS_A")
        return self._factor

    def _cg(self, columns: np.ndarray, overwrite: bool = False) -> np.ndarray:
        multigrid = self._amg()
        width = self.block_width(columns.shape[1])
        # the V-cycle's work arrays belong to this call (concurrent solves do not share them) and
        # are freed with it (a system may be kept long, as the Learned Random Walker keeps it)
        workspace = multigrid.workspace(min(width, columns.shape[1]))

        def precondition(r, out):
            return multigrid(r, out, workspace)

        # level 0 of the hierarchy is L_U itself, already in the kernels' layout
        if columns.shape[1] <= width:
            work = columns if columns.flags.c_contiguous and overwrite else np.array(columns, order="C")
            out, failed = _block_pcg(multigrid.matrices[0], work, precondition, self.tol)
            self._count_not_converged(failed)
            return out
        out = np.zeros(columns.shape)
        for start in range(0, columns.shape[1], width):
            block = slice(start, start + width)
            work = np.array(columns[:, block], order="C")
            out[:, block], failed = _block_pcg(multigrid.matrices[0], work, precondition, self.tol)
            self._count_not_converged(failed)
        return out

    def _count_not_converged(self, failed: int) -> None:
        with self._count_lock:  # threads may solve with one system at the same time
            self.not_converged += failed

    def _amg(self) -> _BlockMultigrid:
        with self._setup_lock:  # built once, also when threads solve at the same time
            if self._preconditioner is None:
                self._preconditioner = _BlockMultigrid(self.laplacian)
        return self._preconditioner

    def unknown_probabilities(self, labels=None, *, on_column=None) -> np.ndarray | None:
        """``(U, K)`` probabilities of the unknown voxels (the columns of ``labels`` indices), float64.

        With ``on_column``, each column is handed over instead, as ``on_column(j, values)`` (``j``
        its place in ``labels``, ``values`` a ``(U,)`` view valid during the call), in the order
        the columns are solved, and nothing is returned: one cg block then needs no array for
        its whole solution. ``on_column`` runs under the caller's floating-point error settings,
        and an exception it raises propagates unchanged."""
        cols = np.arange(self.labels.size) if labels is None else np.asarray(labels)
        rhs = np.zeros((self.unknown.size, cols.size))
        if cols.size:
            block = self.coupling[:, cols].tocoo()
            rhs[block.row, block.col] = block.data
        if on_column is None:
            return self._solve(rhs, overwrite=True)
        if self.solver != "cg" or self.unknown.size == 0 or cols.size > self.block_width(cols.size):
            x = self._solve(rhs, overwrite=True)
            for j in range(cols.size):
                on_column(j, x[:, j])
            return None

        # on_column runs under the caller's floating-point settings, and what it raises passes
        # through as it is (not as the solver's own failure)
        caller_errors, raised = np.geterr(), []

        def checked(j, values):
            if not np.all(np.isfinite(values)):
                raise self._singular()
            try:
                with np.errstate(**caller_errors):
                    on_column(j, values)
            except BaseException as err:
                raised.append(err)
                raise

        try:  # (the hierarchy's setup may find the system singular too)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                multigrid = self._amg()
                workspace = multigrid.workspace(cols.size)
                _, failed = _block_pcg(multigrid.matrices[0], rhs, lambda r, out: multigrid(r, out, workspace),
                                       self.tol, on_done=checked)
        except (RuntimeError, np.linalg.LinAlgError) as err:
            if raised and err is raised[0]:
                raise
            raise self._singular() from err
        self._count_not_converged(failed)
        return None

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


_INT32_MAX = np.iinfo(np.int32).max


def _index_arrays(indptr: np.ndarray, indices: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """``indptr`` and ``indices`` of a CSR matrix in int32 where the number of entries and both
    dimensions fit, else in int64 (the kernels count in int64, so nothing overflows before)."""
    index = np.int32 if max(int(indptr[-1]), *shape) < _INT32_MAX else np.int64
    return indptr.astype(index, copy=False), indices.astype(index, copy=False)


class _Csr:
    """The float64 arrays of a CSR matrix (no duplicate entries, int32 indices where they fit), for
    the block kernels. ``L_U``'s column indices are sorted, those of the prolongators and coarse
    levels come in the order their kernels make them: the kernels need no order, only a fixed
    one."""

    def __init__(self, matrix):
        matrix = sparse.csr_array(matrix)
        if not matrix.has_sorted_indices:
            matrix.sort_indices()
        self.shape = matrix.shape
        self.arrays = _index_arrays(matrix.indptr, matrix.indices, matrix.shape) + (
            matrix.data.astype(np.float64, copy=False),)

    @classmethod
    def of(cls, arrays, shape) -> _Csr:
        """From CSR arrays (no duplicate entries, any integer dtypes, float64 values)."""
        self = cls.__new__(cls)
        self.shape = tuple(shape)
        self.arrays = _index_arrays(arrays[0], arrays[1], self.shape) + (arrays[2],)
        return self

    def is_diagonal(self) -> bool:
        """Whether the matrix has no off-diagonal entries."""
        indptr, indices, _ = self.arrays
        rows = np.repeat(np.arange(self.shape[0]), np.diff(indptr))
        return bool(np.all(indices == rows))

    def diagonal(self) -> np.ndarray:
        indptr, indices, data = self.arrays
        return sparse.csr_array((data, indices, indptr), shape=self.shape).diagonal()


class _BlockMultigrid:
    """A V-cycle of smoothed-aggregation algebraic multigrid applied to a block of right-hand sides
    at once: every sparse product reads its matrix once for all columns.

    The hierarchy is pyamg's default smoothed aggregation (Vanek, Mandel, Brezina 1996), built by
    numba kernels in float64: aggregates of the matrix graph (pyamg's standard aggregation, all
    connections strong), the constant candidate smoothed by 4 symmetric Gauss-Seidel sweeps, the
    tentative prolongator smoothed by one Jacobi step of weight 4/3 over the spectral radius of
    ``D^-1 A`` (Lanczos estimate), Galerkin coarse operators, down to :data:`_MAX_COARSE`
    unknowns, or to a level without off-diagonal entries (nothing left to aggregate: e.g. every
    unknown's neighbours are seeds). Indices are int32 where they fit. The cycle smooths by
    Gauss-Seidel (:data:`_FINE_SWEEPS` sweeps on the finest level, :data:`_COARSE_SWEEPS` on the
    others), forward from 0 before the coarse correction and backward after it, the exact
    adjoint, so that the cycle is symmetric, as CG needs; each level's rows are swept in up to
    :data:`_SWEEP_PARTS` parts no shorter than the level's bandwidth, the even parts in parallel,
    then the odd ones (:func:`gauss_seidel`), in the same order on any number of threads. The
    coarsest level is solved by a dense Cholesky factorisation up to :data:`_MAX_DENSE`
    unknowns; a diagonal one (exactly) or a larger one (one Jacobi step, still symmetric
    positive definite) by its inverse diagonal. Level 0 is ``L_U`` itself (its arrays, shared).

    The object is read-only after its setup: the work arrays of a cycle come from
    :meth:`workspace`, one per solve, so that threads may solve with it at the same time.

    Raises
    ------
    numpy.linalg.LinAlgError
        If a level's diagonal has no finite inverse in float64 (weights near float64's smallest
        numbers), or the coarsest level is not positive definite in float64.
    """

    def __init__(self, laplacian):
        from pyamg.amg_core import standard_aggregation
        from scipy.linalg import cho_factor

        level = _Csr(laplacian)
        self.matrices, self.prolong, self.inverse_diagonal, self.parts = [level], [], [], []
        candidate = np.ones(level.shape[0])
        while level.shape[0] > _MAX_COARSE and len(self.matrices) < _MAX_LEVELS:
            indptr, indices, data = level.arrays
            n = level.shape[0]
            aggregate, roots = np.empty(n, indices.dtype), np.empty(n, indices.dtype)
            n_aggregates = standard_aggregation(n, indptr, indices, aggregate, roots)
            if not 0 < n_aggregates < n:  # 0: no off-diagonal entries left
                break
            del roots
            improve_candidate(indptr, indices, data, candidate, _CANDIDATE_SWEEPS)
            rho = lanczos_radius(indptr, indices, data, _LANCZOS_STEPS)
            p_arrays = smoothed_prolongator(indptr, indices, data, aggregate, n_aggregates, candidate,
                                            (4.0 / 3.0) / rho)
            candidate = p_arrays[3]
            prolong = _Csr.of(p_arrays[:3], (n, n_aggregates))
            # the Galerkin operator P^T (A P): the product with A first reads A and P in row order;
            # P^T is kept only for it (the cycle restricts with P itself: less memory)
            transposed = _Csr.of(transpose_csr(*prolong.arrays, n_aggregates), (n_aggregates, n))
            product = _Csr.of(sparse_product(*level.arrays, *prolong.arrays, n_aggregates), (n, n_aggregates))
            c_indptr, c_indices, c_data = sparse_product(*transposed.arrays, *product.arrays, n_aggregates)
            del product, transposed
            # exact-size copies: the product's arrays are views of allocations sized for the most
            # entries it could have had (virtual memory, but kept for the life of the hierarchy)
            coarse = (c_indptr, c_indices.copy(), c_data.copy())
            self.inverse_diagonal.append(self._inverse(level.diagonal()))
            self.parts.append(_sweep_parts(level))
            self.prolong.append(prolong)
            level = _Csr.of(coarse, (n_aggregates, n_aggregates))
            self.matrices.append(level)
        if level.shape[0] <= _MAX_DENSE and not level.is_diagonal():
            self.coarse, self.coarse_inverse_diagonal = cho_factor(sparse.csr_array(level.arrays[::-1], shape=level.shape).toarray()), None
        else:
            self.coarse, self.coarse_inverse_diagonal = None, self._inverse(level.diagonal())

    @staticmethod
    def _inverse(diagonal: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", over="ignore"):
            inverse = 1.0 / diagonal
        if not np.all(np.isfinite(inverse) & (inverse > 0)):
            raise np.linalg.LinAlgError("a diagonal entry of the multigrid hierarchy has no positive float64 inverse")
        return inverse

    def workspace(self, columns: int) -> list[np.ndarray]:
        """Work arrays for cycles of up to ``columns`` right-hand sides, three per level but the
        coarsest: the coarser level's right-hand side and correction (flat float64), and the
        restriction's partial sums (:func:`residual_restrict`)."""
        work = []
        for level in range(len(self.matrices) - 1):
            coarse_rows = self.matrices[level + 1].shape[0]
            work += [np.empty(coarse_rows * columns), np.empty(coarse_rows * columns),
                     np.empty((_RESTRICT_PARTS - 1) * coarse_rows * columns)]
        return work

    def __call__(self, b: np.ndarray, out: np.ndarray, workspace: list[np.ndarray]) -> np.ndarray:
        """One V-cycle from 0 for the columns of ``b`` (C-ordered float64) into ``out`` (C-ordered,
        not ``b``), with the work arrays of :meth:`workspace` (of at least as many columns)."""
        self._cycle(0, b, out, workspace)
        return out

    def sweeps(self, level: int) -> int:
        """Gauss-Seidel sweeps before and after the coarse correction on ``level``."""
        return _FINE_SWEEPS if level == 0 else _COARSE_SWEEPS

    def _cycle(self, level: int, b: np.ndarray, out: np.ndarray, workspace: list[np.ndarray]) -> None:
        from scipy.linalg import cho_solve

        if level == len(self.matrices) - 1:
            if self.coarse is None:
                scale_rows(self.coarse_inverse_diagonal, b, out)
            else:  # not finite (overflow): CG's answer is checked for that
                out[:] = cho_solve(self.coarse, b, check_finite=False)
            return
        columns = b.shape[1]
        a, inverse, parts = self.matrices[level], self.inverse_diagonal[level], self.parts[level]
        prolong = self.prolong[level].arrays
        coarse_rows = self.matrices[level + 1].shape[0]
        coarse_b, coarse_x = (flat[:coarse_rows * columns].reshape(coarse_rows, columns)
                              for flat in workspace[3 * level:3 * level + 2])
        capacity = workspace[3 * level].size // coarse_rows  # the columns the workspace was made for
        extra_parts = workspace[3 * level + 2].size // (coarse_rows * capacity)
        partial = workspace[3 * level + 2][:extra_parts * coarse_rows * columns].reshape(extra_parts, coarse_rows,
                                                                                          columns)
        out[:] = 0.0
        for _ in range(self.sweeps(level)):
            gauss_seidel(*a.arrays, inverse, out, b, parts, False)
        residual_restrict(*a.arrays, out, b, *prolong, coarse_b, partial)
        self._cycle(level + 1, coarse_b, coarse_x, workspace)
        prolong_add(*prolong, coarse_x, out)
        for _ in range(self.sweeps(level)):
            gauss_seidel(*a.arrays, inverse, out, b, parts, True)


def _sweep_parts(matrix: _Csr) -> np.ndarray:
    """The bounds of the parts a Gauss-Seidel sweep of ``matrix`` runs in (:func:`gauss_seidel`):
    up to :data:`_SWEEP_PARTS` equal ranges of rows, each at least as long as the matrix's
    bandwidth (the largest distance of an entry from the diagonal), so that a part's rows couple
    only its neighbour parts' rows; one part where the bandwidth allows no more."""
    n = matrix.shape[0]
    count = max(1, min(_SWEEP_PARTS, n // max(1, bandwidth(*matrix.arrays[:2]))))
    return np.arange(count + 1, dtype=np.int64) * n // count


def _block_pcg(a: _Csr, b: np.ndarray, precondition, tol: float, maxiter: int = 1000, *,
               on_done=None) -> tuple[np.ndarray | None, int]:
    """Preconditioned conjugate gradients for the columns of ``b`` (C-ordered float64, overwritten)
    side by side, each column with its own step sizes; converged columns leave the block.
    ``precondition(r, out)`` writes the preconditioned ``r`` into ``out``. Returns the solution and the
    number of columns that missed ``|r| <= tol |b|``; with ``on_done``, each column's solution is
    handed to ``on_done(column, values)`` when it leaves the block (a view, valid during the call)
    and the solution returned is None."""
    n, m = b.shape
    target = tol * np.sqrt(np.einsum("ij,ij->j", b, b, dtype=np.float64))
    live = np.flatnonzero(target > 0)
    if live.size < m and on_done is not None:  # a zero right-hand side: the solution is 0
        zeros = np.zeros(n)
        for column in np.flatnonzero(~(target > 0)):
            on_done(int(column), zeros)
    if live.size == 0:
        return (None if on_done is not None else np.zeros_like(b)), 0
    x = None  # the solution, made when the first columns converge before the others
    k = live.size
    # the work arrays, flat so that dropping columns compacts them in place: r starts as b
    flat_r = b.reshape(-1)
    if k < m:
        keep_columns(flat_r, n, m, live)
    flat_x, flat_p, flat_w = (np.zeros(n * k, b.dtype), np.empty(n * k, b.dtype), np.empty(n * k, b.dtype))

    def views(k):
        return tuple(flat[:n * k].reshape(n, k) for flat in (flat_r, flat_x, flat_p, flat_w))

    r, xs, p, w = views(k)
    precondition(r, w)
    p[:] = w
    rz = np.empty(k)
    column_dots(r, w, rz)
    for _ in range(maxiter):
        pap = np.empty(k)
        spmm_dots(*a.arrays, p, w, pap)  # w = A p, and p . w
        alpha = rz / pap
        squared = np.empty(k)
        cg_step(xs, r, p, w, alpha, squared)
        # a column is done at its tolerance, or when its residual vanished (exact preconditioner)
        done = (np.sqrt(squared) <= target[live]) | ~(rz > 0)
        if done.all() and x is None and k == m and on_done is None:  # all at once: the work array is the solution
            return xs, 0
        if done.any():
            if on_done is not None:
                for d in np.flatnonzero(done):
                    on_done(int(live[d]), xs[:, d])
            else:
                if x is None:
                    x = np.zeros_like(b)
                x[:, live[done]] = xs[:, done]
            keep = np.flatnonzero(~done)
            if keep.size == 0:
                return x, 0  # (None with on_done)
            for flat in (flat_r, flat_x, flat_p):
                keep_columns(flat, n, k, keep)
            live, rz, k = live[keep], rz[keep], keep.size
            r, xs, p, w = views(k)
        precondition(r, w)  # w = M r
        rz_new = np.empty(k)
        column_dots(r, w, rz_new)
        cg_direction(w, p, rz_new / rz)
        rz = rz_new
    if on_done is not None:
        for d in range(k):
            on_done(int(live[d]), xs[:, d])
        return None, int(live.size)
    if x is None:
        x = np.zeros_like(b)
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
        block = system.block_width(n_labels)
        no_row = np.empty(0, np.float32)

        def take(k, x):
            """Fold the probabilities ``x`` of label ``k`` into the running best (ties: the smaller
            label, whatever order the labels come in) and, clipped to [0, 1] (rounding, or cg's
            tolerance, may step just outside), into the probabilities returned."""
            low, high = fold_label(x, k, top, arg, probabilities[k] if return_probabilities else no_row,
                                   system.unknown)
            if low < -0.01 or high > 1.01:  # probabilities: far off means no precision left
                if system.solver == "cg" and tol > 1e-4:
                    raise InputError(f"cg at tol={tol} gave probabilities in [{low:.3g}, {high:.3g}]: "
                                     "use a smaller tol or solver='direct'")
                raise system._singular("too ill-conditioned")

        for start in range(0, n_labels, block):
            cols = np.arange(start, min(start + block, n_labels))
            system.unknown_probabilities(cols, on_column=lambda j, x, cols=cols: take(int(cols[j]), x))
        best[system.unknown] = arg
        if system.not_converged:
            warnings.warn(f"conjugate gradients did not reach tol={tol} for {system.not_converged} of "
                          f"{n_labels} labels", RuntimeWarning, stacklevel=2)
    segmentation = np.where(best >= 0, system.labels[np.maximum(best, 0)], np.uint64(0)).astype(np.uint64)
    segmentation = segmentation.reshape(system.shape)
    if return_probabilities:
        return segmentation, probabilities.reshape((n_labels,) + system.shape)
    return segmentation
