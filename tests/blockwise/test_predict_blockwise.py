"""predict blockwise: the one-process tiled prediction's bits, one model load per worker, resumable."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import kill_when_done

pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")
pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
from learn.test_train_predict import small_config

from affseg.blockwise.engine import Engine
from affseg.blockwise.predict import predict_to_zarr
from affseg.errors import InputError, OutputExists, PathNotFound
from affseg.io import open_volume, read_volume, write_volume
from affseg.learn.predict import predict
from affseg.learn.train import train
from affseg.synthetic import make_volume

TILE = (4, 12, 12)  # the tile step of small_config's network at this tile: (4, 12, 12)
SHAPE = (10, 40, 38)  # not a multiple of the step: the last tiles and blocks are cut


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A 1-iteration checkpoint (affs and lsds heads), a raw volume and its one-process prediction."""
    tmp = tmp_path_factory.mktemp("bwpredict")
    ckpt = train(small_config(tmp, iterations=1), tmp / "run").last_checkpoint
    write_volume(tmp / "raw.zarr" / "raw", make_volume(SHAPE, seed=4).raw)
    raw = str(tmp / "raw.zarr" / "raw")
    written = predict(ckpt, raw, tmp / "ref.zarr", tile=TILE)
    reference = {name: read_volume(path)[0] for name, path in written.items()}
    attrs = {name: dict(open_volume(path).data.attrs) for name, path in written.items()}
    return ckpt, raw, reference, attrs


def _assert_like_reference(out, reference, attrs):
    assert sorted(p.name for p in out.iterdir()) == ["affs", "lsds", "zarr.json"]  # nothing staged left
    for name in ("affs", "lsds"):
        np.testing.assert_array_equal(read_volume(out / name)[0], reference[name], err_msg=name)
        assert dict(open_volume(out / name).data.attrs) == attrs[name]


@pytest.mark.parametrize("workers", [0, 2])
def test_blockwise_prediction_equals_one_process_bit_for_bit_with_one_load_per_worker(tmp_path, job, workers):
    ckpt, raw, reference, attrs = job
    out = tmp_path / "pred.zarr"
    with Engine(workers=workers) as engine:
        summary = predict_to_zarr(ckpt, raw, out, block_shape=(4, 24, 12), engine=engine, tile=TILE)
    assert summary["blocks"] == 3 * 2 * 4 and summary["computed"] == 24 and summary["step"] == [4, 12, 12]
    _assert_like_reference(out, reference, attrs)
    assert open_volume(out / "affs").data.chunks == (3, 4, 24, 12)  # chunks are the blocks
    # each process that predicted blocks loaded the checkpoint once (24 blocks, 1 or 2 processes)
    assert 1 <= summary["processes"] <= max(1, workers) and summary["model_loads"] == summary["processes"]
    again = predict_to_zarr(ckpt, raw, out, block_shape=(4, 24, 12), tile=TILE)  # finished: nothing to do
    assert again["computed"] == 0
    _assert_like_reference(out, reference, attrs)


def test_a_block_of_the_whole_volume_and_a_2d_network_over_a_stack(tmp_path, job):
    ckpt, raw, reference, attrs = job
    summary = predict_to_zarr(ckpt, raw, tmp_path / "one.zarr", block_shape=(12, 48, 48), tile=TILE)
    assert summary["blocks"] == 1  # a block beyond the volume spans it
    _assert_like_reference(tmp_path / "one.zarr", reference, attrs)
    # a 2D network over a (z, y, x) stack: blocks of whole sections' tiles, a first z channel of 0
    vol = make_volume((3, 48, 48), seed=3)
    write_volume(tmp_path / "d.zarr" / "raw", vol.raw)
    write_volume(tmp_path / "d.zarr" / "labels", vol.labels)
    cfg = {"data": {"train": [{"raw": str(tmp_path / "d.zarr" / "raw"), "labels": str(tmp_path / "d.zarr" / "labels")}],
                    "min_labelled": 0.1},
           "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[2, 2]], "output_shape": [20, 20]},
           "targets": {"offsets": [[-1, 0], [0, -1], [0, -3]]}, "augment": {"elastic_sigma": 0.0},
           "train": {"iterations": 1, "seed": 0, "device": "cpu"}}
    ckpt2d = train(cfg, tmp_path / "run2d").last_checkpoint
    address = str(tmp_path / "d.zarr" / "raw")
    one = read_volume(predict(ckpt2d, address, tmp_path / "ref2d.zarr", tile=(16, 16))["affs"])[0]
    summary = predict_to_zarr(ckpt2d, address, tmp_path / "p2d.zarr", block_shape=(2, 32, 16), tile=(16, 16))
    assert summary["step"] == [1, 16, 16] and summary["blocks"] == 2 * 2 * 3
    blockwise = read_volume(tmp_path / "p2d.zarr" / "affs")[0]
    assert blockwise.shape == (4, 3, 48, 48) and not blockwise[0].any()
    np.testing.assert_array_equal(blockwise, one)
    assert open_volume(tmp_path / "p2d.zarr" / "affs").data.attrs["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1],
                                                                                [0, 0, -3]]


def _predict_job(ckpt, raw, out, store):
    # each tile slowed down, so that the kill lands mid-run
    return (f"import time\n"
            f"import affseg.learn.predict as P\n"
            f"real = P.predict_tile\n"
            f"P.predict_tile = lambda *a, **k: (time.sleep(0.05), real(*a, **k))[1]\n"
            f"from affseg.blockwise.engine import Engine\n"
            f"from affseg.blockwise.predict import predict_to_zarr\n"
            f"with Engine(workers=0) as engine:\n"
            f"    predict_to_zarr({str(ckpt)!r}, {raw!r}, {str(out)!r}, block_shape=(4, 12, 12), engine=engine, "
            f"store={str(store)!r}, tile={TILE!r})\n")


def test_a_killed_client_resumes_predicting_only_unfinished_blocks(tmp_path, job):
    ckpt, raw, reference, attrs = job
    out, store_path = tmp_path / "pred.zarr", tmp_path / "pred.sqlite"
    process = subprocess.Popen([sys.executable, "-c", _predict_job(ckpt, raw, out, store_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = kill_when_done(process, store_path, "predict:blocks", 8)
    assert 8 <= len(done) < 48, "the kill should land mid-run"
    assert not (out / "affs").exists() and (out / ".affs.partial").exists()
    summary = predict_to_zarr(ckpt, raw, out, block_shape=(4, 12, 12), store=str(store_path), tile=TILE)
    assert summary["blocks"] == 48 and summary["computed"] == 48 - len(done)
    _assert_like_reference(out, reference, attrs)
    again = predict_to_zarr(ckpt, raw, out, block_shape=(4, 12, 12), store=str(store_path), tile=TILE)
    assert again["computed"] == 0
    with pytest.raises(OutputExists, match="block_shape"):  # another layout in the same store
        predict_to_zarr(ckpt, raw, out, block_shape=(8, 12, 12), store=str(store_path), tile=TILE)
    with pytest.raises(OutputExists, match="device"):  # another device may differ in the last bits
        predict_to_zarr(ckpt, raw, out, block_shape=(4, 12, 12), store=str(store_path), tile=TILE, device="meta")


def test_a_raw_volume_or_checkpoint_that_changed_since_is_named(tmp_path, job):
    import shutil

    ckpt, raw, _, _ = job
    mine, data, out = tmp_path / "model.pt", tmp_path / "raw.zarr" / "raw", tmp_path / "pred.zarr"
    shutil.copyfile(ckpt, mine)
    original, _ = read_volume(raw)
    write_volume(data, original)
    predict_to_zarr(mine, str(data), out, block_shape=(4, 24, 12), tile=TILE)
    other = train(small_config(tmp_path, iterations=2), tmp_path / "run").last_checkpoint
    shutil.copyfile(other, mine)
    with pytest.raises(OutputExists, match=rf"the checkpoint {mine} changed \(its size or content differ\) since "
                                           r"the .*--overwrite"):
        predict_to_zarr(mine, str(data), out, block_shape=(4, 24, 12), tile=TILE)
    shutil.copyfile(ckpt, mine)
    write_volume(data, original[::-1].copy(), overwrite=True)
    with pytest.raises(OutputExists, match=rf"the input {data} changed \(its shape, dtype, chunks or metadata time "
                                           r"differ\) since the .*--overwrite"):
        predict_to_zarr(mine, str(data), out, block_shape=(4, 24, 12), tile=TILE)


def test_bad_input_is_refused_before_any_work(tmp_path, job):
    ckpt, raw, _, _ = job
    out = tmp_path / "out.zarr"
    cases = [
        (dict(block_shape=(4, 18, 12)), r"block shape \(4, 18, 12\) is not a multiple of the tile step \(4, 12, 12\) "
                                        r"along axis 1 \(18\).*12 or 24"),
        (dict(block_shape=(4, 12)), r"block_shape must hold 3 integers"),
        (dict(block_shape=(4, 0, 12)), r"block_shape\[1\]"),
        (dict(block_shape=(4, 12, 12), device=3), "device must be a string"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message):
            predict_to_zarr(ckpt, raw, out, tile=TILE, **options)
    write_volume(tmp_path / "in.zarr" / "flat", make_volume((1, 40, 40), seed=1).raw[0])
    write_volume(tmp_path / "in.zarr" / "ints", np.zeros((8, 24, 24), np.int32))
    write_volume(tmp_path / "in.zarr" / "affs", np.zeros((8, 24, 24), np.uint8))
    with pytest.raises(InputError, match=r"raw has shape \(40, 40\) but the network is 3D"):
        predict_to_zarr(ckpt, str(tmp_path / "in.zarr" / "flat"), out, block_shape=(12, 12), tile=TILE)
    with pytest.raises(InputError, match="uint8 or float"):
        predict_to_zarr(ckpt, str(tmp_path / "in.zarr" / "ints"), out, block_shape=(4, 12, 12), tile=TILE)
    with pytest.raises(InputError, match="would replace the input"):
        predict_to_zarr(ckpt, str(tmp_path / "in.zarr" / "affs"), tmp_path / "in.zarr", block_shape=(4, 12, 12),
                        tile=TILE)
    with pytest.raises(InputError, match="dataset address"):
        predict_to_zarr(ckpt, np.zeros(SHAPE, np.uint8), out, block_shape=(4, 12, 12), tile=TILE)
    with pytest.raises(InputError, match="zarr"):
        predict_to_zarr(ckpt, raw, tmp_path / "out.h5", block_shape=(4, 12, 12), tile=TILE)
    with pytest.raises(PathNotFound):
        predict_to_zarr(tmp_path / "missing.pt", raw, out, block_shape=(4, 12, 12), tile=TILE)
    with pytest.raises(InputError, match="engine must be"):
        predict_to_zarr(ckpt, raw, out, block_shape=(4, 12, 12), tile=TILE, engine="local")
    assert not out.exists() and not (tmp_path / "out.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr"]  # no store either
    write_volume(out / "affs", np.zeros((3, *SHAPE), np.float32))  # an earlier output, not this job's
    with pytest.raises(OutputExists):
        predict_to_zarr(ckpt, raw, out, block_shape=(4, 12, 12), tile=TILE)


def test_cli_predict_blockwise(tmp_path, job, capsys):
    from affseg.cli import main

    ckpt, raw, reference, attrs = job
    out = tmp_path / "pred.zarr"
    command = ["predict", str(ckpt), raw, str(out), "--tile", "4", "12", "12"]
    assert main([*command, "--blockwise", "--block-shape", "4,24,12", "--workers", "0"]) == 0
    assert "24 blocks, 24 predicted now" in capsys.readouterr().out
    _assert_like_reference(out, reference, attrs)
    assert main([*command, "--blockwise", "--block-shape", "4,24,12", "--workers", "0"]) == 0
    assert "0 predicted now" in capsys.readouterr().out
    assert main([*command, "--block-shape", "4,24,12"]) == 2
    assert "--block-shape needs --blockwise" in capsys.readouterr().err
    assert main([*command, "--blockwise"]) == 2
    assert "--blockwise needs --block-shape" in capsys.readouterr().err
    assert main([*command, "--blockwise", "--block-shape", "4,20,12", "--workers", "0", "--overwrite"]) == 2
    assert "not a multiple of the tile step (4, 12, 12)" in capsys.readouterr().err
    _assert_like_reference(out, reference, attrs)
