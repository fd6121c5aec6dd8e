"""The graph store: one suite that every back end (SQLite, PostgreSQL) passes.

The ``backend`` fixture is parametrised over the back ends; the PostgreSQL one starts a real
server for the session (``initdb`` + ``pg_ctl`` from Debian's ``postgresql`` package, on a free
port of 127.0.0.1, as an unprivileged user when run as root) and skips with the reason where
none can start. ``AFFSEG_TEST_POSTGRES=required`` (CI) turns that skip into a failure;
``AFFSEG_TEST_POSTGRES_URL=postgresql://...`` uses an existing server instead (a role that may
create databases). No mocks: every test talks to a real database, several to real processes.
"""
from __future__ import annotations

import dataclasses
import glob
import itertools
import multiprocessing
import os
import pickle
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from affseg.blockwise import BlockLayout
from affseg.blockwise.store import (
    GraphStore,
    default_store_path,
    open_store,
    sql_to_uint64,
    stage_identity,
    uint64_to_sql,
)
from affseg.errors import CorruptInput, InputError, OutputExists, PathNotFound
from affseg.graph.mala.statistics import HISTOGRAM_BINS, EdgeStatistics, edge_statistics, merge_edge_statistics
from affseg.synthetic import make_volume

EXTREMES = [0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
IDENTITY = {"parameters": {"threshold": 0.5}}


# ---------------------------------------------------------------------------------------------
# back ends


def _unavailable(reason: str):
    if os.environ.get("AFFSEG_TEST_POSTGRES") == "required":
        pytest.fail(f"{reason} (AFFSEG_TEST_POSTGRES=required)")
    pytest.skip(reason)


def _postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = ([Path(found).resolve().parent] if found else []) + sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A server for the session: databases made on demand, one per store."""

    def __init__(self, base_url: str):
        import psycopg

        self.base_url = base_url.rstrip("/")
        self.admin = psycopg.connect(f"{self.base_url}/postgres", autocommit=True)
        self.count = itertools.count()

    def new_database(self) -> str:
        name = f"affseg_test_{os.getpid()}_{next(self.count)}"
        self.admin.execute(f"DROP DATABASE IF EXISTS {name}")
        self.admin.execute(f"CREATE DATABASE {name}")
        return f"{self.base_url}/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg 3 is not installed (pip install 'affseg[postgresql]'): PostgreSQL store not tested")
    external = os.environ.get("AFFSEG_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(external.rsplit("/", 1)[0] if external.count("/") > 2 else external)
        return
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin "
                     "(apt-get install postgresql): PostgreSQL store not tested")
    run_as: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root: use its own account, or nobody
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            break
        else:
            _unavailable("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL")
    folder = Path(tempfile.mkdtemp(prefix="affseg-pg-"))  # under /tmp: reachable by that account
    if run_as:
        os.chown(folder, run_as["user"], run_as["group"])
    port = _free_port()
    started = time.perf_counter()

    def run(*args):
        return subprocess.run([str(bindir / args[0]), *args[1:]], capture_output=True, text=True, cwd=folder,
                              timeout=120, **run_as)

    try:
        done = run("initdb", "-D", str(folder / "data"), "-U", "affseg", "--auth=trust", "-E", "UTF8", "--no-locale",
                   "--no-sync")
        if done.returncode != 0:
            _unavailable(f"initdb failed, PostgreSQL store not tested: {done.stderr.strip()[-500:]}")
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off -c max_connections=60")
        done = run("pg_ctl", "start", "-w", "-t", "60", "-D", str(folder / "data"), "-l", str(folder / "log"),
                   "-o", options)
        if done.returncode != 0:
            log = (folder / "log").read_text(errors="replace")[-500:] if (folder / "log").exists() else ""
            _unavailable(f"pg_ctl start failed, PostgreSQL store not tested: {done.stderr.strip()[-300:]} {log}")
        print(f"\nPostgreSQL {bindir.parent.name} started on 127.0.0.1:{port} in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        server = PostgresServer(f"postgresql://affseg@127.0.0.1:{port}")
        try:
            yield server
        finally:
            server.admin.close()
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            run("pg_ctl", "stop", "-D", str(folder / "data"), "-m", "fast", "-w")
        shutil.rmtree(folder, ignore_errors=True)


class Backend:
    """One back end, as the suite sees it: fresh store URLs, and raw SQL to damage them."""

    def __init__(self, name: str, new_url, raw):
        self.name = name
        self.new_url = new_url  # () -> a location with no store yet
        self.raw = raw  # (url, [statement or (statement, parameters)]) -> None, through the plain driver


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        count = itertools.count()

        def new_url():
            return str(tmp_path / f"store{next(count)}.sqlite")

        def raw(url, statements):
            with sqlite3.connect(url) as conn:
                for statement in statements:
                    conn.execute(*((statement,) if isinstance(statement, str) else statement))
            conn.close()

        return Backend("sqlite", new_url, raw)
    server = request.getfixturevalue("postgres_server")

    def raw_pg(url, statements):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                if isinstance(statement, str):
                    conn.execute(statement)
                else:
                    conn.execute(statement[0].replace("?", "%s"), statement[1])

    return Backend("postgresql", server.new_database, raw_pg)


@pytest.fixture
def store(backend):
    with open_store(backend.new_url(), create=True) as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# statistics to store


def assert_same_statistics(a: EdgeStatistics, b: EdgeStatistics) -> None:
    for name in ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
        assert x.shape == y.shape, (name, x.shape, y.shape)
        assert np.array_equal(x, y), name


def random_statistics(seed: int, *, ids=None, histogram: bool = True) -> EdgeStatistics:
    """Statistics of a made-up block: edges among ``ids`` (default: a few of 12 small ids)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids if ids is not None else rng.choice(np.arange(1, 13), 6, replace=False), np.uint64)
    node_ids = np.unique(ids)
    pairs = np.array([(a, b) for a in node_ids for b in node_ids if a < b], np.uint64).reshape(-1, 2)
    pairs = pairs[rng.random(len(pairs)) < 0.7] if len(pairs) > 2 else pairs
    n = len(pairs)
    hist = np.zeros((n, HISTOGRAM_BINS), np.uint32)
    for e in range(n):
        bins = rng.integers(0, HISTOGRAM_BINS, rng.integers(1, 6))
        np.add.at(hist, (e, bins), rng.integers(1, 2**31, bins.shape[0]).astype(np.uint32) if e == 0 else 1)
    values = rng.random((n, 2)).astype(np.float32)
    return EdgeStatistics(node_ids=node_ids, node_sizes=rng.integers(1, 2**40, node_ids.shape[0]),
                          u=pairs[:, 0].copy(), v=pairs[:, 1].copy(), count=hist.sum(axis=1, dtype=np.int64),
                          sum=rng.random(n) * 100, max=values.max(axis=1), min=values.min(axis=1),
                          histogram=hist if histogram else None)


def volume_blocks(shape=(8, 24, 24), block_shape=(4, 8, 8), seed=3):
    """Real statistics: fragments (labels cut into slabs, half of them with ids beyond 2**63) and
    their blocks' statistics, owned regions tiling the volume."""
    vol = make_volume(shape, seed=seed)
    x = np.arange(shape[-1]) // 5
    fragments = vol.labels.astype(np.uint64) * np.uint64(8) + x.astype(np.uint64) + np.uint64(1)
    fragments = np.where(fragments % np.uint64(2) == 0, np.uint64(2**64 - 1) - fragments, fragments)
    layout = BlockLayout(shape, block_shape, context=1)
    parts = {}
    for block in layout:
        parts[block.id] = edge_statistics(vol.affs[(slice(None),) + block.read], fragments[block.read],
                                          owned=block.write_in_read)
    return vol, fragments, layout, parts


# ---------------------------------------------------------------------------------------------
# round trips


def test_uint64_mapping_is_lossless_at_the_extremes():
    ids = np.array(EXTREMES, np.uint64)
    stored = uint64_to_sql(ids)
    assert stored.dtype == np.int64
    assert stored.tolist() == [0, 1, 2**63 - 1, -(2**63), -2, -1]  # reinterpreted bits
    assert np.array_equal(sql_to_uint64(stored.tolist()), ids)


def test_round_trip_of_one_block(store):
    assert store.read_statistics().num_edges == 0
    _, _, _, parts = volume_blocks()
    store.begin_stage("region_graph", IDENTITY)
    store.write_block(5, parts[5])
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([parts[5]]))
    assert store.done_blocks("region_graph") == {5}


def test_uint64_extremes_round_trip(store):
    ids = np.array(EXTREMES[1:], np.uint64)
    stats = random_statistics(1, ids=ids)
    assert stats.u.max() == 2**64 - 2 and stats.v.max() == 2**64 - 1
    store.begin_stage("region_graph", IDENTITY)
    store.write_block(2**63 - 1, stats)  # the largest block id, too
    got = store.read_statistics()
    assert_same_statistics(got, merge_edge_statistics([stats]))
    assert got.node_ids.tolist() == EXTREMES[1:]
    assert store.done_blocks("region_graph") == {2**63 - 1}
    store.begin_stage("agglomerate", IDENTITY)
    old = np.array(EXTREMES, np.uint64)
    new = old[::-1].copy()
    store.write_lookup("extremes", old, new)
    got_old, got_new = store.read_lookup("extremes")
    assert got_old.dtype == got_new.dtype == np.uint64
    assert got_old.tolist() == EXTREMES and got_new.tolist() == EXTREMES[::-1]


@pytest.mark.parametrize("column", ["histogram", "histogram_counts", "histogram_counts NULL", "u", "node_sizes"])
def test_a_block_graph_blob_cut_short_is_a_damaged_store(backend, column):
    url = backend.new_url()
    with open_store(url, create=True) as opened:
        opened.begin_stage("region_graph", IDENTITY)
        opened.write_block(0, random_statistics(4))
    cut = "substr(?, 1, length(?) - 1)" if backend.name == "sqlite" else "substring(? from 1 for length(?) - 1)"
    column, null = column.split()[0], column.endswith("NULL")
    backend.raw(url, [f"UPDATE affseg_block_graphs SET {column} = {'NULL' if null else cut.replace('?', column)}"])
    with open_store(url) as opened:
        with pytest.raises(CorruptInput, match=r"block 0 .*damaged"):
            opened.read_statistics()
        if column.startswith("histogram"):
            assert opened.read_statistics(histogram=False).num_edges > 0  # the rest still reads


def test_large_blocks_are_split_into_rows(backend, monkeypatch):
    import affseg.blockwise.store as store_module

    _, _, layout, parts = volume_blocks()
    url = backend.new_url()
    with open_store(url, create=True) as opened:
        opened.begin_stage("region_graph", IDENTITY)
        for block in layout:
            opened.write_block(block.id, parts[block.id])
        whole = opened.read_statistics()
        monkeypatch.setattr(store_module, "BLOCK_GRAPH_BYTES", 100)  # an edge or two a row
        for block in layout:
            opened.write_block(block.id, parts[block.id])  # (a retry: its rows replaced)
        assert_same_statistics(opened.read_statistics(), whole)
        assert_same_statistics(opened.read_statistics(histogram=False), dataclasses.replace(whole, histogram=None))
        # without histograms, and an empty block
        opened.begin_stage("plain", IDENTITY)
        plain = [dataclasses.replace(parts[block.id], histogram=None) for block in layout]
        for block in layout:
            opened.write_block(block.id, plain[block.id], stage="plain")
        opened.write_block(len(layout), stage="plain", statistics=EdgeStatistics(
            node_ids=np.zeros(0, np.uint64), node_sizes=np.zeros(0, np.int64), u=np.zeros(0, np.uint64),
            v=np.zeros(0, np.uint64), count=np.zeros(0, np.int64), sum=np.zeros(0), max=np.zeros(0, np.float32),
            min=np.zeros(0, np.float32), histogram=None))
        assert_same_statistics(opened.read_statistics("plain"), merge_edge_statistics(plain))
    if backend.name == "sqlite":
        with sqlite3.connect(url) as conn:
            rows, blocks, nodes = conn.execute("SELECT count(*), count(DISTINCT block), sum(nodes) FROM "
                                               "affseg_block_graphs WHERE stage = 'region_graph'").fetchone()
            assert blocks == len(layout) and rows > 2 * blocks
            assert nodes == sum(parts[block.id].node_ids.shape[0] for block in layout)
        conn.close()


def test_merging_blocks_equals_merge_edge_statistics(store):
    vol, fragments, layout, parts = volume_blocks()
    store.begin_stage("region_graph", stage_identity(layout, method="hist_quant_50"))
    order = np.random.default_rng(0).permutation(len(layout))
    for block_id in order:  # any write order
        store.write_block(int(block_id), parts[int(block_id)])
    got = store.read_statistics()
    expected = merge_edge_statistics([parts[b] for b in range(len(layout))])
    assert_same_statistics(got, expected)  # bitwise, float sums included
    # several blocks did write the same edges, and the merge equals one pass over the volume
    total_rows = sum(p.num_edges for p in parts.values())
    assert total_rows > got.num_edges > 0
    whole = edge_statistics(vol.affs, fragments)
    for name in ("node_ids", "node_sizes", "u", "v", "count", "max", "min", "histogram"):
        assert np.array_equal(getattr(got, name), getattr(whole, name)), name
    assert np.allclose(got.sum, whole.sum, rtol=1e-12)
    assert store.read_statistics(histogram=False).histogram is None


def test_node_sizes_add_up_and_statistics_merge(store):
    a = random_statistics(1, ids=[1, 2, 3])
    b = random_statistics(2, ids=[2, 3, 4])
    store.begin_stage("region_graph", IDENTITY)
    store.write_block(1, b)
    store.write_block(0, a)
    got = store.read_statistics()
    assert_same_statistics(got, merge_edge_statistics([a, b]))
    sizes = dict(zip(got.node_ids.tolist(), got.node_sizes.tolist()))
    assert sizes[2] == a.node_sizes[1] + b.node_sizes[0]
    assert got.histogram.dtype == np.uint32 and got.histogram.shape == (got.num_edges, HISTOGRAM_BINS)


def test_rewriting_a_block_replaces_it(store):
    a = random_statistics(1)
    b = random_statistics(2)
    store.begin_stage("region_graph", IDENTITY)
    store.write_block(0, a)
    store.write_block(1, b)
    store.write_block(1, b)  # a retried worker: counted once
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([a, b]))
    c = random_statistics(3)
    store.write_block(1, c)  # what was written last is what counts
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([a, c]))
    assert store.done_blocks("region_graph") == {0, 1}


def test_blocks_without_histograms(store):
    store.begin_stage("region_graph", IDENTITY)
    a = random_statistics(1, histogram=False)
    store.write_block(0, a)
    assert store.read_statistics().histogram is None
    b = random_statistics(2)
    store.write_block(1, b)  # one part without histograms: none merged, as merge_edge_statistics
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([a, b]))
    store.write_block(0, random_statistics(1))
    assert store.read_statistics().histogram is not None


def test_empty_blocks_are_done_too(store):
    empty = random_statistics(0, ids=[])
    assert empty.num_nodes == 0 and empty.num_edges == 0
    store.begin_stage("region_graph", IDENTITY)
    store.write_block(3, empty)
    assert store.done_blocks("region_graph") == {3}
    got = store.read_statistics()
    assert got.num_edges == 0 and got.num_nodes == 0 and got.histogram.shape == (0, HISTOGRAM_BINS)


def test_stages_are_kept_apart(store):
    a, b = random_statistics(1), random_statistics(2)
    store.begin_stage("region_graph", IDENTITY)
    store.begin_stage("fragments", {"other": 1})
    store.write_block(0, a)
    store.write_block(0, b, stage="fragments")
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([a]))
    assert_same_statistics(store.read_statistics("fragments"), merge_edge_statistics([b]))
    assert set(store.stages()) == {"region_graph", "fragments"}


def test_several_stages_merge_in_block_then_stage_order(store):
    """A block's parts in two stages (its inside and its faces, say) merge as merge_edge_statistics
    of the parts in block order, a block's parts in the order the stages are given: bitwise,
    float sums included, whatever order they were written in."""
    parts = {(block, stage): random_statistics(10 * block + k, ids=[1, 2, 3, 4, 5])
             for block in (0, 1, 2) for k, stage in enumerate(("inside", "faces"))}
    store.begin_stage("inside", IDENTITY)
    store.begin_stage("faces", IDENTITY)
    for block, stage in sorted(parts, reverse=True):
        store.write_block(block, parts[block, stage], stage=stage)
    for stages in (["inside", "faces"], ["faces", "inside"]):
        expected = merge_edge_statistics([parts[block, stage] for block in (0, 1, 2) for stage in stages])
        assert_same_statistics(store.read_statistics(stages), expected)
    assert_same_statistics(store.read_statistics(["faces", "faces"]), store.read_statistics("faces"))
    with pytest.raises(InputError, match="at least one stage"):
        store.read_statistics([])
    with pytest.raises(InputError, match="a stage name or a list of them"):
        store.read_statistics({"inside", "faces"})


# ---------------------------------------------------------------------------------------------
# done records and identities


def test_done_records_and_identity(backend):
    url = backend.new_url()
    layout = BlockLayout((20, 20), (5, 5))
    identity = stage_identity(layout, threshold=0.5, offsets=np.array([[-1, 0], [0, -1]]), method="mean")
    with open_store(url, create=True) as store:
        assert store.identity("region_graph") is None
        assert store.done_blocks("region_graph") == set()
        assert store.begin_stage("region_graph", identity) == set()
        store.mark_done("region_graph", [1, 2, np.int64(3)])
        store.mark_done("region_graph", [3, 4])  # again: nothing doubles
        store.write_block(7, random_statistics(7))
        store.begin_stage("agglomerate", {"thresholds": [0.5]})
        store.write_lookup("t0.5", [1, 2], [1, 1], stage="agglomerate")
        store.write_lookup("kept", [1, 2], [1, 1], stage="agglomerate")
    with open_store(url) as store:  # a rerun resumes: same identity, same done blocks
        assert store.begin_stage("region_graph", identity) == {1, 2, 3, 4, 7}
        assert store.identity("region_graph")["parameters"]["threshold"] == 0.5
        other = stage_identity(layout, threshold=0.7, offsets=np.array([[-1, 0], [0, -1]]), method="mean")
        with pytest.raises(OutputExists, match=r"region_graph.*parameters\.threshold: stored 0\.5, now 0\.7.*5 done"):
            store.begin_stage("region_graph", other)
        relaid = stage_identity(BlockLayout((20, 20), (10, 10)), threshold=0.5,
                                offsets=np.array([[-1, 0], [0, -1]]), method="mean")
        with pytest.raises(OutputExists, match=r"layout\.block_shape"):
            store.begin_stage("region_graph", relaid)
        assert store.done_blocks("region_graph") == {1, 2, 3, 4, 7}  # refused: nothing changed
        # overwrite: the stage's done records and data go, the other stages' stay
        assert store.begin_stage("region_graph", other, overwrite=True) == set()
        assert store.done_blocks("region_graph") == set()
        assert store.read_statistics().num_edges == 0
        assert store.identity("region_graph")["parameters"]["threshold"] == 0.7
        assert store.lookups() == {"t0.5": "agglomerate", "kept": "agglomerate"}
        assert store.begin_stage("agglomerate", {"thresholds": [0.6]}, overwrite=True) == set()
        assert store.lookups() == {}
        store.reset_stage("region_graph")
        assert store.identity("region_graph") is None


def test_writes_need_a_begun_stage_and_its_identity(backend):
    url = backend.new_url()
    with open_store(url, create=True) as store:
        with pytest.raises(InputError, match="begin_stage"):
            store.write_block(0, random_statistics(0))
        with pytest.raises(InputError, match="begin_stage"):
            store.mark_done("region_graph", [0])
        with pytest.raises(InputError, match="begin_stage"):
            store.write_lookup("t", [1], [1])
        store.begin_stage("region_graph", IDENTITY)
        stale = pickle.loads(pickle.dumps(store))  # what a worker gets: remembers the identity it began
        try:
            with open_store(url) as other:  # another run overwrites the stage meanwhile
                other.begin_stage("region_graph", {"parameters": {"threshold": 0.9}}, overwrite=True)
            with pytest.raises(OutputExists, match="begun again"):
                stale.write_block(0, random_statistics(0))
            with pytest.raises(OutputExists, match="begun again"):
                stale.mark_done("region_graph", [0])
        finally:
            stale.close()
        assert store.done_blocks("region_graph") == set()


def test_bad_identities_and_names(store):
    with pytest.raises(InputError, match="JSON"):
        store.begin_stage("region_graph", {"x": object()})
    with pytest.raises(InputError, match="JSON"):
        store.begin_stage("region_graph", {"x": float("nan")})
    with pytest.raises(InputError, match="dict"):
        store.begin_stage("region_graph", "threshold=0.5")
    with pytest.raises(InputError, match="name"):
        store.begin_stage("region graph; DROP TABLE", IDENTITY)
    store.begin_stage("region_graph", IDENTITY)
    with pytest.raises(InputError, match="block id"):
        store.mark_done("region_graph", [-1])
    with pytest.raises(InputError, match="block_id"):
        store.write_block(2**63, random_statistics(0))


def test_bad_statistics_are_refused(store):
    store.begin_stage("region_graph", IDENTITY)
    good = random_statistics(4)
    fields = {name: getattr(good, name) for name in
              ("node_ids", "node_sizes", "u", "v", "count", "sum", "max", "min", "histogram")}
    bad = [
        ({"u": np.concatenate([good.u, good.u[:1]]), "v": np.concatenate([good.v, good.v[:1]]),
          "count": np.concatenate([good.count, good.count[:1]]), "sum": np.concatenate([good.sum, good.sum[:1]]),
          "max": np.concatenate([good.max, good.max[:1]]), "min": np.concatenate([good.min, good.min[:1]]),
          "histogram": np.concatenate([good.histogram, good.histogram[:1]])}, "twice"),
        ({"node_ids": good.node_ids.astype(np.int64) * -1}, "negative"),
        ({"u": good.u.astype(np.float64)}, "integer"),
        ({"count": good.count[:-1]}, "shape"),
        ({"histogram": good.histogram[:, :10]}, "histogram"),
        ({"v": good.v[:-1]}, "length"),
    ]
    for change, message in bad:
        with pytest.raises(InputError, match=message):
            store.write_block(0, EdgeStatistics(**{**fields, **change}))
    with pytest.raises(InputError, match="EdgeStatistics"):
        store.write_block(0, {"u": []})
    assert store.done_blocks("region_graph") == set()  # nothing half-written
    assert store.read_statistics().num_nodes == 0


# ---------------------------------------------------------------------------------------------
# lookup tables


def test_lookup_tables(store):
    store.begin_stage("agglomerate", IDENTITY)
    rng = np.random.default_rng(0)
    old = rng.permutation(np.arange(1, 2001, dtype=np.uint64) * np.uint64(2**52))  # up to ~2**63
    new = np.uint64(2**64 - 1) - old // np.uint64(3)
    store.write_lookup("threshold_0.50", old, new)
    got_old, got_new = store.read_lookup("threshold_0.50")
    order = np.argsort(old)
    assert np.array_equal(got_old, old[order]) and np.array_equal(got_new, new[order])
    store.write_lookup("threshold_0.50", [3, 1], [1, 1])  # replaced, not merged
    assert [a.tolist() for a in store.read_lookup("threshold_0.50")] == [[1, 3], [1, 1]]
    store.write_lookup("empty", np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert [a.size for a in store.read_lookup("empty")] == [0, 0]
    assert store.lookups() == {"empty": "agglomerate", "threshold_0.50": "agglomerate"}
    with pytest.raises(InputError, match=r"no lookup table 'nope'.*'empty'"):
        store.read_lookup("nope")
    with pytest.raises(InputError, match="repeat"):
        store.write_lookup("x", [1, 1], [2, 3])
    with pytest.raises(InputError, match="differ in length"):
        store.write_lookup("x", [1, 2], [2])
    with pytest.raises(InputError, match="negative"):
        store.write_lookup("x", [-1], [2])


# ---------------------------------------------------------------------------------------------
# several processes


WRITER = textwrap.dedent("""
    import pickle, sys, time
    from pathlib import Path
    from affseg.blockwise.store import open_store
    url, parts_file, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    parts = pickle.loads(Path(parts_file).read_bytes())
    store = open_store(url, create=True)  # both create it at once
    store.begin_stage("region_graph", {"parameters": {"threshold": 0.5}})
    Path(parts_file + ".ready").touch()
    while not go.exists():
        time.sleep(0.01)
    for block_id, stats in parts:
        store.write_block(block_id, stats)
    store.close()
""")


def test_two_processes_write_different_blocks_at_once(backend, tmp_path):
    url = backend.new_url()
    _, _, layout, parts = volume_blocks(shape=(8, 32, 32), block_shape=(2, 8, 8))
    go = tmp_path / "go"
    workers = []
    for w in range(2):  # block 0 both write (as a retried block would be)
        mine = [(b, parts[b]) for b in range(len(layout)) if b % 2 == w or b == 0]
        parts_file = tmp_path / f"parts{w}.pickle"
        parts_file.write_bytes(pickle.dumps(mine))
        workers.append(subprocess.Popen([sys.executable, "-c", WRITER, url, str(parts_file), str(go)],
                                        stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"parts{w}.pickle.ready").exists() for w in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in workers), \
            [p.stderr.read() for p in workers if p.poll() is not None]
        time.sleep(0.02)
    go.touch()  # both start writing together
    for p in workers:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with open_store(url) as store:
        assert store.done_blocks("region_graph") == set(range(len(layout)))
        assert_same_statistics(store.read_statistics(),
                               merge_edge_statistics([parts[b] for b in range(len(layout))]))


def test_a_forked_child_writes_and_the_parent_still_works(store):
    store.begin_stage("region_graph", IDENTITY)
    a, b = random_statistics(1), random_statistics(2)
    store.write_block(0, a)  # the parent's connection is open when it forks
    child = multiprocessing.get_context("fork").Process(target=store.write_block, args=(1, b))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert_same_statistics(store.read_statistics(), merge_edge_statistics([a, b]))
    store.write_block(2, a)
    assert store.done_blocks("region_graph") == {0, 1, 2}


FORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from affseg.blockwise.store import open_store
    from affseg.graph.mala.statistics import EdgeStatistics
    def stats(i):
        ids = np.array([i + 1, i + 2], np.uint64)
        return EdgeStatistics(node_ids=ids, node_sizes=np.array([1, 2]), u=ids[:1], v=ids[1:], count=np.array([1]),
                              sum=np.array([0.5]), max=np.array([0.5], np.float32), min=np.array([0.5], np.float32),
                              histogram=None)
    store = open_store(sys.argv[1])
    store.write_block(0, stats(0))
    session = store._backend.conn.info.backend_pid if store.backend == "PostgreSQL" else None
    for uses_it in (True, False):
        pid = os.fork()
        if pid == 0:  # a child that exits normally, finalising its copy of the store
            if uses_it:
                store.write_block(1, stats(1))
            store.close()  # e.g. leaving a `with open_store(...)` block
            sys.exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    store.write_block(2, stats(2))  # the parent's own connection still works
    assert session is None or store._backend.conn.info.backend_pid == session
    print(sorted(store.done_blocks("region_graph")))
""")


def test_forked_children_leave_the_parents_connection_alone(store):
    store.begin_stage("region_graph", IDENTITY)
    out = subprocess.run([sys.executable, "-c", FORKER, store.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 2]"


def test_a_store_pickles_as_its_url(store):
    store.begin_stage("region_graph", IDENTITY)
    copy = pickle.loads(pickle.dumps(store))
    try:
        assert isinstance(copy, GraphStore) and copy.url == store.url and copy.backend == store.backend
        copy.write_block(4, random_statistics(4))
    finally:
        copy.close()
    assert store.done_blocks("region_graph") == {4}


# ---------------------------------------------------------------------------------------------
# corrupt, foreign and missing stores


def test_fragment_tables(store):
    store.begin_stage("fragments", IDENTITY)
    ids = np.array([2**64 - 1, 7, 2**63], np.uint64)
    store.write_fragments(3, ids, [5, 1, 2], [[1.5, 2.0, 3.25], [0, 0, 0], [9, 8, 7]], stage="fragments")
    store.write_fragments(4, [11], [4], [[1, 2, 3]], stage="fragments")
    store.write_fragments(4, [12, 13], [4, 6], [[1, 2, 3], [4, 5, 6]], stage="fragments")  # a retry replaces
    got_ids, sizes, centres = store.read_fragments("fragments")
    assert got_ids.dtype == np.uint64 and got_ids.tolist() == [7, 12, 13, 2**63, 2**64 - 1]
    assert sizes.tolist() == [1, 4, 6, 2, 5]
    np.testing.assert_array_equal(centres, [[0, 0, 0], [1, 2, 3], [4, 5, 6], [9, 8, 7], [1.5, 2.0, 3.25]])
    assert store.done_blocks("fragments") == {3, 4}
    # an id two blocks wrote: sizes add, centres are size-weighted
    store.write_fragments(5, [7], [3], [[4, 4, 4]], stage="fragments")
    _, sizes, centres = store.read_fragments("fragments")
    assert sizes[0] == 4 and centres[0].tolist() == [3, 3, 3]
    # 2D, and a stage reset forgets them
    store.begin_stage("flat", IDENTITY)
    store.write_fragments(0, [1, 2], [1, 1], [[0.5, 1], [2, 3]], stage="flat")
    assert store.read_fragments("flat")[2].tolist() == [[0.5, 1], [2, 3]]
    store.reset_stage("flat")
    assert store.read_fragments("flat")[0].shape == (0,)
    for bad, match in ((dict(ids=[1, 1], sizes=[1, 1], centres=[[0, 0, 0]] * 2), "the id 1 twice"),
                       (dict(ids=[1], sizes=[0], centres=[[0, 0, 0]]), "at least 1, got 0 for id 1"),
                       (dict(ids=[1], sizes=[1], centres=[[np.nan, 0, 0]]), r"finite, got \[nan, 0.0, 0.0\] for id 1"),
                       (dict(ids=[1], sizes=[1], centres=[[0] * 4]), r"centres must have shape \(1, 3\)"),
                       (dict(ids=[1, 2], sizes=[1], centres=[[0, 0, 0]]), "sizes must have shape"),
                       (dict(ids=[-1], sizes=[1], centres=[[0, 0, 0]]), "negative")):
        with pytest.raises(InputError, match=match):
            store.write_fragments(9, stage="fragments", **bad)
    with pytest.raises(InputError, match="was not begun"):
        store.write_fragments(9, [1], [1], [[0, 0, 0]], stage="never")
    assert 9 not in store.done_blocks("fragments")


def legacy_rows(stage: str, block: int, statistics: EdgeStatistics, *, cut: bool = False) -> list[tuple]:
    """INSERT statements of one block as a store of schema version 1 or 2 held it: a row per node
    and per edge, each histogram a blob of packed (uint8 bin, uint32 count) records (with ``cut``,
    each blob one byte short)."""
    record = np.dtype([("bin", "u1"), ("count", "<u4")])
    statements = [("INSERT INTO affseg_parts (stage, block, histogram, nodes, edges) VALUES (?, ?, 1, ?, ?)",
                   (stage, block, statistics.node_ids.shape[0], statistics.u.shape[0])),
                  ("INSERT INTO affseg_done (stage, block) VALUES (?, ?)", (stage, block))]
    for node, size in zip(uint64_to_sql(statistics.node_ids).tolist(), statistics.node_sizes.tolist()):
        statements.append(("INSERT INTO affseg_nodes (stage, block, id, size) VALUES (?, ?, ?, ?)",
                           (stage, block, node, size)))
    for e in range(statistics.u.shape[0]):
        bins = np.flatnonzero(statistics.histogram[e])
        records = np.empty(bins.shape[0], record)
        records["bin"], records["count"] = bins, statistics.histogram[e, bins]
        statements.append(("INSERT INTO affseg_edges (stage, block, u, v, count, sum, max, min, histogram) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (stage, block, int(uint64_to_sql(statistics.u[e:e + 1])[0]),
                            int(uint64_to_sql(statistics.v[e:e + 1])[0]), int(statistics.count[e]),
                            float(statistics.sum[e]), float(statistics.max[e]), float(statistics.min[e]),
                            records.tobytes()[:-1] if cut else records.tobytes())))
    return statements


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_store_is_brought_up_to_date_keeping_its_data(backend, version):
    url = backend.new_url()
    _, _, _, parts = volume_blocks()
    with open_store(url, create=True) as store:
        store.begin_stage("region_graph", IDENTITY)
    dropped = ["affseg_block_graphs"] + (["affseg_fragments"] if version == 1 else [])
    backend.raw(url, [f"DROP TABLE {table}" for table in dropped] +
                [f"UPDATE affseg_meta SET value = '{version}' WHERE key = 'version'"] +
                legacy_rows("region_graph", 5, parts[5]) + legacy_rows("region_graph", 6, parts[6]))
    with open_store(url) as store:  # as a store of the previous affseg, its blocks as rows
        assert_same_statistics(store.read_statistics(), merge_edge_statistics([parts[5], parts[6]]))
        assert store.done_blocks("region_graph") == {5, 6}
        store.write_block(7, parts[7])  # as arrays, beside the rows
        store.write_block(6, parts[6])  # its rows replaced
        assert_same_statistics(store.read_statistics(), merge_edge_statistics([parts[5], parts[6], parts[7]]))
        # a block's rows in one stage and its arrays in another merge in the order of the stages
        store.begin_stage("faces", IDENTITY)
        store.write_block(5, parts[8], stage="faces")
        assert_same_statistics(store.read_statistics(["region_graph", "faces"]),
                               merge_edge_statistics([parts[5], parts[8], parts[6], parts[7]]))
        assert_same_statistics(store.read_statistics(["faces", "region_graph"]),
                               merge_edge_statistics([parts[8], parts[5], parts[6], parts[7]]))
        store.begin_stage("fragments", IDENTITY)
        store.write_fragments(0, [1], [1], [[0, 0, 0]], stage="fragments")
    with open_store(url) as store:  # (a store left at an older version with the tables would be refused here)
        assert store.read_fragments("fragments")[0].tolist() == [1]
        store.reset_stage("region_graph")
        assert store.read_statistics().num_edges == 0
    if backend.name == "sqlite":
        with sqlite3.connect(url) as conn:
            assert conn.execute("SELECT value FROM affseg_meta WHERE key = 'version'").fetchone() == ("3",)
            assert conn.execute("SELECT count(*) FROM affseg_edges").fetchone() == (0,)
        conn.close()


def test_a_cut_histogram_row_of_an_older_store_is_a_damaged_store(backend):
    url = backend.new_url()
    _, _, _, parts = volume_blocks()
    with open_store(url, create=True) as store:
        store.begin_stage("region_graph", IDENTITY)
    backend.raw(url, ["DROP TABLE affseg_block_graphs", "UPDATE affseg_meta SET value = '2' WHERE key = 'version'"] +
                legacy_rows("region_graph", 5, parts[5], cut=True))
    with open_store(url) as store:
        with pytest.raises(CorruptInput, match=r"not whole 5-byte records.*damaged"):
            store.read_statistics()
        assert store.read_statistics(histogram=False).num_edges == parts[5].u.shape[0]  # the rest still reads


def test_no_store_there(backend):
    url = backend.new_url()
    with pytest.raises(PathNotFound, match="create"):
        open_store(url)
    with open_store(url, create=True):
        pass
    with open_store(url, create=True) as store:  # create opens an existing store as it is
        assert store.stages() == {}


def test_foreign_database_is_refused_untouched(backend):
    url = backend.new_url()
    backend.raw(url, ["CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
                      "INSERT INTO customers VALUES (1, 'x')"])
    for create in (False, True):
        with pytest.raises(CorruptInput, match=r"not an affseg graph store.*customers"):
            open_store(url, create=create)
    backend.raw(url, ["SELECT count(*) FROM customers"])  # still there, still readable
    if backend.name == "sqlite":
        with sqlite3.connect(url) as conn:  # not switched to WAL either
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()


@pytest.mark.parametrize("version, dropped, match", [
    ("2", "affseg_fragments", "incomplete.*lacks affseg_fragments"),  # (version 2 had it)
    ("3", "affseg_block_graphs", "incomplete.*lacks affseg_block_graphs"),
    ("2", None, "schema version 2, this affseg reads version 3"),  # (version 2 lacked the block graphs)
    ("4", None, "schema version 4, this affseg reads version 3")])
def test_a_store_whose_tables_do_not_fit_its_version_is_refused(backend, version, dropped, match):
    url = backend.new_url()
    open_store(url, create=True).close()
    statements = [f"UPDATE affseg_meta SET value = '{version}' WHERE key = 'version'"]
    statements += [f"DROP TABLE {dropped}"] if dropped else []
    statements += ["CREATE TABLE affseg_of_a_later_version (x INTEGER)"] if version == "4" else []
    backend.raw(url, statements)
    for create in (False, True):
        with pytest.raises(CorruptInput, match=match):
            open_store(url, create=create)


def test_other_schema_version_or_damaged_schema_is_refused(backend):
    url = backend.new_url()
    open_store(url, create=True).close()
    backend.raw(url, ["UPDATE affseg_meta SET value = '99' WHERE key = 'version'"])
    with pytest.raises(CorruptInput, match="version 99"):
        open_store(url)
    backend.raw(url, ["UPDATE affseg_meta SET value = '1' WHERE key = 'version'", "DROP TABLE affseg_lookups"])
    with pytest.raises(CorruptInput, match=r"incomplete.*affseg_lookups"):
        open_store(url, create=True)
    url = backend.new_url()
    open_store(url, create=True).close()
    backend.raw(url, ["CREATE TABLE extra (x INTEGER)"])
    with pytest.raises(CorruptInput, match="extra"):
        open_store(url)


def test_sqlite_files_that_are_not_stores(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just some bytes" * 100)
    for create in (False, True):
        with pytest.raises(CorruptInput, match=f"{junk}.*not a SQLite database"):
            open_store(junk, create=create)
    assert junk.read_bytes().startswith(b"this is not")
    with pytest.raises(InputError, match="folder"):
        open_store(tmp_path, create=True)
    with pytest.raises(PathNotFound, match="folder"):
        open_store(tmp_path / "missing" / "store.sqlite", create=True)
    with pytest.raises(PathNotFound):
        open_store(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


def test_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.sqlite", create=True) as store:
        assert store.backend == "SQLite" and store.url == str(tmp_path / "relative.sqlite")
    with open_store(f"sqlite:///{tmp_path}/absolute.sqlite", create=True):
        pass
    assert (tmp_path / "absolute.sqlite").exists()
    with open_store(tmp_path / "path.sqlite", create=True) as store:
        assert store.url == str(tmp_path / "path.sqlite")
    assert default_store_path(tmp_path / "out.zarr") == tmp_path / "out.zarr.graph.sqlite"
    for url in ("mongodb://localhost/db", "sqlite://", "", None, 3):
        with pytest.raises(InputError):
            open_store(url)


def test_wal_mode(tmp_path):
    path = tmp_path / "store.sqlite"
    open_store(path, create=True).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_postgresql_urls_that_do_not_answer():
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'affseg[postgresql]')")
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(InputError, match=rf"cannot connect.*user:\*\*\*@127\.0\.0\.1:{port}/db") as caught:
        open_store(f"postgresql://user:secret@127.0.0.1:{port}/db", create=True)
    assert "secret" not in str(caught.value)
    with pytest.raises(InputError, match="malformed PostgreSQL URL"):
        open_store("postgresql://host/db?nonsense_option=1")
    with pytest.raises(InputError):
        open_store("postgresql://127.0.0.1:notaport/db")
    assert time.monotonic() - started < 20


def test_postgresql_database_that_does_not_exist(postgres_server):
    url = postgres_server.base_url + "/no_such_database"
    with pytest.raises(InputError, match="no_such_database"):
        open_store(url, create=True)


def test_postgresql_store_in_a_schema_of_a_shared_database(postgres_server):
    url = postgres_server.new_database()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
        conn.execute("CREATE SCHEMA graph")
    with pytest.raises(CorruptInput, match=r"customers.*search_path"):
        open_store(url, create=True)
    in_schema = url + "?options=-csearch_path%3Dgraph"
    with open_store(in_schema, create=True) as store:
        store.begin_stage("region_graph", IDENTITY)
        store.write_block(0, random_statistics(0))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM graph.affseg_done").fetchone()[0] == 1
    with pytest.raises(InputError, match="no current schema"):
        open_store(url + "?options=-csearch_path%3Dabsent", create=True)


def test_missing_psycopg_is_a_clear_error():
    """Run in a process where psycopg cannot be imported (as where the extra is not installed)."""
    code = textwrap.dedent("""
        import sys
        sys.modules["psycopg"] = None  # import psycopg -> ImportError
        from affseg.blockwise.store import open_store
        from affseg.errors import InputError
        try:
            open_store("postgresql://u:pw@127.0.0.1:1/db")
        except InputError as error:
            print(error)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "psycopg" in out.stdout and "affseg[postgresql]" in out.stdout and "pw" not in out.stdout
