"""relabel: the dense-table and the sorted-search paths, and the checks of the id lists;
compact_fragments: its dense-table and hash paths against np.unique."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affseg.errors import InputError
from affseg.graph.core.relabel import relabel

SMALL = np.array([[0, 5, 7], [7, 9, 5]], np.uint64)
LARGE = SMALL + np.uint64(2**40)  # past the dense table: the sorted search


@pytest.mark.parametrize("labels", [SMALL, LARGE])
def test_relabel_maps_listed_ids_and_keeps_the_others(labels):
    base = int(labels[0, 0])
    out = relabel(labels, [base + 5, base + 7], [1, 2])
    np.testing.assert_array_equal(out, [[base, 1, 2], [2, base + 9, 1]])
    np.testing.assert_array_equal(relabel(labels, [], []), labels)


@pytest.mark.parametrize("labels", [SMALL, LARGE])
def test_duplicate_old_ids_are_refused(labels):
    # regression: a repeated id mapped to whichever of its new ids came last (dense table) or
    # first (sorted search); now an InputError that names it
    dup = int(labels[0, 1])
    with pytest.raises(InputError, match=f"old_ids lists the id {dup} more than once"):
        relabel(labels, [dup, int(labels[0, 2]), dup], [1, 2, 3])
    with pytest.raises(InputError, match="more than once"):
        relabel(labels, [dup, dup], [4, 4])


def test_negative_ids_are_refused():
    # regression: a negative Python int raised OverflowError, a negative numpy id wrapped around
    with pytest.raises(InputError, match="old_ids must not be negative, found -1"):
        relabel(SMALL, [-1], [2])
    with pytest.raises(InputError, match="old_ids must not be negative"):
        relabel(SMALL, np.array([5, -3]), [1, 2])
    with pytest.raises(InputError, match="new_ids must not be negative, found -5"):
        relabel(SMALL, [5], [-5])


def test_id_lists_must_be_1d_integers():
    with pytest.raises(InputError, match="1D array of ids"):
        relabel(SMALL, [[5, 7]], [[1, 2]])
    with pytest.raises(InputError, match="integer dtype"):
        relabel(SMALL, [5.5], [1])
    with pytest.raises(InputError, match="integer dtype"):
        relabel(SMALL, [2**64], [1])


def test_ids_above_the_listed_ones_keep_their_value():
    # the dense table spans the listed ids only: larger labels (here past any table) pass through
    labels = np.array([[0, 5, 2**40], [7, 2**63, 5]], np.uint64)
    out = relabel(labels, [5, 7], [1, 2])
    np.testing.assert_array_equal(out, np.array([[0, 1, 2**40], [2, 2**63, 1]], np.uint64))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 5, 2**20 + 3, 3 * 2**24 + 7, 2**40, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]),
                min_size=0, max_size=300),
       st.integers(0, 2**20))
def test_compact_fragments_equals_np_unique_for_small_and_large_ids(values, shift):
    """Both paths (a dense table for small ids, a hash of the distinct ids for large ones, as a
    block's fragments have) give np.unique's ids and indices."""
    from affseg.graph.core.relabel import compact_fragments

    labels = np.array(values, dtype=np.uint64)
    labels = np.where((labels > 0) & (labels < 2**63), labels + np.uint64(shift), labels)
    index, ids = compact_fragments(labels)
    expected = np.unique(np.concatenate([np.zeros(1, np.uint64), labels]))
    np.testing.assert_array_equal(ids, expected)
    assert index.dtype == np.uint32 and index.shape == labels.shape
    np.testing.assert_array_equal(ids[index], labels)
