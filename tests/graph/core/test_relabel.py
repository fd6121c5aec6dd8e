"""relabel: the dense-table and the sorted-search paths, and the checks of the id lists;
compact_fragments: its dense-table and hash paths against np.unique; relabel_by_tables (the
blockwise relabel: several tables, ids in any order through sorted_lookup) against relabel."""
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


ID_POOL = [0, 1, 5, 9, 2**20 + 3, 3 * 2**24 + 7, 2**40, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ID_POOL), min_size=0, max_size=200),
       st.lists(st.tuples(st.sampled_from(ID_POOL), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                min_size=0, max_size=8, unique_by=lambda t: t[0]),
       st.booleans())
def test_relabel_by_tables_equals_relabel_per_table(values, entries, two_dimensional):
    """Every table gives relabel's volume: listed ids (in any order, 0 included) mapped, unlisted
    ids (also the volume's ids missing from the tables, and tables naming ids the volume lacks)
    kept, for small and large ids."""
    from affseg.graph.core.relabel import relabel_by_tables, sorted_lookup

    labels = np.array(values + [0] * (len(values) % 2), dtype=np.uint64)
    labels = labels.reshape(2, -1) if two_dimensional and labels.size else labels.reshape(1, -1)
    old = np.array([e[0] for e in entries], np.uint64)
    tables = [np.array([e[1] for e in entries], np.uint64), np.array([e[2] for e in entries], np.uint64)]
    sorted_ids, sorted_tables = sorted_lookup(old, tables)
    assert sorted_tables.shape == (2, old.size) and np.all(np.diff(sorted_ids.astype(object)) > 0)
    outs = list(relabel_by_tables(labels, sorted_ids, sorted_tables))
    assert len(outs) == 2
    for out, table in zip(outs, tables):
        assert out.dtype == np.uint64 and out.shape == labels.shape
        np.testing.assert_array_equal(out, relabel(labels, old, table))
