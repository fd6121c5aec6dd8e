"""Edge ids: the float-reciprocal decode and the edge voxel ranges, against integer arithmetic."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from affseg.graph.core.edges import edge_bounds, edge_slices, split_edge_id


@given(st.integers(1, 2**31), st.data())
def test_split_edge_id_equals_integer_division(n, data):
    c = data.draw(st.integers(0, (2**52 - 1) // n))
    # the ends of a channel's range are where a rounded reciprocal is off by one
    u = data.draw(st.sampled_from([0, min(1, n - 1), n - 1, n // 2]) | st.integers(0, n - 1))
    edge = c * n + u
    if edge < 2**52:
        assert split_edge_id(edge, n, 1.0 / n) == (c, u)


def test_split_edge_id_corrects_a_quotient_rounded_down():
    # found by search: the rounded reciprocal puts this channel's first edge in the channel before
    n, c = 1921983831, 1865949
    assert int(np.float64(c * n) * (1.0 / n)) == c - 1
    assert split_edge_id(c * n, n, 1.0 / n) == (c, 0)


@given(st.tuples(*[st.integers(1, 7)] * 3), st.tuples(*[st.integers(-9, 9)] * 3))
def test_edge_bounds_are_theedge_slices(shape, offset):
    z0, z1, y0, y1, x0, x1 = edge_bounds(*shape, *offset)
    src, _ = edge_slices(np.array(offset), shape)
    expected = [(s.start or 0, s.stop if s.stop is not None else n) for s, n in zip(src, shape)]
    got = [(z0, z1), (y0, y1), (x0, x1)]
    for (lo, hi), (e_lo, e_hi), n in zip(got, expected, shape):
        assert list(range(lo, hi)) == list(range(n))[e_lo:e_hi]
