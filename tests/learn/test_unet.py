"""U-Net shapes, heads and translation equivariance."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.learn.unet import UNet

CONFIGS = [
    dict(downsample_factors=[(1, 2, 2), (2, 2, 2)], kernel_sizes=[(1, 3, 3), (3, 3, 3), (3, 3, 3)]),
    dict(downsample_factors=[(1, 3, 3)], upsampling="transposed"),
    dict(downsample_factors=[2, 2], dims=2),
    dict(downsample_factors=[(2, 2)], padding="same", upsampling="transposed"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_shape_helpers_agree_with_forward(config):
    torch.manual_seed(0)
    net = UNet(1, 3, 2, heads={"affs": 3, "lsds": 6}, **config)
    wanted = (4, 12, 12)[-net.dims:] if net.padding == "valid" else (8, 8)
    output = net.valid_output_shapes_near(wanted)[-1]
    shape = net.input_shape(output)
    assert net.output_shape(shape) == output
    with torch.no_grad():
        out = net(torch.rand(2, 1, *shape))
    assert set(out) == {"affs", "lsds"}
    assert tuple(out["affs"].shape) == (2, 3) + output
    assert tuple(out["lsds"].shape) == (2, 6) + output
    assert float(out["affs"].min()) >= 0 and float(out["affs"].max()) <= 1


def test_impossible_shapes_are_rejected_with_neighbours():
    net = UNet(1, 2, 2, [(1, 2, 2), (1, 2, 2)])
    with pytest.raises(ValueError, match=r"divisible.*valid input shapes near it"):
        net.output_shape((10, 49, 49))
    with pytest.raises(ValueError, match=r"no input gives the output shape \(2, 7, 7\)"):
        net.input_shape((2, 7, 7))
    with pytest.raises(ValueError, match="too small"):
        net.output_shape((3, 40, 40))
    with pytest.raises(ValueError, match="batch, channels"):
        net(torch.zeros(1, 20, 40, 40))


@pytest.mark.parametrize("bad", [dict(padding="full"), dict(upsampling="bilinear"), dict(num_fmaps=0),
                                 dict(kernel_sizes=[3, 3]), dict(kernel_sizes=4), dict(heads={"affs": 0})])
def test_bad_parameters(bad):
    with pytest.raises(ValueError):
        UNet(**{**dict(in_channels=1, num_fmaps=2, fmap_inc_factor=2, downsample_factors=[(1, 2, 2)]), **bad})


@pytest.mark.parametrize("upsampling", ["constant", "transposed"])
def test_valid_unet_is_translation_equivariant(upsampling):
    """Crops shifted by a multiple of the total downsampling factor give the same outputs."""
    torch.manual_seed(1)
    net = UNet(1, 3, 2, [(1, 2, 2), (2, 2, 2)], upsampling=upsampling).double().eval()
    step = np.array(net.total_factor)
    small = net.input_shape(net.valid_output_shapes_near((2, 8, 8))[-1])
    big = tuple(int(s) for s in np.array(small) + 2 * step)
    x = torch.rand(1, 1, *big, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x)["affs"]
        shift = tuple(int(s) for s in step)
        crop = net(x[(slice(None), slice(None)) + tuple(slice(s, s + n) for s, n in zip(shift, small))])["affs"]
    out_small = crop.shape[2:]
    expected = whole[(slice(None), slice(None)) + tuple(slice(s, s + n) for s, n in zip(shift, out_small))]
    torch.testing.assert_close(crop, expected)


def test_context_is_input_minus_output():
    net = UNet(1, 2, 2, [(1, 2, 2), (1, 2, 2)], kernel_sizes=3)
    out = net.valid_output_shapes_near((4, 20, 20))[-1]
    assert tuple(np.array(net.input_shape(out)) - np.array(out)) == tuple(net.context_total())
