"""Encoded central-instance masks end to end: train (SNB+ENB, ENB; resume), predict mask-derived
affinities tile by tile (equal to one tile, and to decoding every mask at once), segment them."""
from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")
yaml = pytest.importorskip("yaml", reason="the learning tests need the 'train' extra (pyyaml)")

from affseg.central_masks import affinities_from_latents, affinities_from_masks
from affseg.cli import main
from affseg.errors import InputError
from affseg.io import open_volume, read_volume, write_volume
from affseg.learn.central_masks import MaskDecoder, decoder_callable
from affseg.learn.predict import predict
from affseg.learn.train import latest_checkpoint, load_checkpoint, train
from affseg.synthetic import make_volume

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -4, 0], [0, 0, -4]]


def mask_config(data, model_type="snb+enb", **train_keys) -> dict:
    return {
        "data": {"train": [{"raw": str(data / "raw"), "labels": str(data / "labels")}], "min_labelled": 0.1},
        "model": {"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2]], "output_shape": [4, 12, 12],
                  "type": model_type},
        "targets": {"offsets": OFFSETS},
        # the long-range offsets come from the coarse branch (the finest branch that holds them)
        "masks": {"branches": [{"window": [3, 3, 3]}, {"window": [1, 5, 5], "factor": [1, 2, 2]}], "centres": 8,
                  "latent_channels": 4, "decoder_channels": 2},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": 2, "checkpoint_every": 2, "seed": 1, "device": "cpu", **train_keys},
    }


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny networks run fastest on one thread (more spin against a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("central-masks") / "data.zarr"
    vol = make_volume((8, 22, 26), seed=0)  # y and x: not multiples of the tile step
    write_volume(folder / "raw", vol.raw)
    write_volume(folder / "labels", vol.labels)
    return folder


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    cfg = mask_config(data, snapshot_every=2)
    result = train(cfg, run)
    return result.last_checkpoint


def test_training_logs_the_dice_loss_and_snapshots_the_sampled_masks(checkpoint):
    run = checkpoint.parent.parent
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["mse", "mse"]
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["loss_affs"]) + float(r["loss_masks"]), rel=1e-6)
        assert 0 < float(r["loss_masks"]) <= 2  # two branches, each a Dice loss in [0, 1]
    snapshot = run / "snapshots.zarr" / "iteration_00000002"
    assert read_volume(snapshot / "pred_masks_0")[0].shape == (8, 3, 3, 3)
    assert read_volume(snapshot / "gt_masks_1")[0].shape == (8, 1, 5, 5)
    assert set(np.unique(read_volume(snapshot / "weights_masks_1")[0])) <= {0.0, 1.0}
    model, state = load_checkpoint(checkpoint)
    assert state["config"]["model"]["type"] == "snb+enb" and len(model.decoders) == 2


def test_a_resumed_enb_run_equals_an_uninterrupted_one(data, tmp_path):
    """The sampled centres follow (seed, iteration): 1 + 1 iterations give the weights of 2."""
    cfg = mask_config(data, "enb", iterations=2, checkpoint_every=1)
    train(cfg, tmp_path / "straight")
    cfg["train"]["iterations"] = 1
    train(cfg, tmp_path / "resumed")
    cfg["train"]["iterations"] = 2
    train(cfg, tmp_path / "resumed")
    straight, _ = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    resumed, _ = load_checkpoint(latest_checkpoint(tmp_path / "resumed"))
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    rows = list(csv.DictReader((tmp_path / "resumed" / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["dice", "dice"] and all(r["loss_affs"] == "" for r in rows)


@pytest.mark.parametrize("readout", ["aggregate", "centre"])
def test_predicting_tile_by_tile_equals_one_tile(checkpoint, data, tmp_path, readout):
    """Small tiles (each branch read with its halo) give the affinities of one tile over the volume."""
    small = predict(checkpoint, str(data / "raw"), tmp_path / "small.zarr", tile=[4, 8, 8], readout=readout)
    whole = predict(checkpoint, str(data / "raw"), tmp_path / "whole.zarr", tile=[8, 24, 28], readout=readout)
    assert set(small) == {"affs", "mask_affs", "mask_affs_variance"}
    assert np.all(np.array(open_volume(whole["mask_affs"]).data.chunks[1:]) >= (8, 22, 26))  # one tile
    for name in small:
        a, b = read_volume(small[name])[0], read_volume(whole[name])[0]
        assert a.shape == (5, 8, 22, 26)
        # the masks are decoded in batches of other sizes: float32 matrix products may differ in the last bits
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    affs = open_volume(small["mask_affs"])
    assert affs.data.attrs["offsets"] == OFFSETS and affs.data.attrs["readout"] == readout
    assert open_volume(small["mask_affs_variance"]).data.attrs["offsets"] == OFFSETS
    assert open_volume(small["affs"]).data.attrs["offsets"] == OFFSETS
    variance = read_volume(small["mask_affs_variance"])[0]
    assert (np.all(variance == 0) if readout == "centre" else variance.max() > 0)
    values = read_volume(small["mask_affs"])[0]
    assert 0 <= values.min() and values.max() <= 1 and np.all(values[3, :, :4] == 0)  # u + (0, -4, 0) outside


@pytest.mark.parametrize("readout", ["aggregate", "centre"])
def test_decoding_tile_by_tile_equals_decoding_every_mask_at_once(readout):
    """The decoder wrapped for numpy, through affinities_from_latents in small tiles, equals the
    masks of every grid voxel decoded at once and read by affinities_from_masks."""
    torch.manual_seed(0)
    window, factor = (3, 3, 5), (1, 2, 2)
    decoder = MaskDecoder(4, window, channels=2).eval()
    latents = np.random.default_rng(1).normal(size=(4, 3, 6, 7)).astype(np.float32)
    with torch.no_grad():
        all_masks = decoder(torch.from_numpy(latents.reshape(4, -1).T)).numpy().reshape((3, 6, 7) + window)
    offsets = [[-1, 0, 0], [0, -2, 0], [0, 0, 4], [1, 2, -2]]
    shape = (3, 11, 14)
    expected = affinities_from_masks(all_masks, offsets, factor=factor, readout=readout, shape=shape)
    got = affinities_from_latents(latents, decoder_callable(decoder, batch_size=5), offsets, window=window,
                                  factor=factor, readout=readout, tile_shape=(2, 2, 3), shape=shape)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="latent map's channels do not match the decoder"):
        affinities_from_latents(latents[:3], decoder_callable(decoder), offsets, window=window, factor=factor,
                                readout=readout, shape=shape)


def test_train_predict_and_segment_with_the_mutex_watershed_from_the_command_line(data, tmp_path, capsys):
    config = tmp_path / "enb.yaml"
    config.write_text(yaml.safe_dump(mask_config(data, "enb")))
    assert main(["train", str(config)]) == 0
    ckpt = latest_checkpoint(tmp_path / "enb")
    pred = tmp_path / "pred.zarr"
    assert main(["predict", str(ckpt), str(data / "raw"), str(pred), "--tile", "4", "8", "8"]) == 0
    assert sorted(p.name for p in pred.iterdir() if not p.name.startswith(".")) == \
        ["mask_affs", "mask_affs_variance", "zarr.json"]
    assert [p.name for p in pred.iterdir() if p.name.startswith(".")] == []  # the latents are gone
    assert main(["segment", str(pred / "mask_affs"), str(tmp_path / "seg.zarr" / "mws"), "--method", "mws"]) == 0
    seg = read_volume(tmp_path / "seg.zarr" / "mws" / "segmentation")[0]
    assert seg.shape == (8, 22, 26) and seg.max() > 0
    # the centre read-out on request; an existing output needs --overwrite
    assert main(["predict", str(ckpt), str(data / "raw"), str(pred), "--readout", "centre"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["predict", str(ckpt), str(data / "raw"), str(pred), "--readout", "centre", "--overwrite"]) == 0
    assert open_volume(pred / "mask_affs").data.attrs["readout"] == "centre"
    assert np.all(read_volume(pred / "mask_affs_variance")[0] == 0)


def test_predict_refuses_what_it_cannot_do(checkpoint, data, tmp_path, capsys):
    snb = train({**mask_config(data, "snb"), "masks": {}}, tmp_path / "snb").last_checkpoint
    with pytest.raises(InputError, match="readout applies to models with mask branches"):
        predict(snb, str(data / "raw"), tmp_path / "a.zarr", readout="centre")
    with pytest.raises(InputError, match=r"readout must be one of \('aggregate', 'centre'\)"):
        predict(checkpoint, str(data / "raw"), tmp_path / "b.zarr", readout="mean")
    assert not (tmp_path / "b.zarr").exists()
    write_volume(tmp_path / "in.zarr" / "mask_affs", read_volume(data / "raw")[0])
    with pytest.raises(InputError, match="would replace the input"):
        predict(checkpoint, str(tmp_path / "in.zarr" / "mask_affs"), tmp_path / "in.zarr")
    assert main(["predict", str(checkpoint), str(data / "raw"), str(tmp_path / "c.zarr"), "--blockwise",
                 "--block-shape", "8,24,24", "--workers", "0"]) == 2
    assert "mask branches" in capsys.readouterr().err
    assert not (tmp_path / "c.zarr" / "mask_affs").exists()


def test_a_2d_model_predicts_a_stack_section_by_section(tmp_path):
    """Over a (z, y, x) stack: per section the affinities of that 2D image, after a first
    [-1, 0, 0] channel of 0, the offsets written in 3D (as for an affinity head)."""
    vol = make_volume((2, 22, 26), seed=4)
    data = tmp_path / "d.zarr"
    write_volume(data / "stack", vol.raw)
    write_volume(data / "labels", vol.labels)
    for z in range(2):
        write_volume(data / f"section_{z}", vol.raw[z])
    cfg = {"data": {"train": [{"raw": str(data / "stack"), "labels": str(data / "labels")}], "min_labelled": 0.1},
           "model": {"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[2, 2]], "output_shape": [12, 12],
                     "type": "snb+enb"},
           "targets": {"offsets": [[-1, 0], [0, -1], [-6, 0], [0, -6]]},
           "masks": {"branches": [{"window": [3, 3]}, {"window": [5, 5], "factor": [3, 3]}], "centres": 8,
                     "latent_channels": 4, "decoder_channels": 2},
           "train": {"iterations": 1, "device": "cpu"}}
    ckpt = train(cfg, tmp_path / "run").last_checkpoint
    stack = predict(ckpt, str(data / "stack"), tmp_path / "stack.zarr", tile=[6, 6])
    singles = [predict(ckpt, str(data / f"section_{z}"), tmp_path / f"section_{z}.zarr", tile=[24, 28])
               for z in range(2)]
    written = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -6, 0], [0, 0, -6]]
    for name in ("affs", "mask_affs", "mask_affs_variance"):
        assert open_volume(stack[name]).data.attrs["offsets"] == written
        values = read_volume(stack[name])[0]
        assert values.shape == (5, 2, 22, 26) and np.all(values[0] == 0)
        for z, single in enumerate(singles):
            np.testing.assert_allclose(values[1:, z], read_volume(single[name])[0], rtol=0, atol=1e-6)
