"""Mergeable region-graph statistics and agglomeration on a graph alone."""
import numpy as np
import pytest

from affseg import extract_fragments
from affseg.errors import InputError
from affseg.graph.mala.agglomeration import agglomerate, agglomerate_graph, relabel
from affseg.graph.mala.statistics import edge_statistics, merge_edge_statistics
from affseg.synthetic import make_volume


@pytest.fixture(scope="module")
def synthetic():
    vol = make_volume((12, 48, 48), seed=11)
    return vol.affs, extract_fragments(vol.affs, min_seed_distance=5)


def _brute_force(affs, fragments):
    """Per (u, v): the affinities of every contact face, by looping over voxels."""
    contacts = {}
    nz, ny, nx = fragments.shape
    for d, step in enumerate(np.eye(3, dtype=int)):
        for z, y, x in np.ndindex(nz, ny, nx):
            lz, ly, lx = z - step[0], y - step[1], x - step[2]
            if min(lz, ly, lx) < 0:
                continue
            a, b = fragments[z, y, x], fragments[lz, ly, lx]
            if a and b and a != b:
                contacts.setdefault((min(a, b), max(a, b)), []).append(affs[d, z, y, x])
    return contacts


@pytest.mark.parametrize("seed", [0, 1])
def test_statistics_equal_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    fragments = rng.integers(0, 4, size=(3, 5, 6)).astype(np.uint64) * np.uint64(2**62)  # large ids too
    affs = (rng.integers(0, 256, size=(3, 3, 5, 6)) / 255).astype(np.float32)
    stats = edge_statistics(affs, fragments)
    expected = _brute_force(affs, fragments)
    assert list(zip(stats.u.tolist(), stats.v.tolist())) == sorted(expected)
    for e, key in enumerate(sorted(expected)):
        values = np.array(expected[key], np.float32)
        assert stats.count[e] == values.size and stats.max[e] == values.max() and stats.min[e] == values.min()
        assert stats.sum[e] == pytest.approx(values.astype(np.float64).sum())
        bins = np.minimum((values * np.float32(256)).astype(int), 255)
        np.testing.assert_array_equal(stats.histogram[e], np.bincount(bins, minlength=256))
    ids, sizes = np.unique(fragments[fragments != 0], return_counts=True)
    np.testing.assert_array_equal(stats.node_ids, ids)
    np.testing.assert_array_equal(stats.node_sizes, sizes)


def test_merging_adds_counts_and_keeps_extremes_in_any_order():
    rng = np.random.default_rng(3)
    parts = []
    for _ in range(3):
        fragments = rng.integers(0, 6, size=(2, 6, 6)).astype(np.uint64)
        affs = (rng.integers(0, 256, size=(3, 2, 6, 6)) / 256).astype(np.float32)  # exact float64 sums
        parts.append(edge_statistics(affs, fragments))
    merged = merge_edge_statistics(parts)
    backwards = merge_edge_statistics(parts[::-1])
    for name in ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(backwards, name), err_msg=name)
    for e, (u, v) in enumerate(zip(merged.u, merged.v)):
        hits = [(p, np.flatnonzero((p.u == u) & (p.v == v))) for p in parts]
        hits = [(p, i[0]) for p, i in hits if i.size]
        assert merged.count[e] == sum(p.count[i] for p, i in hits)
        assert merged.max[e] == max(p.max[i] for p, i in hits) and merged.min[e] == min(p.min[i] for p, i in hits)
        np.testing.assert_array_equal(merged.histogram[e], sum(p.histogram[i] for p, i in hits))
    assert merged.node_sizes.sum() == sum(p.node_sizes.sum() for p in parts)


@pytest.mark.parametrize("merge_function", ["hist_quant_75", "hist_quant_50_initmax", "max", "min"])
@pytest.mark.parametrize("queue", [256, 0])
def test_graph_agglomeration_equals_the_volume_one(synthetic, merge_function, queue):
    affs, fragments = synthetic
    thresholds = [0.1, 0.3, 0.5, 0.7, 0.9]
    volume = agglomerate(affs, fragments, thresholds=thresholds, merge_function=merge_function,
                         discretize_queue=queue)
    graph = agglomerate_graph(merge_edge_statistics([edge_statistics(affs, fragments)]), thresholds=thresholds,
                              merge_function=merge_function, discretize_queue=queue)
    np.testing.assert_array_equal(graph.segment_ids, volume.segment_ids)
    np.testing.assert_array_equal(graph.merge_history, volume.merge_history)
    np.testing.assert_array_equal(relabel(fragments, *graph.lookup(2)), volume.segmentation(2))
    with pytest.raises(InputError, match="relabel"):
        graph.segmentation(0)


@pytest.mark.parametrize("merge_function", ["hist_quant_75", "hist_quant_50_initmax", "max", "mean"])
def test_overwriting_the_statistics_gives_the_same_agglomeration(synthetic, merge_function):
    affs, fragments = synthetic
    thresholds = [0.1, 0.5, 0.9]
    stats = merge_edge_statistics([edge_statistics(affs, fragments)])
    kept = agglomerate_graph(stats, thresholds=thresholds, merge_function=merge_function)
    assert np.array_equal(stats.histogram, edge_statistics(affs, fragments).histogram)  # untouched by default
    before = stats.histogram.copy(), stats.count.copy(), stats.sum.copy()
    overwritten = agglomerate_graph(stats, thresholds=thresholds, merge_function=merge_function,
                                    overwrite_statistics=True)
    np.testing.assert_array_equal(overwritten.segment_ids, kept.segment_ids)
    np.testing.assert_array_equal(overwritten.merge_history, kept.merge_history)
    changed = not (np.array_equal(stats.histogram, before[0]) and np.array_equal(stats.count, before[1]))
    # merged in place only by the histogram functions that start from the histograms
    assert changed == (merge_function == "hist_quant_75")
    np.testing.assert_array_equal(stats.sum, before[2])


def test_overwriting_the_statistics_saves_a_copy_of_the_histograms(synthetic):
    import tracemalloc

    affs, fragments = synthetic
    peaks = {}
    for overwrite in (False, True):
        stats = merge_edge_statistics([edge_statistics(affs, fragments)])
        agglomerate_graph(stats, thresholds=[0.5], merge_function="hist_quant_75")  # (compiled before measuring)
        stats = merge_edge_statistics([edge_statistics(affs, fragments)])
        tracemalloc.start()
        agglomerate_graph(stats, thresholds=[0.5], merge_function="hist_quant_75", overwrite_statistics=overwrite)
        peaks[overwrite] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[False] >= stats.histogram.nbytes > peaks[True]


def test_statistics_that_cannot_be_work_space_are_copied(synthetic):
    affs, fragments = synthetic
    stats = merge_edge_statistics([edge_statistics(affs, fragments)])
    kept = agglomerate_graph(stats, thresholds=[0.5], merge_function="hist_quant_75")
    stats.histogram.flags.writeable = False
    before = stats.count.copy()
    again = agglomerate_graph(stats, thresholds=[0.5], merge_function="hist_quant_75", overwrite_statistics=True)
    np.testing.assert_array_equal(again.segment_ids, kept.segment_ids)
    np.testing.assert_array_equal(stats.count, before)
    with pytest.raises(InputError, match="overwrite_statistics"):
        agglomerate_graph(stats, thresholds=[0.5], overwrite_statistics="yes")


def test_mean_is_exact_with_contacts_and_close_from_sums(synthetic):
    affs, fragments = synthetic
    thresholds = [0.2, 0.4, 0.6]
    volume = agglomerate(affs, fragments, thresholds=thresholds, merge_function="mean")
    exact = agglomerate_graph(edge_statistics(affs, fragments, keep_contacts=True), thresholds=thresholds,
                              merge_function="mean")
    np.testing.assert_array_equal(exact.segment_ids, volume.segment_ids)
    from_sums = agglomerate_graph(merge_edge_statistics([edge_statistics(affs, fragments)]),
                                  thresholds=thresholds, merge_function="mean")
    differ = (from_sums.segment_ids != volume.segment_ids).mean()
    assert differ < 0.01  # float64 sum / count against a float32 running mean: rare last-bit ties


def test_histogram_merge_functions_need_histograms(synthetic):
    affs, fragments = synthetic
    stats = merge_edge_statistics([edge_statistics(affs, fragments, histogram=False)])
    with pytest.raises(InputError, match="histogram"):
        agglomerate_graph(stats, thresholds=[0.5], merge_function="hist_quant_75")
    agglomerate_graph(stats, thresholds=[0.5], merge_function="max")


@pytest.mark.parametrize("ndim", [2, 3])
def test_blocks_that_own_their_write_regions_merge_to_the_whole_volume(synthetic, ndim):
    from affseg.blockwise import BlockLayout

    affs, fragments = synthetic
    if ndim == 2:
        affs, fragments = affs[1:, 5], fragments[5]
    whole = edge_statistics(affs, fragments)
    layout = BlockLayout(fragments.shape, (5, 17, 13)[-ndim:], context=1)
    parts = []
    for block in layout:
        parts.append(edge_statistics(affs[(slice(None),) + block.read], fragments[block.read],
                                     owned=block.write_in_read))
    merged = merge_edge_statistics(parts[::-1])  # in any order
    for name in ("node_ids", "node_sizes", "u", "v", "count", "max", "min", "histogram"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12)
    thresholds = [0.2, 0.5, 0.8]
    for merge_function in ("hist_quant_75", "max", "min"):
        a = agglomerate_graph(merged, thresholds=thresholds, merge_function=merge_function)
        b = agglomerate(affs, fragments, thresholds=thresholds, merge_function=merge_function)
        np.testing.assert_array_equal(a.segment_ids, b.segment_ids)


def test_owned_must_be_a_box(synthetic):
    affs, fragments = synthetic
    with pytest.raises(InputError, match="owned"):
        edge_statistics(affs, fragments, owned=(slice(0, 2),))
    with pytest.raises(InputError, match="owned"):
        edge_statistics(affs, fragments, owned=(slice(0, 2), slice(0, 4), slice(3, 3)))


@pytest.mark.parametrize("case", ["random", "large_ids", "owned", "two_d"])
def test_one_pass_statistics_equal_those_of_the_contacts(synthetic, case):
    # edge_statistics counts in one pass (contacts in chains of blocks per node); with
    # keep_contacts it goes through the region graph with every contact: the same, bit for bit
    affs, fragments = synthetic
    owned = None
    if case == "random":  # ~2.7 contacts per voxel: the contact blocks grow during the scan
        rng = np.random.default_rng(5)
        fragments = rng.integers(0, 300, size=fragments.shape).astype(np.uint64)
    elif case == "large_ids":  # past the dense table: node indices first
        fragments = fragments * np.uint64(2**40) + (fragments > 0).astype(np.uint64)
    elif case == "owned":
        owned = (slice(2, 9), slice(5, 40), slice(0, 31))
    else:
        affs, fragments = affs[1:, 4], fragments[4]
    one_pass = edge_statistics(affs, fragments, owned=owned)
    contacts = edge_statistics(affs, fragments, owned=owned, keep_contacts=True)
    for name in ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram"):
        a, b = getattr(one_pass, name), getattr(contacts, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_histogram_bins_are_waterz_discretisation():
    # the one-pass statistics bin affinities without branches; waterz's discretize, value for value
    from numba import njit

    from affseg.graph.mala._kernels import discretize
    from affseg.graph.mala.rag import _bin

    @njit
    def both(values, bins):
        out = np.empty((2, values.shape[0]), np.int64)
        for i in range(values.shape[0]):
            out[0, i] = _bin(values[i], bins)
            out[1, i] = discretize(values[i], bins)
        return out

    edges = np.arange(257, dtype=np.float32) / np.float32(256)
    near = np.concatenate([np.nextafter(edges, np.float32(-1)), edges, np.nextafter(edges, np.float32(2))])
    tiny = np.array([0.0, -0.0, np.finfo(np.float32).smallest_subnormal, np.finfo(np.float32).tiny], np.float32)
    values = np.concatenate([near, tiny, np.random.default_rng(0).random(100_000, dtype=np.float32)])
    values = values[(values >= 0) & (values <= 1)]
    for bins in (256, 64, 2):
        ours, waterz = both(values, bins)
        np.testing.assert_array_equal(ours, waterz)


def test_edge_table_refuses_bins_its_binning_cannot_match():
    # _bin equals waterz's discretize only for powers of two up to 256 (1-byte bins)
    from affseg.graph.mala.rag import edge_table

    affs = np.full((3, 2, 3, 3), 0.5, np.float32)
    fragments = np.arange(18, dtype=np.uint64).reshape(2, 3, 3)
    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1]])
    for bins in (0, 100, 512):
        with pytest.raises(ValueError, match="power of two"):
            edge_table(affs, offsets, fragments, statistics=("histogram",), bins=bins)
    assert edge_table(affs, offsets, fragments, statistics=("histogram",), bins=64).histogram.shape[1] == 64
