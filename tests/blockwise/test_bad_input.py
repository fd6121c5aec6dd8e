"""Bad input to the blockwise stages: a clear affseg error naming the value, before any block runs,
with nothing left in (or beside) the output container.

Each case runs every stage function it applies to (threshold + connected components, the Mutex
Watershed, MALA) in this process (``Engine(workers=0)``: the checks happen in the client, before
any task is submitted).
"""
import sqlite3

import numpy as np
import pytest

from affseg.errors import CorruptInput, InputError, OutputExists
from affseg.io import read_volume, write_volume
from affseg.synthetic import make_volume

pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
from affseg.blockwise.engine import Engine
from affseg.blockwise.pipeline import connected_components_to_zarr, mala_to_zarr, mutex_watershed_to_zarr

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -4, 0], [0, 0, -4]]
SHAPE = (8, 32, 32)
BLOCKS = (4, 16, 16)
METHODS = ["cc", "mws", "mala"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "data.zarr"
    vol = make_volume(SHAPE, seed=3, offsets=OFFSETS)
    write_volume(path / "affs", vol.affs, axes=["c^", "z", "y", "x"], attrs={"offsets": OFFSETS}, chunks=(6, 4, 16, 16))
    write_volume(path / "odd", vol.affs, axes=["c^", "z", "y", "x"], attrs={"offsets": OFFSETS}, chunks=(6, 3, 16, 16))
    return path


def _segment(method, affs, out, engine, *, block_shape=BLOCKS, context=(2, 4, 4), store=None, overwrite=False,
             **options):
    if method == "cc":
        return connected_components_to_zarr(str(affs), str(out), threshold=options.get("threshold", 0.5),
                                            block_shape=block_shape, engine=engine, store=store, overwrite=overwrite)
    if method == "mws":
        return mutex_watershed_to_zarr(str(affs), str(out), block_shape=block_shape, context=context, engine=engine,
                                       store=store, overwrite=overwrite, bias=options.get("bias", 0.5))
    return mala_to_zarr(str(affs), str(out), thresholds=[0.5], block_shape=block_shape, context=context,
                        engine=engine, store=store, overwrite=overwrite,
                        fragment_options={"min_seed_distance": options.get("min_seed_distance", 4)})


def _refused(method, affs, out, error, match, **kwargs):
    """The call raises ``error`` matching ``match``; the output container and the default store
    beside it were not created."""
    with pytest.raises(error, match=match), Engine(workers=0) as engine:
        _segment(method, affs, out, engine, **kwargs)
    container = out.parent
    assert not container.exists(), sorted(p.name for p in container.iterdir())
    assert not container.with_name(container.name + ".graph.sqlite").exists()


def _done(method, affs, out, store, **options):
    with Engine(workers=0) as engine:
        return _segment(method, affs, out, engine, store=store, **options)


@pytest.mark.parametrize("method", METHODS)
def test_a_block_shape_beyond_the_volume(tmp_path, data, method):
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", InputError,
             r"block shape \(4, 64, 16\) exceeds the volume \(8, 32, 32\)", block_shape=(4, 64, 16))


@pytest.mark.parametrize("method", ["mws", "mala"])
def test_a_context_larger_than_the_block(tmp_path, data, method):
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", InputError,
             r"context \(2, 20, 4\) is larger than the block shape \(4, 16, 16\)", context=(2, 20, 4))


def test_no_context_to_stitch_the_mutex_watershed_in(tmp_path, data):
    _refused("mws", data / "affs", tmp_path / "out.zarr" / "seg", InputError, r"context \(2, 0, 4\) is 0 along axis 1",
             context=(2, 0, 4))


@pytest.mark.parametrize("method", METHODS)
def test_input_chunks_that_the_blocks_straddle(tmp_path, data, method):
    _refused(method, data / "odd", tmp_path / "out.zarr" / "seg", InputError,
             r"block shape \(4, 16, 16\) does not align with the chunks \(3, 16, 16\) of .*odd along axis 0")


@pytest.mark.parametrize("method", METHODS)
def test_an_hdf5_output(tmp_path, data, method):
    with pytest.raises(InputError, match=r"out\.h5/seg(/fragments)?: blockwise outputs are zarr"), Engine(workers=0) as engine:
        _segment(method, data / "affs", tmp_path / "out.h5" / "seg", engine)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("url,match", [
    ("mysql://user@host/affseg", r"unsupported graph store URL 'mysql://user@host/affseg'"),
    ("sqlite://relative.db", r"sqlite:///relative/path .* got 'sqlite://relative.db'"),
])
def test_a_wrong_database_url(tmp_path, data, method, url, match):
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", InputError, match, store=url)


def test_an_unreachable_postgresql_server(tmp_path, data):
    pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg 3")
    _refused("mws", data / "affs", tmp_path / "out.zarr" / "seg", InputError,
             r"cannot connect to the PostgreSQL graph store postgresql://nobody@127\.0\.0\.1:1/affseg",
             store="postgresql://nobody@127.0.0.1:1/affseg")


def test_a_scheduler_that_does_not_answer(tmp_path, data):
    out = tmp_path / "out.zarr" / "seg"
    with pytest.raises(InputError, match=r"Dask scheduler at tcp://127\.0\.0\.1:1 does not answer"), \
            Engine(scheduler="tcp://127.0.0.1:1", connect_timeout=1) as engine:
        mutex_watershed_to_zarr(str(data / "affs"), str(out), block_shape=BLOCKS, context=2, engine=engine)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method", METHODS)
def test_a_corrupt_store_file(tmp_path, data, method):
    store = tmp_path / "store.sqlite"
    store.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", CorruptInput,
             r"graph store .*store\.sqlite is not a SQLite database", store=str(store))


@pytest.mark.parametrize("method", METHODS)
def test_a_foreign_sqlite_file(tmp_path, data, method):
    store = tmp_path / "store.sqlite"
    with sqlite3.connect(store) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", CorruptInput,
             r"is not an affseg graph store: it holds other tables \(invoices\)", store=str(store))


@pytest.mark.parametrize("method,other,named", [
    ("cc", {"threshold": 0.7}, r"parameters\.threshold: stored 0\.5, now 0\.7"),
    ("mws", {"bias": 0.4}, r"parameters\.mws\.bias: stored 0\.5, now 0\.4"),
    ("mala", {"min_seed_distance": 5}, r"parameters\.fragments\.min_seed_distance: stored 4, now 5"),
])
def test_a_store_of_another_layout_or_other_parameters(tmp_path, data, method, other, named):
    store = str(tmp_path / "store.sqlite")
    _done(method, data / "affs", tmp_path / "first.zarr" / "seg", store)
    # the same store for a new output of the same name: its stages hold the first job's records
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", OutputExists,
             r"layout\.block_shape: stored \[4, 16, 16\], now \[8, 16, 16\].*overwrite", store=store,
             block_shape=(8, 16, 16))
    _refused(method, data / "affs", tmp_path / "out.zarr" / "seg", OutputExists, named, store=store, **other)


@pytest.mark.parametrize("method", METHODS)
def test_an_input_that_changed_since_the_store_was_written(tmp_path, data, method):
    affs = tmp_path / "data.zarr" / "affs"
    original, _ = read_volume(data / "affs")
    write_volume(affs, original, axes=["c^", "z", "y", "x"], attrs={"offsets": OFFSETS}, chunks=(6, 4, 16, 16))
    out = tmp_path / "out.zarr" / "seg"
    _done(method, affs, out, None)
    before = {p.relative_to(out.parent): p.stat().st_mtime_ns for p in out.parent.rglob("*")}
    write_volume(affs, original[:, ::-1].copy(), axes=["c^", "z", "y", "x"], attrs={"offsets": OFFSETS},
                 chunks=(6, 4, 16, 16), overwrite=True)
    with pytest.raises(OutputExists, match=rf"the input {affs} changed \(its shape, dtype, chunks or metadata time differ\) since the .* "
                                          r"recorded stage"), \
            Engine(workers=0) as engine:
        _segment(method, affs, out, engine)
    assert {p.relative_to(out.parent): p.stat().st_mtime_ns for p in out.parent.rglob("*")} == before  # untouched
    with Engine(workers=0) as engine:  # overwrite starts again
        summary = _segment(method, affs, out, engine, overwrite=True)
    assert all(count > 0 for count in summary["computed"].values())


@pytest.mark.parametrize("method", METHODS)
def test_an_output_that_is_not_this_jobs(tmp_path, data, method):
    import zarr

    out = tmp_path / "out.zarr" / "seg"
    first = "seg/fragments" if method == "mala" else "seg"
    write_volume(tmp_path / "out.zarr" / first, np.ones(SHAPE, np.uint64))  # affseg's, but no store says ours
    before = sorted(p.name for p in (tmp_path / "out.zarr").rglob("*"))
    with pytest.raises(OutputExists, match=rf"out\.zarr/{first} exists"), Engine(workers=0) as engine:
        _segment(method, data / "affs", out, engine)
    foreign = tmp_path / "foreign.zarr"
    zarr.create_array(store=str(foreign), name=first, shape=SHAPE, dtype="uint64")  # not written by affseg
    with pytest.raises(OutputExists, match="not written by affseg"), Engine(workers=0) as engine:
        _segment(method, data / "affs", foreign / "seg", engine, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out.zarr").rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.zarr", "out.zarr"]  # no store created


@pytest.mark.parametrize("method", METHODS)
def test_an_output_in_a_folder_not_made_yet_is_written_there(data, tmp_path, method):
    """As a one-pass output: the folders above the output container (and its default store) are
    made, where they used to fail with an IndexError."""
    out = tmp_path / "new" / "deeper" / "out.zarr" / "seg"
    with Engine(workers=0) as engine:
        _segment(method, data / "affs", out, engine)
    assert (tmp_path / "new" / "deeper" / "out.zarr.graph.sqlite").is_file()
    name = "threshold_0.5" if method == "mala" else None
    seg, _ = read_volume(out / name if name else out)
    assert seg.shape == SHAPE and seg.max() > 0
