"""join_levels: thresholding the join levels of an agglomeration reproduces its partition at every
threshold, for every pair of fragments (edges or not), and a brute-force replay agrees."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affseg import agglomerate, extract_fragments
from affseg.errors import InputError
from affseg.graph.mala.agglomeration import MERGE_HISTORY_DTYPE
from affseg.graph.mala.levels import join_levels
from affseg.synthetic import make_volume


def _replay(agglomeration, u, v):
    """Brute force: replay the merges one by one and note the partition where each pair first shares a root."""
    parent = {}

    def root(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    history = agglomeration.merge_history
    out = np.full(len(u), np.inf, np.float32)
    out[u == v] = -np.inf
    pending = {i for i in range(len(u)) if u[i] != v[i]}
    for a, b, index in zip(history["a"].tolist(), history["b"].tolist(), history["threshold_index"].tolist()):
        parent[root(b)] = root(a)
        for i in list(pending):
            if root(int(u[i])) == root(int(v[i])):
                out[i] = agglomeration.thresholds[index]
                pending.discard(i)
    return out


@pytest.mark.parametrize("seed", [2, 5])
@pytest.mark.parametrize("merge_function", ["hist_quant_75", "mean", "max", "min"])
def test_levels_at_most_a_threshold_are_the_agglomeration_at_it(merge_function, seed):
    vol = make_volume((12, 64, 64), seed=seed)
    fragments = extract_fragments(vol.affs, min_seed_distance=4)
    thresholds = np.round(np.linspace(0.02, 0.98, 49), 2)  # many: stale queue tops stop runs between them
    agg = agglomerate(vol.affs, fragments, thresholds=thresholds, merge_function=merge_function)
    rng = np.random.default_rng(seed)
    ids = agg.fragment_ids
    u = np.concatenate([agg.region_graph["u"], rng.choice(ids, 3000)])  # the edges, and pairs far apart
    v = np.concatenate([agg.region_graph["v"], rng.choice(ids, 3000)])
    levels = join_levels(agg, u, v)
    iu, iv = np.searchsorted(ids, u), np.searchsorted(ids, v)
    for i, t in enumerate(agg.thresholds):
        together = agg.segment_ids[i][iu] == agg.segment_ids[i][iv]
        np.testing.assert_array_equal(levels <= t, together, err_msg=f"threshold {t}")
    np.testing.assert_array_equal(levels, _replay(agg, u, v))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2)), max_size=30),
       st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), min_size=1, max_size=20))
def test_levels_equal_a_brute_force_replay(merges, pairs):
    """Made-up histories with many merges per partition (ties of the key)."""
    merges = sorted(merges, key=lambda m: m[2])  # partitions in order, as an agglomeration records them
    history = np.zeros(len(merges), MERGE_HISTORY_DTYPE)
    for k, (a, b, index) in enumerate(merges):
        history[k] = (a, b, a, 0.0, index)
    agglomeration = SimpleNamespace(thresholds=np.array([0.25, 0.5, 0.75], np.float32), merge_history=history)
    u, v = (np.array(x, np.uint64) for x in zip(*pairs))
    np.testing.assert_array_equal(join_levels(agglomeration, u, v), _replay(agglomeration, u, v))


def test_bad_input_is_named():
    agglomeration = SimpleNamespace(thresholds=np.array([0.5], np.float32), merge_history=np.zeros(2, MERGE_HISTORY_DTYPE))
    with pytest.raises(InputError, match="must be an Agglomeration"):
        join_levels(np.zeros((2, 3)), [1], [2])
    with pytest.raises(InputError, match="one length"):
        join_levels(agglomeration, [1, 2], [2])
    with pytest.raises(InputError, match="v must hold non-negative fragment ids, got -4 at index 1"):
        join_levels(agglomeration, [1, 2], [3, -4])
    assert join_levels(agglomeration, np.zeros(0, np.uint64), np.zeros(0, np.uint64)).shape == (0,)
