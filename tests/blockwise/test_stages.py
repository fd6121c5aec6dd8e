"""Blockwise stages on zarr volumes with real worker processes (Dask LocalCluster)."""
import numpy as np
import pytest
from conftest import kill_when_done, same_partition, write_affs_and_mask

from affseg import connected_components
from affseg.io import read_volume
from affseg.synthetic import make_volume

pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
from affseg.blockwise.engine import Engine
from affseg.blockwise.pipeline import connected_components_to_zarr

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0], [0, 0, 3]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("bw") / "data.zarr"
    vol = make_volume((16, 64, 64), seed=8, offsets=OFFSETS)
    mask = write_affs_and_mask(path, vol.affs, OFFSETS, chunks=(6, 8, 32, 32))
    return path, vol.affs, mask


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_connected_components_blockwise_equal_one_pass(tmp_path, data, workers):
    path, affs, mask = data
    out = tmp_path / "out.zarr" / "cc"
    with Engine(workers=workers) as engine:
        connected_components_to_zarr(str(path / "affs"), str(out), threshold=0.6, block_shape=(8, 32, 32),
                                     engine=engine, mask_address=str(path / "mask"))
    seg, _ = read_volume(out)
    whole = connected_components(affs, OFFSETS, threshold=0.6, mask=mask)
    assert same_partition(seg, whole) and ((seg == 0) == (whole == 0)).all()
    assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["cc", "zarr.json"]  # no scratch left


def test_a_scheduler_that_does_not_answer_is_named():
    from affseg.errors import InputError

    with pytest.raises(InputError, match=r"tcp://127\.0\.0\.1:1"), Engine(scheduler="tcp://127.0.0.1:1",
                                                                       connect_timeout=1):
        pass


def _worker_malloc_setting(_):
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


@pytest.mark.parametrize(("ours", "expected"), [(None, None), ("65536", None), ("1000000", "1000000")])
def test_workers_keep_glibc_s_adaptive_malloc_unless_the_user_set_it(monkeypatch, ours, expected):
    """The embedded cluster's workers start without Dask's MALLOC_TRIM_THRESHOLD_=65536 (which
    slows the block tasks' large temporaries), also when an earlier cluster's nanny left it in
    this process; a value of the user's own reaches them. This process's setting is restored."""
    import os

    if ours is None:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", ours)
    seen = []
    with Engine(workers=1) as engine:
        engine.map(_worker_malloc_setting, [0], on_result=lambda _, value: seen.append(value))
    assert seen == [expected]
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == ours


def _touch_megabytes(megabytes):
    import numpy as np

    return int(np.ones(megabytes << 17).sum())  # float64: 8 bytes each, every page touched


def test_worker_peak_memory_sees_what_the_blocks_held():
    with Engine(workers=1) as engine:
        before = engine.worker_peak_memory()
        engine.map(_touch_megabytes, [300])
        after = engine.worker_peak_memory()
    assert len(before) == len(after) == 1
    (start,), (peak,) = before.values(), after.values()
    assert peak - start >= 250 * 2**20  # the 300 MiB array (a margin: the worker may have freed some before)
    with Engine(workers=0) as engine:
        assert engine.worker_peak_memory() == {}  # no workers: the blocks ran in this process


@pytest.mark.parametrize("merge_function", ["hist_quant_75", "max"])
def test_mala_blockwise_agglomerates_like_one_pass_on_the_same_fragments(tmp_path, data, merge_function):
    from affseg import agglomerate
    from affseg.blockwise.pipeline import mala_to_zarr

    path, affs, mask = data
    thresholds = [0.2, 0.5, 0.8]
    results = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}.zarr" / "seg"
        with Engine(workers=workers) as engine:
            summary = mala_to_zarr(str(path / "affs"), str(out), thresholds=thresholds, block_shape=(8, 32, 32),
                                   context=(2, 8, 8), engine=engine, merge_function=merge_function,
                                   fragment_options={"min_seed_distance": 6}, mask_address=str(path / "mask"))
        assert summary["blocks"] == 8 and summary["datasets"][0] == "fragments"
        results[workers] = {name: read_volume(out / name)[0] for name in summary["datasets"]}
    for name in results[0]:  # 1 process and 2 workers: the same output, bit for bit
        np.testing.assert_array_equal(results[0][name], results[2][name], err_msg=name)
    fragments = results[0]["fragments"]
    assert ((fragments == 0) == (mask == 0)).all()
    single = agglomerate(affs, fragments, OFFSETS, thresholds=thresholds, merge_function=merge_function)
    for i, t in enumerate(thresholds):
        np.testing.assert_array_equal(results[0][f"threshold_{t}"], single.segmentation(i))


@pytest.mark.parametrize("positive", [False, True], ids=["-e_d", "+e_d"])
def test_stored_region_graph_equals_one_pass_statistics(tmp_path, positive):
    """The edges inside each block (stored with its fragments) and across its lower faces (the
    region-graph stage) merge to the statistics of one pass over the whole volume, bit for bit:
    every contact counted once, with blocks split along every axis, a mask, and nearest-neighbour
    affinities to ``-e_d`` or to ``+e_d``."""
    from affseg.blockwise.pipeline import mala_to_zarr
    from affseg.blockwise.store import open_store
    from affseg.graph.mala.statistics import edge_statistics

    offsets = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -3]] if positive else OFFSETS
    vol = make_volume((12, 40, 48), seed=5, offsets=offsets)
    path = tmp_path / "data.zarr"
    write_affs_and_mask(path, vol.affs, offsets, chunks=(len(offsets), 4, 8, 16))
    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "store.sqlite"
    with Engine(workers=0) as engine:
        summary = mala_to_zarr(str(path / "affs"), str(out), thresholds=[0.5], block_shape=(4, 16, 16),
                               context=(2, 4, 4), engine=engine, store=str(store_path),
                               mask_address=str(path / "mask"), fragment_options={"min_seed_distance": 4})
    assert summary["blocks"] == 3 * 3 * 3
    fragments = read_volume(out / "fragments")[0]
    whole = edge_statistics(vol.affs, fragments, offsets)
    with open_store(store_path) as store:
        stored = store.read_statistics(["mala:seg:inside", "mala:seg:region_graph"])
        faces = store.read_statistics("mala:seg:region_graph")
    assert faces.num_nodes == 0 and 0 < faces.num_edges < whole.num_edges
    for name in ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(whole, name), err_msg=name)


def test_fragments_kept_without_their_inside_edges_get_them(tmp_path, data):
    """Blocks whose fragments are done but whose inside edges are not (kept fragments of a rerun
    with overwrite over an older store, or with a merge function that needs histograms) get them
    from the stored fragments: the same statistics, bit for bit, and the same result."""
    from affseg.blockwise.pipeline import mala_to_zarr
    from affseg.blockwise.store import open_store

    path, _, _ = data
    options = dict(thresholds=[0.3, 0.7], block_shape=(8, 32, 32), context=(2, 8, 8), merge_function="mean",
                   fragment_options={"min_seed_distance": 6})
    reference, reference_store = tmp_path / "ref.zarr" / "seg", tmp_path / "ref.sqlite"
    with Engine(workers=0) as engine:
        mala_to_zarr(str(path / "affs"), str(reference), engine=engine, store=str(reference_store), **options)

    class StopAfterFragments(Engine):
        def map(self, function, items, *args, desc="blocks", **kwargs):
            if desc != "fragments":
                raise KeyboardInterrupt
            return super().map(function, items, *args, desc=desc, **kwargs)

    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "out.sqlite"
    with pytest.raises(KeyboardInterrupt), StopAfterFragments(workers=0) as engine:
        mala_to_zarr(str(path / "affs"), str(out), engine=engine, store=str(store_path), **options)
    with open_store(store_path) as store:
        assert len(store.done_blocks("mala:seg:fragments")) == 8
        store.reset_stage("mala:seg:inside")
    with Engine(workers=0) as engine:
        summary = mala_to_zarr(str(path / "affs"), str(out), engine=engine, store=str(store_path), **options)
    assert summary["computed"] == {"fragments": 0, "inside": 8, "region_graph": 8, "agglomerate": 1, "relabel": 8}
    stages = ["mala:seg:inside", "mala:seg:region_graph"]
    with open_store(store_path) as store, open_store(reference_store) as expected_store:
        got, expected = store.read_statistics(stages), expected_store.read_statistics(stages)
    for name in ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    for name in ("fragments", "threshold_0.3", "threshold_0.7"):
        np.testing.assert_array_equal(read_volume(out / name)[0], read_volume(reference / name)[0], err_msg=name)


def test_a_store_of_the_one_stage_region_graph_is_refused_not_misread(tmp_path, data):
    """A store whose region-graph stage holds every edge of each block (affseg before the inside
    edges came with the fragments) is refused unless overwrite: read with the inside stage it
    would count the inside edges twice."""
    from affseg.blockwise.pipeline import mala_to_zarr
    from affseg.blockwise.store import open_store
    from affseg.errors import OutputExists

    path, _, _ = data
    options = dict(thresholds=[0.5], block_shape=(8, 32, 32), context=(2, 8, 8),
                   fragment_options={"min_seed_distance": 6})
    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "out.sqlite"
    with Engine(workers=0) as engine:
        mala_to_zarr(str(path / "affs"), str(out), engine=engine, store=str(store_path), **options)
    with open_store(store_path) as store:  # the identity the older layout recorded
        identity = store.identity("mala:seg:region_graph")
        del identity["parameters"]["faces"]
        store.begin_stage("mala:seg:region_graph", identity, overwrite=True)
    with pytest.raises(OutputExists, match="faces"), Engine(workers=0) as engine:
        mala_to_zarr(str(path / "affs"), str(out), engine=engine, store=str(store_path), **options)


@pytest.mark.parametrize("merge_function", ["hist_quant_75", "max"])
def test_hierarchical_mala_equals_exact_where_every_block_sees_the_volume(tmp_path, data, merge_function):
    """lsd's mode: with a context as large as the block, each of the 2 x 2 x 2 blocks agglomerates the
    whole region graph, so thresholding the stored join levels gives the exact partitions."""
    from affseg import agglomerate
    from affseg.blockwise.pipeline import mala_to_zarr

    path, affs, _ = data
    thresholds = [0.2, 0.5, 0.8]
    out = tmp_path / "out.zarr" / "seg"
    with Engine(workers=2) as engine:
        summary = mala_to_zarr(str(path / "affs"), str(out), thresholds=thresholds, block_shape=(8, 32, 32),
                               context=(8, 32, 32), engine=engine, merge_function=merge_function,
                               fragment_options={"min_seed_distance": 6}, mask_address=str(path / "mask"),
                               mode="hierarchical")
    assert summary["blocks"] == 8 and summary["computed"]["scores"] == 8
    fragments = read_volume(out / "fragments")[0]
    assert summary["fragments"] == len(np.unique(fragments[fragments > 0]))
    # the node table: every fragment with its size and centre (voxel coordinates of the volume)
    from scipy import ndimage

    from affseg.blockwise.store import default_store_path, open_store

    with open_store(default_store_path(tmp_path / "out.zarr")) as store:
        ids, sizes, centres = store.read_fragments(summary["fragments_stage"])
    np.testing.assert_array_equal(ids, np.unique(fragments[fragments > 0]))
    np.testing.assert_array_equal(sizes, ndimage.sum_labels(np.ones(fragments.shape), fragments, ids))
    np.testing.assert_allclose(centres, ndimage.center_of_mass(np.ones(fragments.shape), fragments, ids),
                               rtol=0, atol=1e-9)
    single = agglomerate(affs, fragments, OFFSETS, thresholds=thresholds, merge_function=merge_function)
    for i, t in enumerate(thresholds):
        np.testing.assert_array_equal(read_volume(out / f"threshold_{t}")[0], single.segmentation(i))
    import zarr

    assert zarr.open_array(str(out / "threshold_0.5"), mode="r").attrs["mode"] == "hierarchical"


def test_hierarchical_mala_with_a_small_context_resumes_and_is_close_to_exact(tmp_path, data):
    from affseg import evaluate
    from affseg.blockwise.pipeline import mala_to_zarr
    from affseg.errors import InputError, OutputExists

    path, _, _ = data
    options = dict(thresholds=[0.3, 0.6], block_shape=(8, 32, 32), context=(2, 8, 8),
                   fragment_options={"min_seed_distance": 6})
    segs = {}
    for workers, mode in ((0, "exact"), (0, "hierarchical"), (2, "hierarchical")):
        out = tmp_path / f"{mode}{workers}.zarr" / "seg"
        with Engine(workers=workers) as engine:
            summary = mala_to_zarr(str(path / "affs"), str(out), engine=engine, mode=mode, **options)
        segs[mode, workers] = {t: read_volume(out / f"threshold_{t}")[0] for t in (0.3, 0.6)}
    for t in (0.3, 0.6):
        np.testing.assert_array_equal(segs["hierarchical", 0][t], segs["hierarchical", 2][t])  # any worker count
    # an approximation: close to the exact mode where few fragments merge, apart where most do
    scores = evaluate(segs["hierarchical", 0][0.3], segs["exact", 0][0.3])
    assert scores["voi_split"] + scores["voi_merge"] < 0.5, scores
    assert not np.array_equal(segs["hierarchical", 0][0.6], segs["exact", 0][0.6])
    with Engine(workers=0) as engine:  # a rerun computes nothing; another mode over it needs overwrite
        again = mala_to_zarr(str(path / "affs"), str(out), engine=engine, mode="hierarchical", **options)
        assert again["computed"] == {"fragments": 0, "scores": 0, "agglomerate": 0, "relabel": 0}
        with pytest.raises(OutputExists, match="overwrite=True"):
            mala_to_zarr(str(path / "affs"), str(out), engine=engine, mode="exact", **options)
        with pytest.raises(InputError, match="mode must be one of exact, hierarchical, got 'lsd'"):
            mala_to_zarr(str(path / "affs"), str(out), engine=engine, mode="lsd", **options)
    assert summary["edges"] > 0


def _mala_job(data_path, out, store):
    return (f"from affseg.blockwise.engine import Engine\n"
            f"from affseg.blockwise.pipeline import mala_to_zarr\n"
            f"with Engine(workers=0) as engine:\n"
            f"    print(mala_to_zarr({str(data_path / 'affs')!r}, {str(out)!r}, thresholds=[0.3, 0.7], "
            f"block_shape=(4, 16, 16), context=(2, 6, 6), engine=engine, store={str(store)!r}, "
            f"fragment_options={{'min_seed_distance': 5}}))\n")


def test_a_killed_client_resumes_redoing_only_unfinished_blocks(tmp_path, data):
    import subprocess
    import sys

    path, _, _ = data
    reference = tmp_path / "ref.zarr" / "seg"
    subprocess.run([sys.executable, "-c", _mala_job(path, reference, tmp_path / "ref.sqlite")], check=True,
                   capture_output=True)
    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "out.sqlite"
    job = subprocess.Popen([sys.executable, "-c", _mala_job(path, out, store_path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    done = kill_when_done(job, store_path, "mala:seg:fragments", 10)
    assert 10 <= len(done) < 64, "the kill should land within the fragments stage"
    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import mala_to_zarr

    with Engine(workers=0) as engine:
        summary = mala_to_zarr(str(path / "affs"), str(out), thresholds=[0.3, 0.7], block_shape=(4, 16, 16),
                               context=(2, 6, 6), engine=engine, store=str(store_path),
                               fragment_options={"min_seed_distance": 5})
    assert summary["blocks"] == 64 and summary["computed"]["fragments"] == 64 - len(done)
    assert summary["computed"]["inside"] == 64 - len(done)  # (stored with each block's fragments)
    for name in ("fragments", "threshold_0.3", "threshold_0.7"):
        np.testing.assert_array_equal(read_volume(out / name)[0], read_volume(reference / name)[0], err_msg=name)
    with Engine(workers=0) as engine:  # again: everything is done
        again = mala_to_zarr(str(path / "affs"), str(out), thresholds=[0.3, 0.7], block_shape=(4, 16, 16),
                             context=(2, 6, 6), engine=engine, store=str(store_path),
                             fragment_options={"min_seed_distance": 5})
    assert again["computed"] == {"fragments": 0, "inside": 0, "region_graph": 0, "agglomerate": 0, "relabel": 0}
    for name in ("fragments", "threshold_0.3", "threshold_0.7"):  # the finished outputs are not staged again
        np.testing.assert_array_equal(read_volume(out / name)[0], read_volume(reference / name)[0], err_msg=name)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    from affseg.errors import OutputExists

    with pytest.raises(OutputExists, match="overwrite=True"), Engine(workers=0) as engine:
        mala_to_zarr(str(path / "affs"), str(out), thresholds=[0.3, 0.7], block_shape=(4, 16, 16),
                     context=(2, 6, 6), engine=engine, store=str(store_path), fragment_options={"min_seed_distance": 6})


def _cc_job(data_path, out, store):
    return (f"from affseg.blockwise.engine import Engine\n"
            f"from affseg.blockwise.pipeline import connected_components_to_zarr\n"
            f"with Engine(workers=0) as engine:\n"
            f"    connected_components_to_zarr({str(data_path / 'affs')!r}, {str(out)!r}, threshold=0.6, "
            f"block_shape=(4, 16, 16), engine=engine, mask_address={str(data_path / 'mask')!r}, store={str(store)!r})\n")


def test_connected_components_resume_after_a_killed_client_redoing_only_unfinished_blocks(tmp_path, data):
    import subprocess
    import sys

    path, affs, mask = data
    out, store_path = tmp_path / "out.zarr" / "cc", tmp_path / "out.sqlite"

    def run():
        with Engine(workers=0) as engine:
            return connected_components_to_zarr(str(path / "affs"), str(out), threshold=0.6, block_shape=(4, 16, 16),
                                                engine=engine, mask_address=str(path / "mask"), store=str(store_path))

    job = subprocess.Popen([sys.executable, "-c", _cc_job(path, out, store_path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    done = kill_when_done(job, store_path, "cc:cc:components", 10)
    assert 10 <= len(done) < 64, "the kill should land within the components stage"
    assert not (out.parent / "cc").exists() and (out.parent / ".cc.blocks.partial").exists()
    summary = run()
    assert summary["blocks"] == 64
    assert summary["computed"] == {"components": 64 - len(done), "faces": 64, "merge": 1, "relabel": 64}
    seg, _ = read_volume(out)
    whole = connected_components(affs, OFFSETS, threshold=0.6, mask=mask)
    assert same_partition(seg, whole) and ((seg == 0) == (whole == 0)).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cc", "zarr.json"]
    again = run()  # everything is done
    assert again["computed"] == {"components": 0, "faces": 0, "merge": 0, "relabel": 0}
    np.testing.assert_array_equal(read_volume(out)[0], seg)


def test_one_store_serves_several_mala_outputs_and_a_removed_output_is_made_again(tmp_path, data):
    """The default store (beside the container) keeps each output group's stages apart: a second
    group with other thresholds, and a third with the first one's options, each run in full; a
    finished job whose output was deleted by hand runs again instead of failing to publish."""
    import shutil

    from affseg.blockwise.pipeline import mala_to_zarr

    path, _, _ = data
    options = dict(block_shape=(8, 32, 32), context=(2, 8, 8), fragment_options={"min_seed_distance": 6})
    container = tmp_path / "out.zarr"

    def run(group, thresholds):
        with Engine(workers=0) as engine:
            return mala_to_zarr(str(path / "affs"), str(container / group), thresholds=thresholds, engine=engine,
                                **options)

    first = run("a", [0.3, 0.7])
    assert run("b", [0.5])["computed"]["fragments"] == 8
    assert run("c", [0.3, 0.7])["computed"]["fragments"] == 8
    for name in ("fragments", "threshold_0.3", "threshold_0.7"):
        np.testing.assert_array_equal(read_volume(container / "a" / name)[0], read_volume(container / "c" / name)[0])
    assert run("a", [0.3, 0.7])["computed"] == {"fragments": 0, "inside": 0, "region_graph": 0, "agglomerate": 0, "relabel": 0}
    expected = read_volume(container / "a" / "threshold_0.7")[0]
    shutil.rmtree(container / "a" / "threshold_0.7")
    again = run("a", [0.3, 0.7])
    assert again["computed"] == {"fragments": 8, "inside": 8, "region_graph": 8, "agglomerate": 1, "relabel": 8}
    np.testing.assert_array_equal(read_volume(container / "a" / "threshold_0.7")[0], expected)
    assert first["fragments"] == again["fragments"]


def test_a_finished_cc_job_whose_output_was_removed_runs_again(tmp_path, data):
    import shutil

    path, affs, _ = data
    out = tmp_path / "out.zarr" / "cc"

    def run():
        with Engine(workers=0) as engine:
            return connected_components_to_zarr(str(path / "affs"), str(out), threshold=0.6, block_shape=(8, 32, 32),
                                                engine=engine)

    run()
    shutil.rmtree(out)
    assert run()["computed"] == {"components": 8, "faces": 8, "merge": 1, "relabel": 8}
    seg, _ = read_volume(out)
    assert same_partition(seg, connected_components(affs, OFFSETS, threshold=0.6))
