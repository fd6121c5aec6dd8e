"""A synthetic volume written block by block (affseg.blockwise.synth, affseg synth --blockwise)."""
import numpy as np
import pytest
from conftest import kill_when_done

from affseg.conventions import affinities_from_labels
from affseg.errors import InputError, OutputExists
from affseg.io import read_volume, write_volume
from affseg.synthetic import worley_region

pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
from affseg.blockwise.engine import Engine
from affseg.blockwise.synth import STAGE, synthetic_to_zarr

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -5, 0], [0, 0, 4]]
SHAPE = (12, 60, 50)
NAMES = ("labels", "raw", "affs")


def _read(container):
    return {name: read_volume(container / name)[0] for name in NAMES}


@pytest.fixture(scope="module")
def whole():
    return worley_region(SHAPE, seed=5, offsets=OFFSETS, affs_dtype="uint8")


def _assert_equal(written, volume):
    for name in NAMES:
        np.testing.assert_array_equal(written[name], getattr(volume, name), err_msg=name)
        assert written[name].dtype == getattr(volume, name).dtype, name


@pytest.mark.parametrize("block_shape", [(4, 32, 32), (5, 24, 50), (12, 60, 50)])
def test_the_volume_does_not_depend_on_the_block_shape(tmp_path, whole, block_shape):
    out = tmp_path / "s.zarr"
    summary = synthetic_to_zarr(out, SHAPE, block_shape=block_shape, seed=5, offsets=OFFSETS)
    assert summary["computed"] == summary["blocks"] == int(np.prod([-(-n // b) for n, b in zip(SHAPE, block_shape)]))
    _assert_equal(_read(out), whole)  # the same bits as the whole volume in memory, whatever the blocks
    assert read_volume(out / "affs")[0].shape == (len(OFFSETS), *SHAPE)
    assert read_volume(out / "affs")[1].data.attrs["offsets"] == OFFSETS
    assert read_volume(out / "labels")[1].data.chunks == block_shape
    assert sorted(p.name for p in out.iterdir()) == ["affs", "labels", "raw", "zarr.json"]  # nothing staged left


def test_two_workers_in_any_order_write_the_same_bits(tmp_path, whole):
    with Engine(workers=2, order_seed=3) as engine:
        synthetic_to_zarr(tmp_path / "s.zarr", SHAPE, block_shape=(4, 16, 32), seed=5, offsets=OFFSETS, engine=engine)
    _assert_equal(_read(tmp_path / "s.zarr"), whole)


def test_content_labels_boundaries_and_noise():
    shape = (24, 80, 80)
    clean = worley_region(shape, seed=1, offsets=OFFSETS, noise=False)
    assert clean.labels.dtype == np.uint64 and clean.labels.min() > 0
    ids, sizes = np.unique(clean.labels, return_counts=True)
    assert 10 < len(ids) < 200 and np.median(sizes) > 1000  # objects tens of voxels across
    expected, _ = affinities_from_labels(clean.labels, OFFSETS)
    np.testing.assert_array_equal(clean.affs, expected)  # exactly the labels' affinities without noise
    noisy = worley_region(shape, seed=1, offsets=OFFSETS, affs_dtype="float32")
    np.testing.assert_array_equal(noisy.labels, clean.labels)
    inside, across = noisy.affs[expected == 1], noisy.affs[:, 1:, 1:, 1:][expected[:, 1:, 1:, 1:] == 0]
    assert inside.mean() > 0.7 and across.mean() < 0.3  # segmentable ...
    assert (inside < 0.5).mean() > 0.01 and (across > 0.5).mean() > 0.01  # ... with false splits and merges
    boundary = np.zeros(shape, bool)
    boundary[1:] |= clean.labels[1:] != clean.labels[:-1]
    boundary[:, 1:] |= clean.labels[:, 1:] != clean.labels[:, :-1]
    assert noisy.raw[boundary].mean() < noisy.raw[~boundary].mean() - 40  # dark membranes
    assert not np.array_equal(worley_region(shape, seed=2).labels, clean.labels)  # the seed matters


def _job(out, store):
    return (f"from affseg.blockwise.synth import synthetic_to_zarr\n"
            f"synthetic_to_zarr({str(out)!r}, (32, 128, 128), block_shape=(8, 32, 32), seed=7, store={str(store)!r})\n")


def test_a_killed_client_resumes_writing_only_unfinished_blocks(tmp_path):
    import subprocess
    import sys

    out, store = tmp_path / "s.zarr", tmp_path / "s.sqlite"
    job = subprocess.Popen([sys.executable, "-c", _job(out, store)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = kill_when_done(job, store, STAGE, 10)
    assert 10 <= len(done) < 64, "the kill should land within the blocks"
    assert not (out / "labels").exists() and (out / ".labels.partial").exists()  # nothing published yet
    summary = synthetic_to_zarr(out, (32, 128, 128), block_shape=(8, 32, 32), seed=7, store=store)
    assert summary["blocks"] == 64 and summary["computed"] == 64 - len(done)
    _assert_equal(_read(out), worley_region((32, 128, 128), seed=7, affs_dtype="uint8"))
    again = synthetic_to_zarr(out, (32, 128, 128), block_shape=(8, 32, 32), seed=7, store=store)
    assert again["computed"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["affs", "labels", "raw", "zarr.json"]
    with pytest.raises(OutputExists, match="seed"):  # another volume over this one needs overwrite
        synthetic_to_zarr(out, (32, 128, 128), block_shape=(8, 32, 32), seed=8, store=store)
    replaced = synthetic_to_zarr(out, (32, 128, 128), block_shape=(16, 64, 64), seed=8, store=store, overwrite=True)
    assert replaced["computed"] == 8
    np.testing.assert_array_equal(read_volume(out / "raw")[0], worley_region((32, 128, 128), seed=8).raw)


@pytest.mark.parametrize("options, match", [
    ({"block_shape": (4, 64, 32)}, r"block shape \(4, 64, 32\) exceeds the volume"),
    ({"block_shape": (4, 32)}, "block_shape must hold 3 integers"),
    ({"block_shape": (4, 0, 32)}, r"block_shape\[1\] must be >= 1"),
    ({"shape": (60, 50)}, r"3D, got shape \(60, 50\)"),
    ({"shape": (12, -1, 50)}, "positive sizes"),
    ({"seed": -1}, "seed must be in"),
    ({"affs_dtype": "int16"}, "affs_dtype must be 'float32' or 'uint8', got 'int16'"),
    ({"offsets": [[0, 0, 0]]}, "all zero"),
    ({"out": "s.h5"}, "blockwise outputs are zarr"),
    ({"engine": 2}, "engine must be an affseg.blockwise.engine.Engine, got int"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, options, match):
    options = {"shape": SHAPE, "block_shape": (4, 32, 32), **options}
    out = tmp_path / options.pop("out", "s.zarr")
    with pytest.raises(InputError, match=match):
        synthetic_to_zarr(out, options.pop("shape"), **options)
    assert list(tmp_path.iterdir()) == []


def test_outputs_it_did_not_write_are_refused(tmp_path):
    out = tmp_path / "s.zarr"
    write_volume(out / "raw", np.zeros(SHAPE, np.uint8))  # an affseg dataset without a store: not this job's
    with pytest.raises(OutputExists, match="overwrite"):
        synthetic_to_zarr(out, SHAPE, block_shape=(6, 30, 50))
    synthetic_to_zarr(out, SHAPE, block_shape=(6, 30, 50), overwrite=True)
    np.testing.assert_array_equal(read_volume(out / "raw")[0], worley_region(SHAPE).raw)
    import zarr

    foreign = tmp_path / "f.zarr"
    zarr.open_group(str(foreign), mode="w").create_array("labels", shape=(2, 2, 2), dtype="u1")
    with pytest.raises(OutputExists, match="not written by affseg"):
        synthetic_to_zarr(foreign, SHAPE, block_shape=(6, 30, 50), overwrite=True)


def test_cli_synth_blockwise(tmp_path, capsys):
    from affseg.cli import main

    out = tmp_path / "s.zarr"
    command = ["synth", str(out), "--shape", "12", "60", "50", "--seed", "5", "--offsets", str(OFFSETS)]
    assert main([*command, "--blockwise", "--block-shape", "4,32,32", "--workers", "0"]) == 0
    assert "12 blocks, 12 written now" in capsys.readouterr().out
    _assert_equal(_read(out), worley_region(SHAPE, seed=5, offsets=OFFSETS, affs_dtype="uint8"))
    assert main([*command, "--blockwise", "--block-shape", "4,32,32", "--workers", "0"]) == 0
    assert "0 written now" in capsys.readouterr().out
    assert main([*command, "--blockwise", "--block-shape", "4,32,32", "--workers", "0", "--affs-dtype",
                 "float32", "--overwrite"]) == 0
    affs = read_volume(out / "affs")[0]
    assert affs.dtype == np.float32 and 0 <= affs.min() and affs.max() <= 1
    assert main([*command, "--block-shape", "4,32,32"]) == 2
    assert "--block-shape needs --blockwise" in capsys.readouterr().err
    assert main([*command, "--blockwise"]) == 2
    assert "--blockwise needs --block-shape" in capsys.readouterr().err
    assert main([*command, "--blockwise", "--block-shape", "4,32,32", "--anisotropic"]) == 2
