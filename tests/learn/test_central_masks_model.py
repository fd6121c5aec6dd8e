"""Encoded central-instance masks, the network side: decoder, latent heads, centre sampling, the
masked Dice loss (gradcheck), a tiny ENB model that overfits one crop, and bad configs refused
before any work."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.central_masks import central_mask_targets, downscale_labels
from affseg.errors import InputError
from affseg.learn.central_masks import (
    CentralMaskUNet,
    MaskDecoder,
    add_sampled_masks,
    central_mask_loss,
    decoder_callable,
    sample_centres,
)
from affseg.learn.config import validate_config
from affseg.learn.losses import dice_loss, mask_dice_loss
from affseg.learn.train import build_model, train
from affseg.synthetic import make_volume


def enb_config(**sections) -> dict:
    cfg = {
        "data": {"train": [{"raw": "unused.zarr/raw", "labels": "unused.zarr/labels"}]},
        "model": {"num_fmaps": 4, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2]], "output_shape": [4, 12, 12],
                  "type": "enb"},
        "targets": {"offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -4, 0], [0, 0, -4]]},
        "masks": {"branches": [{"window": [3, 5, 5]}, {"window": [1, 5, 5], "factor": [1, 2, 2]}], "centres": 16,
                  "latent_channels": 8, "decoder_channels": 4},
    }
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    return cfg


# ---------------------------------------------------------------------- the Dice loss


def test_mask_dice_loss_has_correct_gradients():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand((3, 3, 5, 5), generator=gen, dtype=torch.float64).clamp(0.05, 0.95).requires_grad_()
    target = (torch.rand((3, 3, 5, 5), generator=gen, dtype=torch.float64) > 0.5).double()
    weights = (torch.rand((3, 3, 5, 5), generator=gen, dtype=torch.float64) > 0.3).double()
    for inverted in (True, False):
        assert torch.autograd.gradcheck(lambda p, inv=inverted: mask_dice_loss(p, target, weights, inverted=inv),
                                        (pred,), eps=1e-6, atol=1e-7)


def test_mask_dice_loss_known_values_and_ignored_voxels():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert float(mask_dice_loss(target, target)) == pytest.approx(0, abs=1e-6)
    # inverted: the "other" voxels are the foreground: p_other = (0, 0, 1, 0.5), t_other = (0, 0, 1, 1)
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.5]])
    assert float(mask_dice_loss(pred, target)) == pytest.approx(1 - 2 * 1.5 / (1.5 + 2), abs=1e-6)
    assert float(mask_dice_loss(pred, target, inverted=False)) == pytest.approx(1 - 2 * 2 / (2.5 + 2), abs=1e-6)
    # a wrong voxel with weight 0 changes nothing
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert float(mask_dice_loss(pred, target, weights)) == pytest.approx(0, abs=1e-6)
    # all masks form one channel of dice_loss
    assert torch.equal(mask_dice_loss(pred, target, inverted=False), dice_loss(pred[:, None], target[:, None]))
    with pytest.raises(InputError, match="differ in shape"):
        mask_dice_loss(pred, target[:, :3])


# ---------------------------------------------------------------------- decoder and model


@pytest.mark.parametrize("window", [(3, 5, 5), (5, 7)])
def test_decoder_outputs_masks_of_its_window_and_refuses_other_codes(window):
    torch.manual_seed(0)
    decoder = MaskDecoder(6, window, channels=3)
    masks = decoder(torch.randn(4, 6)).detach()
    assert masks.shape == (4, *window) and float(masks.min()) >= 0 and float(masks.max()) <= 1
    with pytest.raises(InputError, match=r"\(N, 6\) latent codes"):
        decoder(torch.randn(4, 5))
    decode = decoder_callable(decoder, batch_size=3)
    codes = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(decode(codes), decoder(torch.from_numpy(codes)).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="channels do not match the decoder"):
        decode(codes[:, :5])
    with pytest.raises(InputError, match="odd"):
        MaskDecoder(6, (4, 5))


def test_latent_maps_pool_the_features_by_the_branch_factor():
    """latents_i = latent head of the features averaged over the aligned factor blocks."""
    torch.manual_seed(0)
    net = CentralMaskUNet(1, 4, 2, [[1, 2, 2]], {"affs": 3}, branches=[((3, 5, 5), (1, 1, 1)), ((1, 3, 3), (1, 2, 2))],
                          latent_channels=5, decoder_channels=2).eval()
    out_shape = (4, 12, 12)
    x = torch.rand((1, 1, *net.input_shape(out_shape)))
    with torch.no_grad():
        outputs = net(x)
        features = net.features(x)[0].numpy()
        assert outputs["affs"].shape == (1, 3, *out_shape)
        assert outputs["latents_0"].shape == (1, 5, *out_shape)
        assert outputs["latents_1"].shape == (1, 5, 4, 6, 6)
        pooled = features.reshape(4, 4, 6, 2, 6, 2).mean(axis=(3, 5))
        expected = net.latent_heads[1](torch.from_numpy(pooled)[None])[0].numpy()
    np.testing.assert_allclose(outputs["latents_1"][0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert net.mask_factor == (1, 2, 2)


def test_build_model_makes_the_heads_of_each_model_type():
    snb = build_model(validate_config(enb_config(model={"type": "snb"})))
    assert not hasattr(snb, "branches") and set(snb.head_channels) == {"affs"}
    enb = build_model(validate_config(enb_config()))
    assert enb.head_channels == {} and len(enb.decoders) == 2
    assert [(d.window, d.latent_channels) for d in enb.decoders] == [((3, 5, 5), 8), ((1, 5, 5), 8)]
    both = build_model(validate_config(enb_config(model={"type": "snb+enb"}, targets={"lsd_sigma": 2.0})))
    assert both.head_channels == {"affs": 5, "lsds": 10}
    default = validate_config(enb_config(masks={"branches": None}, targets={"offsets": [[-1, 0, 0], [0, -3, 0]]}))
    assert build_model(default).branches == [((5, 7, 7), (1, 1, 1))]


# ---------------------------------------------------------------------- sampling and targets


def test_sampled_centres_are_distinct_grid_voxels_labelled_first():
    labels = np.zeros((4, 8, 8), np.uint64)
    labels[:, :4] = 1
    labels[:, 4:, :2] = 2  # grid (factor (1, 2, 2)) voxels [g*2+1]: labelled where y < 2 or x < 1
    grid = downscale_labels(labels, (1, 2, 2))
    rng = np.random.default_rng(0)
    centres = sample_centres(labels, (1, 2, 2), 30, rng)
    assert centres.shape == (30, 3) and len({tuple(c) for c in centres}) == 30
    values = grid[tuple(centres.T)]
    labelled = int((grid != 0).sum())
    assert labelled == 40 and np.all(values[:30] != 0)
    everything = sample_centres(labels, (1, 2, 2), 64, rng)
    assert sorted(map(tuple, everything)) == sorted(np.ndindex(grid.shape))
    assert np.all(grid[tuple(everything[:labelled].T)] != 0) and np.all(grid[tuple(everything[labelled:].T)] == 0)
    with pytest.raises(InputError, match="cannot sample 65 mask centres"):
        sample_centres(labels, (1, 2, 2), 65, rng)


def test_sampled_masks_are_the_decoded_codes_of_the_centres_and_their_targets():
    cfg = validate_config(enb_config(train={"seed": 3}))
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    vol = make_volume((4, 12, 12), seed=1)
    labels = torch.from_numpy(vol.labels.astype(np.int64))[None].repeat(2, 1, 1, 1)
    raw = torch.rand((2, 1, *net.input_shape((4, 12, 12))))
    batch = {"raw": raw, "labels": labels}
    with torch.no_grad():
        outputs = net(raw)
        add_sampled_masks(net, outputs, batch, cfg, iteration=5)
    rng = np.random.default_rng([3, 5, 1])  # the documented seed: (train.seed, iteration)
    for i, (window, factor) in enumerate(net.branches):
        assert outputs[f"masks_{i}"].shape == (2 * 16, *window)
        for b in range(2):
            centres = sample_centres(vol.labels, factor, 16, rng)
            target, weight = central_mask_targets(vol.labels, centres, window=window, factor=factor)
            np.testing.assert_array_equal(batch[f"masks_{i}"][16 * b:16 * (b + 1)].numpy(), target)
            np.testing.assert_array_equal(batch[f"masks_{i}_weights"][16 * b:16 * (b + 1)].numpy(), weight)
            codes = outputs[f"latents_{i}"][b][(slice(None),) + tuple(torch.from_numpy(c) for c in centres.T)].T
            with torch.no_grad():
                torch.testing.assert_close(outputs[f"masks_{i}"][16 * b:16 * (b + 1)], net.decoders[i](codes))


@pytest.fixture
def one_thread():
    """Small networks train fastest on one thread (and threads spin against a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_tiny_enb_model_overfits_one_crop(one_thread):
    """200 Adam steps on one 2D crop (about 3 s): the decoded masks of all its centres reach Dice > 0.9."""
    torch.manual_seed(0)
    cfg = validate_config({
        "data": {"train": [{"raw": "unused.zarr/raw", "labels": "unused.zarr/labels"}]},
        "model": {"num_fmaps": 16, "fmap_inc_factor": 2, "downsample_factors": [[2, 2]], "output_shape": [16, 16],
                  "type": "enb"},
        "targets": {"offsets": [[-1, 0], [0, -1]]},
        "masks": {"branches": [{"window": [5, 5]}], "centres": 256, "latent_channels": 16, "decoder_channels": 8,
                  "boundary_margin": 0},
    })
    net = build_model(cfg)
    out = (16, 16)
    inp = net.input_shape(out)
    vol = make_volume((1, 64, 64), seed=3)
    margin = (np.array(inp) - np.array(out)) // 2
    raw = torch.from_numpy(vol.raw[0, :inp[0], :inp[1]].astype(np.float32) / 255)[None, None]
    labels = vol.labels[0, margin[0]:margin[0] + out[0], margin[1]:margin[1] + out[1]].astype(np.int64)
    assert len(np.unique(labels)) >= 3
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for iteration in range(1, 201):
        batch = {"raw": raw, "labels": torch.from_numpy(labels)[None]}
        outputs = net(raw)
        add_sampled_masks(net, outputs, batch, cfg, iteration)
        loss = central_mask_loss(cfg, outputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    net.eval()
    centres = np.argwhere(np.ones(out, bool))
    with torch.no_grad():
        latents = net(raw)["latents_0"][0].numpy()
    pred = decoder_callable(net.decoders[0])(latents[:, centres[:, 0], centres[:, 1]].T)
    target, weight = central_mask_targets(labels, centres, window=(5, 5), boundary_margin=0)
    p, t, w = (torch.from_numpy(a)[:, None] for a in (pred, target, weight))
    assert 1 - float(dice_loss(p, t, w)) > 0.9
    assert 1 - float(dice_loss(1 - p, 1 - t, w)) > 0.85  # the other objects' voxels too
    assert ((pred > 0.5) == (target > 0.5))[weight > 0].mean() > 0.95


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("masks", "model", "message"), [
    ({"branches": [{"window": [3, 4, 5]}]}, {}, r"masks.branches\[0\].window must be 3 odd positive sizes"),
    ({"branches": [{"window": [3, 5]}]}, {}, r"masks.branches\[0\].window must be 3 odd"),
    ({"branches": [{"window": [3, 5, 5], "size": 1}]}, {}, r"masks.branches\[0\] must be a mapping"),
    ({"branches": [{"window": [3, 5, 5], "factor": [1, 0, 2]}]}, {}, r"factor must be 3 positive integers"),
    ({"branches": []}, {}, "must list at least one branch"),
    ({"branches": [{"window": [3, 3, 3]}]}, {}, r"targets.offsets \(the affinities derived from the masks\): offset "
                                                r"\[0, -4, 0\] fits no branch"),
    ({"offsets": [[0, -3, 0]]}, {}, r"masks.offsets .*offset \[0, -3, 0\] fits no branch"),
    ({"offsets": [1, 2]}, {}, r"masks.offsets must be null or a list of 3-integer offsets, got \[1, 2\]"),
    ({"centres": 0}, {}, "masks.centres must be >= 1"),
    ({"latent_channels": 0}, {}, "masks.latent_channels must be >= 1"),
    ({"readout": "mean"}, {}, "masks.readout must be one of"),
    ({"boundary_margin": [1, 2]}, {}, "masks.boundary_margin must be an integer >= 0 or 3 of them"),
    ({}, {"type": "ENB"}, "model.type must be one of"),
    ({}, {"output_shape": [4, 11, 12]}, r"the factor \[1, 2, 2\] of masks.branches\[1\] does not divide the training "
                                        r"output shape \[4, 11, 12\]"),
    ({"centres": 145}, {}, r"masks.centres is 145 but the grid of masks.branches\[1\] .* has only 144 voxels"),
])
def test_bad_mask_configs_are_refused_naming_the_key(masks, model, message):
    with pytest.raises(InputError, match=message):
        validate_config(enb_config(masks=masks, model=model))


def test_a_resolved_output_shape_that_a_factor_does_not_divide_is_refused_before_writing(tmp_path):
    """With model.output_shape null the shape is chosen by train(); the factor check follows it."""
    cfg = enb_config(model={"output_shape": None},  # resolved to (8, 8, 8)
                     masks={"branches": [{"window": [3, 5, 5]}, {"window": [1, 3, 3], "factor": [1, 3, 3]}],
                            "offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0]]})
    with pytest.raises(InputError, match=r"factor \[1, 3, 3\] .* does not divide the training output shape \[8, 8, 8\]"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("train_keys", "message"), [
    ({"malis_start": 10}, "train.malis_start must be null with model.type enb"),
    ({"loss": "random_walker"}, "train.loss random_walker trains an affinity head"),
    ({"mask_loss_weight": -1}, "train.mask_loss_weight must be >= 0"),
])
def test_affinity_losses_need_an_affinity_head(train_keys, message):
    with pytest.raises(InputError, match=message):
        validate_config(enb_config(train=train_keys))
    if "mask_loss_weight" not in train_keys:
        validate_config(enb_config(model={"type": "snb+enb"}, train=train_keys))
