"""A 2D/3D U-Net (Ronneberger 2015, Cicek 2016) as used by MALA, with shape arithmetic.

Valid padding (the MALA default) makes the network translation-equivariant for shifts that are
multiples of the product of the downsampling factors, which is what tiled prediction relies on;
:meth:`UNet.output_shape` and :meth:`UNet.input_shape` say which shapes the network takes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError

__all__ = ["UNet"]


def _per_dim(value, dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * dims if np.isscalar(value) else tuple(value)
    if len(values) != dims or any(int(v) != v or v < 1 for v in values):
        raise InputError(f"{name} must be a positive integer or {dims} of them, got {value!r}")
    return tuple(int(v) for v in values)


class _ConvBlock(nn.Sequential):
    def __init__(self, conv, in_channels: int, out_channels: int, kernel_sizes, padding: str):
        layers = []
        for kernel in kernel_sizes:
            pad = tuple(k // 2 for k in kernel) if padding == "same" else 0
            layers += [conv(in_channels, out_channels, kernel, padding=pad), nn.ReLU(inplace=True)]
            in_channels = out_channels
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with per-level anisotropic downsampling and one 1x1 head per output.

    Parameters
    ----------
    in_channels : int
        Channels of the raw input (1 for EM).
    num_fmaps : int
        Feature maps at the top level; level ``l`` has ``num_fmaps * fmap_inc_factor**l``.
    fmap_inc_factor : int
    downsample_factors : sequence of int or sequence of tuple of int
        One factor per level, e.g. ``[(1, 3, 3), (1, 3, 3), (3, 3, 3)]``; its length is the depth.
    heads : mapping of str to int
        Output name -> channels, e.g. ``{"affs": 3, "lsds": 10}``; each head is a 1x1 convolution
        followed by a sigmoid.
    dims : int, optional
        2 or 3; only needed when ``downsample_factors`` is empty or made of scalars.
    kernel_sizes : int, tuple of int, or sequence of them, optional
        Convolution kernel for every level, or one per level (``depth + 1``, top first), e.g.
        ``[(1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)]`` for anisotropic data. Default 3.
    num_convs : int
        Convolutions per level and side (2 as in the U-Net paper).
    padding : {"valid", "same"}
    upsampling : {"constant", "transposed"}
        Nearest-neighbour repetition, or a transposed convolution with kernel = stride = factor.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_fmaps: int = 12,
        fmap_inc_factor: int = 5,
        downsample_factors: Sequence = ((1, 3, 3), (1, 3, 3), (3, 3, 3)),
        heads: Mapping[str, int] | None = None,
        *,
        dims: int | None = None,
        kernel_sizes=3,
        num_convs: int = 2,
        padding: str = "valid",
        upsampling: str = "constant",
    ):
        super().__init__()
        if dims is None:
            dims = next((len(f) for f in downsample_factors if not np.isscalar(f)), 3)
        if dims not in (2, 3):
            raise InputError(f"the U-Net is 2D or 3D, not dims={dims}")
        if padding not in ("valid", "same"):
            raise InputError(f"padding must be 'valid' or 'same', got {padding!r}")
        if upsampling not in ("constant", "transposed"):
            raise InputError(f"upsampling must be 'constant' or 'transposed', got {upsampling!r}")
        for name, value in (("in_channels", in_channels), ("num_fmaps", num_fmaps),
                            ("fmap_inc_factor", fmap_inc_factor), ("num_convs", num_convs)):
            if int(value) != value or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        heads = dict(heads or {"affs": dims})
        if not heads or any(int(c) != c or c < 1 for c in heads.values()):
            raise InputError(f"heads must map names to positive channel counts, got {heads}")
        self.dims = dims
        self.padding = padding
        self.factors = [_per_dim(f, dims, "downsample factor") for f in downsample_factors]
        depth = len(self.factors)
        self.kernels = self._kernels(kernel_sizes, depth + 1, dims)
        self.num_convs = int(num_convs)
        self.head_channels = {str(k): int(v) for k, v in heads.items()}
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        fmaps = [num_fmaps * fmap_inc_factor**level for level in range(depth + 1)]
        convs = [[k] * self.num_convs for k in self.kernels]
        self.down = nn.ModuleList(
            _ConvBlock(conv, in_channels if level == 0 else fmaps[level - 1], fmaps[level], convs[level], padding)
            for level in range(depth + 1)
        )
        self.pool = nn.ModuleList(pool(f, stride=f) for f in self.factors)
        if upsampling == "transposed":
            transposed = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
            self.upsample = nn.ModuleList(
                transposed(fmaps[level + 1], fmaps[level + 1], f, stride=f) for level, f in enumerate(self.factors)
            )
        else:
            self.upsample = nn.ModuleList(nn.Upsample(scale_factor=f, mode="nearest") for f in self.factors)
        self.up = nn.ModuleList(
            _ConvBlock(conv, fmaps[level] + fmaps[level + 1], fmaps[level], convs[level], padding)
            for level in range(depth)
        )
        self.heads = nn.ModuleDict({name: conv(fmaps[0], c, 1) for name, c in self.head_channels.items()})

    @staticmethod
    def _kernels(kernel_sizes, levels: int, dims: int) -> list[tuple[int, ...]]:
        per_level = isinstance(kernel_sizes, Sequence) and len(kernel_sizes) > 0 and not np.isscalar(kernel_sizes[0])
        if per_level:
            if len(kernel_sizes) != levels:
                raise InputError(f"kernel_sizes needs one entry per level ({levels}), got {list(kernel_sizes)}")
            kernels = [_per_dim(k, dims, "kernel size") for k in kernel_sizes]
        else:
            kernels = [_per_dim(kernel_sizes, dims, "kernel size")] * levels
        if any(k % 2 == 0 for kernel in kernels for k in kernel):
            raise InputError(f"kernel sizes must be odd (centred), got {kernels}")
        return kernels

    # ------------------------------------------------------------------ shapes

    @property
    def total_factor(self) -> tuple[int, ...]:
        """Product of the downsampling factors: the step of translation equivariance."""
        return tuple(int(np.prod([f[d] for f in self.factors], dtype=np.int64)) for d in range(self.dims))

    def _shrink(self, level: int) -> np.ndarray:
        if self.padding == "same":
            return np.zeros(self.dims, np.int64)
        return self.num_convs * (np.array(self.kernels[level]) - 1)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """Spatial output shape for a spatial input shape; ValueError if the net cannot take it."""
        shape = np.array(_per_dim(input_shape, self.dims, "input shape"))
        sizes = []
        for level, factor in enumerate(self.factors):
            shape = shape - self._shrink(level)
            self._check_positive(shape, input_shape, f"after the convolutions of level {level}")
            if np.any(shape % factor):
                raise InputError(
                    f"input shape {tuple(input_shape)} cannot be taken: level {level} gives {tuple(int(v) for v in shape)}, "
                    f"not divisible by the downsampling factor {factor}; valid input shapes near it: "
                    f"{self.valid_input_shapes_near(input_shape)}"
                )
            sizes.append(shape)
            shape = shape // factor
        shape = shape - self._shrink(len(self.factors))
        self._check_positive(shape, input_shape, "at the bottom level")
        for level in reversed(range(len(self.factors))):
            shape = shape * self.factors[level] - self._shrink(level)
            self._check_positive(shape, input_shape, f"after the convolutions of level {level} (up)")
        return tuple(int(s) for s in shape)

    def input_shape(self, output_shape) -> tuple[int, ...]:
        """Spatial input shape that yields ``output_shape``; ValueError if none does."""
        wanted = np.array(_per_dim(output_shape, self.dims, "output shape"))
        shape = wanted.copy()
        for level in range(len(self.factors)):
            shape = shape + self._shrink(level)
            if np.any(shape % self.factors[level]):
                raise InputError(
                    f"no input gives the output shape {tuple(output_shape)}: the up path of level {level} "
                    f"needs {tuple(int(v) for v in shape)} to be divisible by {self.factors[level]}; valid output shapes "
                    f"near it: {self.valid_output_shapes_near(output_shape)}"
                )
            shape = shape // self.factors[level]
        shape = shape + self._shrink(len(self.factors))
        for level in reversed(range(len(self.factors))):
            shape = shape * self.factors[level] + self._shrink(level)
        return tuple(int(s) for s in shape)

    def valid_output_shapes_near(self, output_shape) -> list[tuple[int, ...]]:
        """The largest valid output shape <= ``output_shape`` and the smallest one above, per axis."""
        below, above = [], []
        for d, size in enumerate(_per_dim(output_shape, self.dims, "output shape")):
            ok = [s for s in range(1, size + 2 * self.total_factor[d] + 2) if self._valid_output_size(d, s)]
            below.append(max([s for s in ok if s <= size], default=min(ok)))
            above.append(min(s for s in ok if s >= size))
        return sorted({tuple(below), tuple(above)})

    def valid_input_shapes_near(self, input_shape) -> list[tuple[int, ...]]:
        """Input shapes of the output shapes near the one ``input_shape`` roughly gives."""
        rough = np.array(_per_dim(input_shape, self.dims, "input shape")) - self.context_total()
        rough = np.maximum(rough, 1)
        return [self.input_shape(s) for s in self.valid_output_shapes_near(tuple(rough))]

    def _valid_output_size(self, axis: int, size: int) -> bool:
        for level, factor in enumerate(self.factors):
            size += int(self._shrink(level)[axis])
            if size % factor[axis]:
                return False
            size //= factor[axis]
        return True

    def context_total(self) -> np.ndarray:
        """Input minus output shape (0 for same padding): the context the output needs."""
        one = np.ones(self.dims, np.int64)
        probe = self.valid_output_shapes_near(tuple(one))[-1]
        return np.array(self.input_shape(probe)) - np.array(probe)

    @staticmethod
    def _check_positive(shape, input_shape, where: str) -> None:
        if np.any(shape < 1):
            sizes = tuple(int(v) for v in shape)
            raise InputError(f"input shape {tuple(input_shape)} is too small for the U-Net: {sizes} {where}")

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(batch, in_channels, *input_shape)`` raw in [0, 1] -> {head: ``(batch, channels, *output_shape)``}."""
        x = self.features(x)
        return {name: torch.sigmoid(head(x)) for name, head in self.heads.items()}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, *input_shape)`` raw in [0, 1] -> the top level's feature maps
        ``(batch, num_fmaps, *output_shape)`` that the heads read."""
        if x.ndim != self.dims + 2:
            raise InputError(
                f"input must have the shape (batch, channels, {'z, ' if self.dims == 3 else ''}y, x), got {tuple(x.shape)}"
            )
        self.output_shape(tuple(x.shape[2:]))  # a clear error for shapes the net cannot take
        x = 2 * x - 1  # raw in [0, 1] -> [-1, 1], as the MALA/lsd pipelines feed it
        skips = []
        for level, pool in enumerate(self.pool):
            x = self.down[level](x)
            skips.append(x)
            x = pool(x)
        x = self.down[-1](x)
        for level in reversed(range(len(self.factors))):
            x = self.upsample[level](x)
            x = torch.cat([_center_crop(skips[level], x.shape[2:]), x], dim=1)
            x = self.up[level](x)
        return x


def _center_crop(x: torch.Tensor, shape) -> torch.Tensor:
    starts = [(s - t) // 2 for s, t in zip(x.shape[2:], shape)]
    return x[(slice(None), slice(None)) + tuple(slice(a, a + t) for a, t in zip(starts, shape))]
