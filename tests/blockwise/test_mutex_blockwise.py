"""The Mutex Watershed blockwise: per block with context, stitched where neighbouring runs agree.

In memory (mutex_watershed_blockwise) and on zarr volumes through the stages (real worker
processes where it matters): close to one pass, exact on clean affinities, the same bits with
1 process, 2 workers and any block order, resumable through the graph store.
"""
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import kill_when_done, same_partition, write_affs_and_mask

from affseg import evaluate, mutex_watershed
from affseg.blockwise.layout import BlockLayout
from affseg.blockwise.mutex import mutex_watershed_blockwise, neighbours, stitch_pairs
from affseg.conventions import affinities_from_labels
from affseg.errors import InputError
from affseg.io import read_volume
from affseg.synthetic import make_volume

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -4, 0], [0, 0, -4]]
BIASES = {"bias": 0.3, "long_range_bias": 0.7}


@pytest.fixture(scope="module")
def volume():
    return make_volume((12, 48, 48), seed=4, offsets=OFFSETS)


def test_one_block_is_one_pass(volume):
    whole = mutex_watershed(volume.affs, OFFSETS, **BIASES)
    blocks = mutex_watershed_blockwise(volume.affs, OFFSETS, block_shape=(12, 48, 48), context=0, **BIASES)
    assert same_partition(blocks, whole)


@pytest.mark.parametrize("block_shape,context", [((6, 24, 24), (3, 8, 8)), ((4, 16, 16), (2, 6, 6))])
def test_close_to_one_pass(volume, block_shape, context):
    mask = np.ones(volume.labels.shape, bool)
    mask[2:7, 10:30, :9] = False
    whole = mutex_watershed(volume.affs, OFFSETS, mask=mask, **BIASES)
    blocks = mutex_watershed_blockwise(volume.affs, OFFSETS, block_shape=block_shape, context=context, mask=mask,
                                       **BIASES)
    assert ((blocks == 0) == ~mask).all()
    against_one = evaluate(blocks, whole)  # measured: 0.01-0.03 bits split and merge
    assert against_one["voi_split"] < 0.1 and against_one["voi_merge"] < 0.1
    gt = np.where(mask, volume.labels, 0)
    assert evaluate(blocks, gt)["voi"] < evaluate(whole, gt)["voi"] + 0.1


def _voronoi(shape, n, seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n, len(shape))) * np.array(shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij"), axis=-1)
    distance = ((grid[..., None, :] - centres) ** 2).sum(-1)
    return (distance.argmin(-1) + 1).astype(np.uint64)


@pytest.mark.parametrize("shape,block_shape,context,offsets", [
    ((12, 40, 40), (5, 16, 16), (2, 5, 5), OFFSETS),
    ((40, 50), (16, 12), 4, [[-1, 0], [0, -1], [-5, 0], [0, -5]]),
])
def test_clean_affinities_give_the_objects(shape, block_shape, context, offsets):
    labels = _voronoi(shape, 12, seed=1)  # convex objects: each block sees them whole within its region
    affs, _ = affinities_from_labels(labels, offsets)
    blocks = mutex_watershed_blockwise(affs, offsets, block_shape=block_shape, context=context)
    assert same_partition(blocks, labels)
    assert same_partition(blocks, mutex_watershed(affs, offsets))


def test_stitch_pairs_need_both_runs_to_agree():
    layout = BlockLayout((1, 12), (1, 6), context=(0, 4))
    a, b = layout.block(0), layout.block(1)  # read regions x 0..10 and 2..12; they own 0..6 and 6..12
    assert neighbours(layout, a) == [1] and neighbours(layout, b) == []
    run_a = np.array([[1] * 10], np.uint64)  # a's segment 1 runs on into b's half
    run_b = np.array([[9] * 10], np.uint64)  # b's run agrees: its segment 9 comes from a's half
    assert stitch_pairs(run_a, a, run_b, b).tolist() == [[1, 9]]
    run_b = np.array([[0] * 4 + [9] * 6], np.uint64)  # b's run cuts at the face (0: context only)
    assert stitch_pairs(run_a, a, run_b, b).tolist() == []
    run_b = np.array([[9] * 10], np.uint64)
    run_a = np.array([[1] * 6 + [0] * 4], np.uint64)  # a's run cuts at the face
    assert stitch_pairs(run_a, a, run_b, b).tolist() == []
    run_a = np.array([[1] * 9 + [0]], np.uint64)  # 3 of b's 4 voxels that a sees
    assert stitch_pairs(run_a, a, run_b, b).tolist() == [[1, 9]]  # a majority by default
    assert stitch_pairs(run_a, a, run_b, b, overlap=0.75).tolist() == []  # not more than three quarters


@pytest.mark.parametrize("ties", ["hash", "attractive-first"])
def test_tie_order_reaches_the_blocks(volume, ties):
    # one block holding the whole volume is one pass, with any tie order
    whole = mutex_watershed_blockwise(volume.affs, OFFSETS, block_shape=volume.affs.shape[1:], context=1, ties=ties)
    assert same_partition(whole, mutex_watershed(volume.affs, OFFSETS, ties=ties))


def test_bad_options_are_named(volume):
    with pytest.raises(InputError, match="overlap"):
        mutex_watershed_blockwise(volume.affs, OFFSETS, block_shape=(6, 24, 24), context=2, overlap=0.3)
    with pytest.raises(InputError, match="'threshold'"):
        mutex_watershed_blockwise(volume.affs, OFFSETS, block_shape=(6, 24, 24), context=2, threshold=0.3)


# ---------------------------------------------------------------------------------------------
# on zarr volumes, through the stages

BLOCKS = dict(block_shape=(4, 16, 16), context=(2, 6, 6))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
    path = tmp_path_factory.mktemp("mws") / "data.zarr"
    vol = make_volume((16, 48, 48), seed=8, offsets=OFFSETS)
    mask = write_affs_and_mask(path, vol.affs, OFFSETS, chunks=(6, 8, 16, 16))
    reference = mutex_watershed_blockwise(vol.affs, OFFSETS, mask=mask, **BLOCKS, **BIASES)
    return path, reference


def _run(data_path, out, workers=0, order_seed=None, **options):
    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import mutex_watershed_to_zarr

    with Engine(workers=workers, order_seed=order_seed) as engine:
        return mutex_watershed_to_zarr(str(data_path / "affs"), str(out), **BLOCKS, engine=engine,
                                       mask_address=str(data_path / "mask"), **{**BIASES, **options})


def test_the_same_bits_with_1_process_2_workers_and_any_block_order(tmp_path, data):
    path, reference = data
    results = []
    for workers, order_seed in ((0, None), (0, 7), (2, 3)):
        out = tmp_path / f"out{workers}{order_seed}.zarr" / "seg"
        summary = _run(path, out, workers, order_seed)
        assert summary["blocks"] == 36 and summary["computed"] == {"blocks": 36, "pairs": 36, "stitch": 1,
                                                                    "relabel": 36}
        results.append(read_volume(out)[0])
        assert sorted(p.name for p in out.parent.iterdir()) == ["seg", "zarr.json"]  # no scratch left
    for seg in results:
        np.testing.assert_array_equal(seg, reference)  # = mutex_watershed_blockwise in memory


def _job(data_path, out, store):
    return (f"from affseg.blockwise.engine import Engine\n"
            f"from affseg.blockwise.pipeline import mutex_watershed_to_zarr\n"
            f"with Engine(workers=0) as engine:\n"
            f"    mutex_watershed_to_zarr({str(data_path / 'affs')!r}, {str(out)!r}, block_shape={BLOCKS['block_shape']},"
            f" context={BLOCKS['context']}, engine=engine, mask_address={str(data_path / 'mask')!r}, "
            f"store={str(store)!r}, bias={BIASES['bias']}, long_range_bias={BIASES['long_range_bias']})\n")


def test_a_killed_client_resumes_redoing_only_unfinished_blocks(tmp_path, data):
    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import mutex_watershed_to_zarr
    from affseg.errors import OutputExists

    path, reference = data
    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "out.sqlite"
    job = subprocess.Popen([sys.executable, "-c", _job(path, out, store_path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    done = kill_when_done(job, store_path, "mws:seg:blocks", 8)
    assert 8 <= len(done) < 36, "the kill should land within the blocks stage"
    # a copy of the interrupted job whose scratch runs are lost: every block again, the same result
    lost = tmp_path / "lost"
    shutil.copytree(tmp_path / "out.zarr", lost / "out.zarr")
    shutil.copy(store_path, lost / "out.sqlite")
    shutil.rmtree(lost / "out.zarr" / ".seg.runs.partial")

    with Engine(workers=0) as engine:
        summary = mutex_watershed_to_zarr(str(path / "affs"), str(out), **BLOCKS, engine=engine,
                                          mask_address=str(path / "mask"), store=str(store_path), **BIASES)
    assert summary["computed"] == {"blocks": 36 - len(done), "pairs": 36, "stitch": 1, "relabel": 36}
    np.testing.assert_array_equal(read_volume(out)[0], reference)
    with Engine(workers=0) as engine:  # again: everything is done
        again = mutex_watershed_to_zarr(str(path / "affs"), str(out), **BLOCKS, engine=engine,
                                        mask_address=str(path / "mask"), store=str(store_path), **BIASES)
    assert again["computed"] == {"blocks": 0, "pairs": 0, "stitch": 0, "relabel": 0}
    np.testing.assert_array_equal(read_volume(out)[0], reference)
    with pytest.raises(OutputExists, match=r"mws\.bias"), Engine(workers=0) as engine:
        mutex_watershed_to_zarr(str(path / "affs"), str(out), **BLOCKS, engine=engine, mask_address=str(path / "mask"),
                                store=str(store_path), bias=0.4, long_range_bias=0.7)

    with Engine(workers=0) as engine:
        summary = mutex_watershed_to_zarr(str(path / "affs"), str(lost / "out.zarr" / "seg"), **BLOCKS, engine=engine,
                                          mask_address=str(path / "mask"), store=str(lost / "out.sqlite"), **BIASES)
    assert summary["computed"]["blocks"] == 36
    np.testing.assert_array_equal(read_volume(lost / "out.zarr" / "seg")[0], reference)


@pytest.mark.parametrize("fork_workers", [False, True])
def test_a_worker_killed_mid_run_changes_nothing(tmp_path, data, fork_workers):
    """kill -9 of one of 2 Dask worker processes while blocks run: Dask reschedules its tasks on
    the other worker (and the nanny restarts it); the result is the same bits. Also with the
    workers forked from affseg's worker server (the command line's), which forks the new one."""
    import os
    import threading

    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import mutex_watershed_to_zarr
    from affseg.blockwise.store import open_store

    path, reference = data
    out, store_path = tmp_path / "out.zarr" / "seg", tmp_path / "out.sqlite"
    killed = {}

    def kill_after_the_first_block(victim):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with open_store(store_path) as store:
                    done = store.done_blocks("mws:seg:blocks") if "mws:seg:blocks" in store.stages() else set()
            except Exception:  # the store is being created
                done = set()
            if done:
                os.kill(victim, signal.SIGKILL)
                killed["after"] = len(done)
                return
            time.sleep(0.005)

    with Engine(workers=2, order_seed=5, fork_workers=fork_workers) as engine:
        victim = min(engine.client.run(os.getpid).values())
        parents = set(engine.client.run(os.getppid).values())
        thread = threading.Thread(target=kill_after_the_first_block, args=(victim,), daemon=True)
        thread.start()
        summary = mutex_watershed_to_zarr(str(path / "affs"), str(out), **BLOCKS, engine=engine,
                                          mask_address=str(path / "mask"), store=str(store_path), **BIASES)
        thread.join()
        assert victim not in engine.client.run(os.getpid).values()
        assert set(engine.client.run(os.getppid).values()) == parents  # (the restarted one too)
    forked_from_server = parents != {os.getpid()}
    assert forked_from_server == (fork_workers and sys.platform.startswith("linux"))
    assert 1 <= killed["after"] < 36, "the kill should land while the blocks run"
    assert summary["computed"] == {"blocks": 36, "pairs": 36, "stitch": 1, "relabel": 36}
    np.testing.assert_array_equal(read_volume(out)[0], reference)
