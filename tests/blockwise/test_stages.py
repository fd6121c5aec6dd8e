"""Blockwise stages on zarr volumes with real worker processes (Dask LocalCluster)."""
import sys

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
    """The embedded cluster's spawned workers start without Dask's MALLOC_TRIM_THRESHOLD_=65536
    (which slows the block tasks' large temporaries), also when an earlier cluster's nanny left
    it in this process; a value of the user's own reaches them. This process's setting is
    restored. (Forked workers: test_forked_workers_start_with_the_environment_of_the_command.)"""
    import os

    if ours is None:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", ours)
    seen = []
    with Engine(workers=1, fork_workers=False) as engine:
        engine.map(_worker_malloc_setting, [0], on_result=lambda _, value: seen.append(value))
    assert seen == [expected]
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == ours


_FORKED = """
import json, os, sys
from affseg.blockwise.engine import Engine

def probe():
    import os, sys
    return {"malloc": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "hash": hash("affseg"),
            "fragments_imported": "affseg.graph.mala.fragments" in sys.modules, "parent": os.getppid(),
            "parent_threads": len(os.listdir(f"/proc/{os.getppid()}/task"))}

if __name__ == "__main__":
    with Engine(workers=1, fork_workers=sys.argv[1] == "fork") as engine:
        (seen,) = engine.client.run(probe).values()
    print(json.dumps({**seen, "client": os.getpid(), "malloc_after": os.environ.get("MALLOC_TRIM_THRESHOLD_")}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
@pytest.mark.parametrize(("ours", "expected"), [(None, None), ("65536", None), ("1000000", "1000000")])
def test_forked_workers_start_with_the_environment_of_the_command(tmp_path, ours, expected):
    """Forked from a server that imported the block tasks' modules (before any block ran) and
    runs one thread (what fork needs), not from the client; with the environment a spawned
    worker gets (Dask's hash seed in effect, no MALLOC_TRIM_THRESHOLD_ of Dask's, a user's own
    kept). A fresh process each: the server is one per process, started with the environment of
    its first use."""
    import json
    import os
    import subprocess

    script = tmp_path / "forked.py"
    script.write_text(_FORKED)
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED")}
    env.update({} if ours is None else {"MALLOC_TRIM_THRESHOLD_": ours})
    seen = {}
    for start in ("fork", "spawn"):
        out = subprocess.run([sys.executable, str(script), start], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        seen[start] = json.loads(out.stdout.splitlines()[-1])
    dask_seed = subprocess.run([sys.executable, "-c", "print(hash('affseg'))"], env={**env, "PYTHONHASHSEED": "6640"},
                               capture_output=True, text=True, check=True).stdout
    for start in ("fork", "spawn"):
        assert seen[start]["malloc"] == expected and seen[start]["hash"] == int(dask_seed)
        assert seen[start]["malloc_after"] == ours
    assert seen["fork"]["fragments_imported"] and not seen["spawn"]["fragments_imported"]
    assert seen["fork"]["parent"] != seen["fork"]["client"] and seen["fork"]["parent_threads"] == 1
    assert seen["spawn"]["parent"] == seen["spawn"]["client"]


_CLI_FORKED = """
import json, os, sys
from affseg.blockwise import engine as engine_module
from affseg.cli import main

seen = {}
enter = engine_module.Engine.__enter__

def probing_enter(self):  # the command's own engine, asked where its worker came from
    entered = enter(self)
    (seen["parent"],) = entered.client.run(os.getppid).values()
    return entered

if __name__ == "__main__":
    engine_module.Engine.__enter__ = probing_enter
    code = main(["synth", sys.argv[1], "--shape", "4", "32", "32", "--blockwise", "--block-shape", "4,32,32",
                 "--workers", "1"])
    print(json.dumps({"code": code, "client": os.getpid(), **seen}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_the_command_line_forks_its_workers_from_the_server(tmp_path):
    """``affseg ... --blockwise --workers N`` starts the worker server and forks its workers from
    it (the library's Engine spawns them by default): the worker's parent is neither the
    command's process nor absent."""
    import json
    import subprocess

    script = tmp_path / "cli_forked.py"
    script.write_text(_CLI_FORKED)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "s.zarr")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["code"] == 0 and seen["parent"] not in (seen["client"], 1)
    assert (tmp_path / "s.zarr" / "affs").is_dir()


_CACHED_ONLY = """
import json, sys
sys.path.insert(0, sys.argv[1])
import kernel
from affseg.blockwise._preload import run_cached_only

loaded = run_cached_only(kernel.double, 21)
before = len(kernel.double.overloads)
print(json.dumps({"loaded": loaded, "overloads": before, "value": int(kernel.double(21))}))
"""


def test_the_worker_server_loads_kernels_from_numba_s_cache_and_never_compiles(tmp_path):
    """run_cached_only: a kernel missing from numba's cache is not compiled (the call is
    abandoned, and the kernel compiles normally afterwards); one in the cache is loaded. Fresh
    processes: numba's cache is per process."""
    import json
    import os
    import subprocess

    (tmp_path / "kernel.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef double(x):\n"
                                        "    return 2 * x\n")
    script = tmp_path / "cached_only.py"
    script.write_text(_CACHED_ONLY)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.splitlines()[-1]))
    assert runs[0] == {"loaded": False, "overloads": 0, "value": 42}  # not compiled by run_cached_only
    assert runs[1] == {"loaded": True, "overloads": 1, "value": 42}  # the first run's own call cached it


def _fail_to_start():
    raise RuntimeError("no cluster today")


_SERVER_EXIT = """
import atexit, os, sys
atexit.register(lambda: print("teardown of", "server" if os.getpid() == server else "child", flush=True))
server = os.getpid()
import affseg.blockwise._worker  # (what the server imports)
child = os.fork()
if child == 0:
    sys.exit(3)
_, status = os.waitpid(child, 0)
print("child exit code", os.waitstatus_to_exitcode(status), flush=True)
sys.exit(5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_the_worker_server_leaves_without_the_interpreter_s_exit(tmp_path):
    """The server skips the interpreter's exit (its atexit hook, the first to run, ends it), so
    that a pipe on a command's output closes with the command; a process forked from it exits
    normally, with its own code."""
    import subprocess

    script = tmp_path / "server_exit.py"
    script.write_text(_SERVER_EXIT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.stdout.splitlines() == ["teardown of child", "child exit code 3"], out.stderr
    assert out.returncode == 0  # (not 5: left at once)


def test_without_a_worker_server_the_workers_are_spawned(monkeypatch):
    """A server that cannot start (here: multiprocessing refuses; e.g. a socket path under a
    long TMPDIR) leaves the start to Dask's spawn: the blocks still run."""
    import os
    from multiprocessing import forkserver

    from affseg.blockwise import engine as engine_module

    def refuse():
        raise OSError("AF_UNIX path too long")

    monkeypatch.setattr(engine_module, "_SERVER", None)
    monkeypatch.setattr(forkserver, "ensure_running", refuse)
    assert engine_module.start_worker_server() is False
    with Engine(workers=1, fork_workers=True) as engine:
        (parent,) = engine.client.run(os.getppid).values()
        seen = []
        engine.map(_worker_malloc_setting, [0], on_result=lambda _, value: seen.append(value))
    assert parent == os.getpid() and seen == [None]


def test_the_environment_of_the_workers_keeps_the_user_s_settings(monkeypatch):
    """Dask's pre-spawn environment as the nanny computes it, without its MALLOC_TRIM_THRESHOLD_
    (also where an earlier nanny left it in os.environ), with a value and a hash seed of the
    user's Dask config kept."""
    import dask

    from affseg.blockwise.engine import _pre_spawn_environment

    for name in ("MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    environ = _pre_spawn_environment()
    assert "MALLOC_TRIM_THRESHOLD_" not in environ and environ["PYTHONHASHSEED"] == "6640"
    assert environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # (an earlier nanny's)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1000000,
                          "distributed.nanny.pre-spawn-environ.PYTHONHASHSEED": 7}):
        environ = _pre_spawn_environment()
    assert environ["MALLOC_TRIM_THRESHOLD_"] == "1000000" and environ["PYTHONHASHSEED"] == "7"
    assert environ["OMP_NUM_THREADS"] == "2"


class _Closable:
    def __init__(self, name, closed):
        self.name, self.closed = name, closed

    def close(self):
        self.closed.append(self.name)


def test_a_start_that_comes_too_late_is_closed():
    """An interrupt while waiting for the cluster: the start, when it succeeds, is closed (the
    client, then the cluster); one that failed leaves nothing to close."""
    import threading
    from concurrent.futures import Future

    from affseg.blockwise.engine import _close_when_started, _in_thread

    go, closed = threading.Event(), []

    def start():
        go.wait()
        return _Closable("cluster", closed), _Closable("client", closed)

    starting = _in_thread(start, name="test")
    _close_when_started(starting)
    finished = threading.Event()
    starting.add_done_callback(lambda _: finished.set())  # (runs after the closing one)
    assert closed == []  # (not started yet)
    go.set()
    assert finished.wait(60)
    assert closed == ["client", "cluster"]
    failed = Future()
    failed.set_exception(RuntimeError("no cluster"))
    _close_when_started(failed)  # (nothing to close, nothing raised)
    assert closed == ["client", "cluster"]


def test_an_embedded_cluster_that_fails_to_start_fails_at_its_first_use(monkeypatch):
    """The cluster starts in a thread while the caller checks its inputs: its error is raised
    where the client is first needed (here map), or at the end of the with block."""
    monkeypatch.setattr(Engine, "_start_local_cluster", lambda self: _fail_to_start())
    ran = []
    with pytest.raises(RuntimeError, match="no cluster today"):
        with Engine(workers=1) as engine:
            ran.append("checks")  # (the body runs: __enter__ did not wait)
            engine.map(_worker_malloc_setting, [0])
    assert ran == ["checks"]
    with pytest.raises(RuntimeError, match="no cluster today"):
        with Engine(workers=1):
            pass
    with pytest.raises(ValueError, match="the body's"):  # (the body's error is the one reported)
        with Engine(workers=1):
            raise ValueError("the body's")


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
