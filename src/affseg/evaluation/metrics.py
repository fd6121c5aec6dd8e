"""VOI, (adapted) Rand and CREMI scores in linear memory, in numba."""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from .._checks import as_labels
from ..errors import InputError
from ..graph.core.relabel import compact_fragments

__all__ = ["adapted_rand_error", "evaluate", "variation_of_information"]

NO_LABELLED_VOXEL = "the ground truth has no labelled voxel (all 0)"


@njit(cache=True, nogil=True)
def _pair_sums(g, s, n_g, n_s):
    """Sums over the contingency table of (g, s) for g > 0, without storing the table.

    Returns n, sum p^2, sum p log2 p, sum a^2, sum a log2 a, sum b^2, sum b log2 b, where p are
    the pair counts, a the counts per g and b the counts per s (over voxels with g > 0).
    """
    counts_g = np.zeros(n_g + 2, dtype=np.int64)
    for i in range(g.shape[0]):
        if g[i] != 0:
            counts_g[g[i] + 1] += 1
    starts = np.cumsum(counts_g)
    fill = starts.copy()
    bucket = np.empty(starts[-1], dtype=np.uint32)
    counts_s = np.zeros(n_s + 1, dtype=np.int64)
    for i in range(g.shape[0]):
        if g[i] != 0:
            bucket[fill[g[i]]] = s[i]
            fill[g[i]] += 1
            counts_s[s[i]] += 1
    scratch = np.zeros(n_s + 1, dtype=np.int64)
    sum_p2 = 0.0
    sum_plogp = 0.0
    for k in range(1, n_g + 1):
        lo, hi = starts[k], starts[k + 1]
        for j in range(lo, hi):
            scratch[bucket[j]] += 1
        for j in range(lo, hi):
            c = scratch[bucket[j]]
            if c > 0:
                sum_p2 += float(c) * c
                sum_plogp += c * math.log2(c)
                scratch[bucket[j]] = 0
    sum_a2 = 0.0
    sum_aloga = 0.0
    for k in range(1, n_g + 1):
        c = starts[k + 1] - starts[k]
        if c > 0:
            sum_a2 += float(c) * c
            sum_aloga += c * math.log2(c)
    sum_b2 = 0.0
    sum_blogb = 0.0
    for k in range(n_s + 1):
        c = counts_s[k]
        if c > 0:
            sum_b2 += float(c) * c
            sum_blogb += c * math.log2(c)
    return starts[-1], sum_p2, sum_plogp, sum_a2, sum_aloga, sum_b2, sum_blogb


def _check_ndim(segmentation, ground_truth) -> None:
    """Volumes of 2 or 3 axes, or 1D voxel sets: the shapes every metric accepts."""
    for name, volume in (("segmentation", segmentation), ("ground_truth", ground_truth)):
        what = f"{name} must be a 2D (y, x) or 3D (z, y, x) volume, or a 1D set of voxels (e.g. seg[mask]), got"
        try:
            shape = np.shape(volume)
        except ValueError:  # ragged nesting
            raise InputError(f"{what} a ragged sequence") from None
        if len(shape) not in (1, 2, 3):
            raise InputError(f"{what} shape {shape}")


def compact_pair(segmentation, ground_truth):
    """Check a segmentation and ground truth and give both as flat node indices.

    Returns ``(g, gids, s, sids, shape)``: ``g`` (uint32, flat) indexes ``gids`` (``gids[0] == 0``,
    unlabelled), ``s`` indexes ``sids`` (1.. with segment 0, if present, as the last index), and
    the volumes' shape. The contingency table of the metrics is over ``(g, s)`` where ``g > 0``.
    """
    _check_ndim(segmentation, ground_truth)
    seg = as_labels(segmentation, name="segmentation", any_ndim=True)
    gt = as_labels(ground_truth, name="ground_truth", shape=seg.shape, any_ndim=True)
    g, gids = compact_fragments(gt.reshape(-1))
    s, sids = _compact_with_zero(seg.reshape(-1))
    return g, gids, s, sids, seg.shape


def _sums(segmentation, ground_truth):
    """Contingency sums of :func:`_pair_sums` over the labelled voxels; none is an error."""
    g, gids, s, sids, _ = compact_pair(segmentation, ground_truth)
    sums = _pair_sums(g, s, len(gids) - 1, len(sids) - 1)
    if sums[0] == 0:
        raise InputError(NO_LABELLED_VOXEL)
    return sums


def _compact_with_zero(flat):
    """Compact ids where 0 is a segment like any other: it becomes the last index."""
    index, ids = compact_fragments(flat)
    n = len(ids) - 1
    if flat.size and np.any(index == 0):
        index[index == 0] = n + 1
        ids = np.concatenate([ids, [np.uint64(0)]])
    return index, ids


def _entropies(n, plogp, aloga, blogb):
    log_n = math.log2(n)
    h_st = log_n - plogp / n
    h_t = log_n - aloga / n
    h_s = log_n - blogb / n
    return h_st, h_t, h_s


def variation_of_information(segmentation: ArrayLike, ground_truth: ArrayLike) -> tuple[float, float]:
    """``(voi_split, voi_merge) = (H(seg | gt), H(gt | seg))`` in bits, gt 0 ignored.

    Parameters
    ----------
    segmentation : int array, 2D or 3D volume or 1D set of voxels
        Segment ids (non-negative, up to 2**64 - 1); 0 counts as one segment like any other.
    ground_truth : int array, shape of ``segmentation``
        Object ids (non-negative); voxels labelled 0 are ignored.

    Returns
    -------
    voi_split : float
        ``H(seg | gt)`` in bits (over-segmentation).
    voi_merge : float
        ``H(gt | seg)`` in bits (under-segmentation).

    Raises
    ------
    InputError
        If the labels are negative or not integers, not 1D, 2D or 3D, the shapes differ, or the
        ground truth has no labelled voxel.
    """
    n, _, plogp, _, aloga, _, blogb = _sums(segmentation, ground_truth)
    h_st, h_t, h_s = _entropies(n, plogp, aloga, blogb)
    return max(h_st - h_t, 0.0), max(h_st - h_s, 0.0)


def adapted_rand_error(segmentation: ArrayLike, ground_truth: ArrayLike, *,
                       count_self_pairs: bool = True) -> tuple[float, float, float]:
    """Adapted Rand error ``1 - F`` and its ``(error, rand_split, rand_merge)``, gt 0 ignored.

    ``rand_split = sum p^2 / sum gt^2`` (recall of same-object pairs) and
    ``rand_merge = sum p^2 / sum seg^2`` (precision). With ``count_self_pairs`` (CREMI and waterz)
    a voxel paired with itself counts; without it the sums drop ``n`` and equal
    ``skimage.metrics.adapted_rand_error(gt, seg, ignore_labels=(0,))``.

    Parameters
    ----------
    segmentation : int array, 2D or 3D volume or 1D set of voxels
        Segment ids (non-negative, up to 2**64 - 1); 0 counts as one segment like any other.
    ground_truth : int array, shape of ``segmentation``
        Object ids (non-negative); voxels labelled 0 are ignored.
    count_self_pairs : bool
        Count each voxel paired with itself (CREMI, waterz); False matches scikit-image.

    Returns
    -------
    error : float
        ``1 - F``, F the harmonic mean of ``rand_split`` and ``rand_merge``.
    rand_split : float
        ``sum p^2 / sum gt^2`` (1 = no split).
    rand_merge : float
        ``sum p^2 / sum seg^2`` (1 = no merge).

    Raises
    ------
    InputError
        If the labels are negative or not integers, not 1D, 2D or 3D, the shapes differ, or the
        ground truth has no labelled voxel.
    """
    n, p2, _, a2, _, b2, _ = _sums(segmentation, ground_truth)
    return _arand(n, p2, a2, b2, count_self_pairs)


def _arand(n, p2, a2, b2, count_self_pairs):
    if not count_self_pairs:
        p2, a2, b2 = p2 - n, a2 - n, b2 - n
    split = p2 / a2 if a2 > 0 else 1.0
    merge = p2 / b2 if b2 > 0 else 1.0
    f = 2.0 * split * merge / (split + merge) if split + merge > 0 else 0.0
    return 1.0 - f, split, merge


def evaluate(segmentation: ArrayLike, ground_truth: ArrayLike) -> dict[str, float]:
    """Score a segmentation against ground truth; ground-truth label 0 is ignored.

    Parameters
    ----------
    segmentation, ground_truth : int arrays of the same shape
        2D or 3D volumes, or 1D sets of voxels (e.g. ``seg[mask], gt[mask]``); any ids up to
        2**64 - 1. Segmentation label 0 counts as one segment like any other
        (see ``docs/conventions.md`` for how that differs from CREMI's code). Other numbers
        of dimensions, shapes that differ, negative or non-integer labels and a ground truth
        without any labelled voxel raise an InputError.

    Returns
    -------
    scores : dict of str to float
        ``voi_split`` = H(seg | gt) and ``voi_merge`` = H(gt | seg) in bits (as
        ``skimage.metrics.variation_of_information`` and ``waterz.evaluate``), ``voi`` their sum;
        ``rand_split`` and ``rand_merge`` as waterz (self pairs counted); ``arand`` = 1 - F-score
        of those two (CREMI); ``cremi_score`` = sqrt(voi * arand); ``n_voxels`` (int) scored.
    """
    return scores_from_sums(*_sums(segmentation, ground_truth))


def scores_from_sums(n, p2, plogp, a2, aloga, b2, blogb) -> dict[str, float]:
    """The scores of :func:`evaluate` from the contingency sums of :func:`_pair_sums`."""
    h_st, h_t, h_s = _entropies(n, plogp, aloga, blogb)
    voi_split, voi_merge = max(h_st - h_t, 0.0), max(h_st - h_s, 0.0)
    arand, rand_split, rand_merge = _arand(n, p2, a2, b2, True)
    return {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "voi": voi_split + voi_merge,
        "arand": arand,
        "rand_split": rand_split,
        "rand_merge": rand_merge,
        "cremi_score": math.sqrt((voi_split + voi_merge) * arand),
        "n_voxels": int(n),
    }
