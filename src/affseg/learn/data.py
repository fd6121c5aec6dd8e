"""Random training crops from zarr/HDF5 (or in-memory) volumes with augmentation and targets.

A :class:`CropSampler` draws a location with enough labelled voxels, reads raw and labels through
the same (augmented) geometry, and computes the targets of the network's output region:
affinities with their mask and balancing weights, and optionally LSDs. :class:`CropDataset`
wraps it for a torch DataLoader with worker processes (each worker opens its own file handles).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._checks import as_offsets
from ..conventions import affinities_from_labels
from ..errors import InputError
from .augment import Augment, apply_intensity, mirror_transpose, sample_transform, warp
from .targets import balance_weights, grow_boundary, local_shape_descriptors

__all__ = ["CropDataset", "CropSampler", "Source"]


@dataclass
class Source:
    """One training volume: raw and labels (addresses like ``f.h5/raw`` or arrays), optional mask.

    ``roi``: ``(start, stop)`` voxel bounds to sample from (e.g. to hold out validation slices).
    """

    raw: object
    labels: object
    mask: object = None
    roi: tuple | None = None
    _opened: dict = field(default_factory=dict, repr=False)

    def open(self):
        if not self._opened:
            raw, vs = open_array(self.raw)
            labels, _ = open_array(self.labels)
            mask, _ = open_array(self.mask) if self.mask is not None else (None, None)
            check_raw_dtype(raw, self.raw)
            if tuple(raw.shape) != tuple(labels.shape):
                raise InputError(f"labels {self.labels!r} have shape {tuple(labels.shape)}, raw {self.raw!r} "
                                 f"has {tuple(raw.shape)}: they must cover the same voxels")
            if mask is not None and tuple(mask.shape) != tuple(raw.shape):
                raise InputError(f"mask {self.mask!r} has shape {tuple(mask.shape)}, raw has {tuple(raw.shape)}")
            start, stop = (np.zeros(raw.ndim, int), np.array(raw.shape)) if self.roi is None else \
                (np.array(self.roi[0]), np.array(self.roi[1]))
            if start.shape != (raw.ndim,) or stop.shape != (raw.ndim,) or np.any(start < 0) \
                    or np.any(stop > raw.shape) or np.any(stop <= start):
                raise InputError(f"roi {self.roi} does not lie inside the volume of shape {tuple(raw.shape)}")
            self._opened = dict(raw=raw, labels=labels, mask=mask, voxel_size=vs, start=start, stop=stop)
        return self._opened

    def __getstate__(self):  # file handles stay in the process that opened them
        state = dict(self.__dict__)
        state["_opened"] = {}
        return state


def open_array(source) -> tuple[object, tuple[float, ...] | None]:
    """An array, or a lazily read volume address, with its voxel size (None for arrays)."""
    if isinstance(source, np.ndarray):
        return source, None
    from ..io import open_volume

    vol = open_volume(source)
    return vol.data, tuple(vol.voxel_size)


def check_raw_dtype(raw, name) -> None:
    if not (np.dtype(raw.dtype) == np.uint8 or np.dtype(raw.dtype).kind == "f"):
        raise InputError(f"raw {name if isinstance(name, str) else ''} must be uint8 or float, got dtype {raw.dtype}")


def read_padded(array, start, shape, fill=0):
    """``array[start:start+shape]`` with everything outside the array set to ``fill``."""
    start = np.asarray(start)
    stop = start + np.asarray(shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(stop, array.shape)
    out = np.full(tuple(shape), fill, dtype=array.dtype)
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        out[dst] = array[src]
    return out


def to_unit(raw: np.ndarray) -> np.ndarray:
    """uint8 / 255 or float as float32 (the dtype is checked when a volume is opened)."""
    return raw.astype(np.float32) / 255 if raw.dtype == np.uint8 else raw.astype(np.float32)


class CropSampler:
    """Draws augmented training samples.

    Parameters
    ----------
    sources : list of Source
    input_shape, output_shape : tuple of int
        The network's spatial input and output shapes (see ``UNet.input_shape``).
    offsets : (C, ndim) array_like of int
        Affinity neighbourhood of the targets.
    augment : Augment, optional
        Default: :class:`Augment` (mirror, transpose, elastic, rotation, intensity).
    voxel_size : tuple of float, optional
        Overrides the volumes' metadata; decides anisotropy and the LSD scale.
    lsd_sigma : float, optional
        Also compute 3D/2D LSDs with this sigma (world units).
    lsd_downsample : int
    grow_boundary : int
        Erode objects by this many voxels in-plane before computing targets.
    min_labelled : float
        Minimum fraction of labelled voxels in the output region; locations below it are
        redrawn (up to ``max_tries`` times, then a ValueError).
    """

    def __init__(self, sources, input_shape, output_shape, offsets, *, augment: Augment | None = None,
                 voxel_size=None, lsd_sigma=None, lsd_downsample: int = 1, grow_boundary: int = 0,
                 min_labelled: float = 0.5, max_tries: int = 100):
        if not sources:
            raise InputError("no training volumes given")
        self.sources = list(sources)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in output_shape)
        ndim = len(self.input_shape)
        if len(self.output_shape) != ndim or any(o > i for o, i in zip(self.output_shape, self.input_shape)):
            raise InputError(f"output shape {self.output_shape} must fit in the input shape {self.input_shape}")
        if any((i - o) % 2 for i, o in zip(self.input_shape, self.output_shape)):
            raise InputError(f"input {self.input_shape} and output {self.output_shape} must differ by even amounts")
        self.offsets = as_offsets(offsets, ndim)
        self.augment = augment if augment is not None else Augment()
        self.voxel_size = voxel_size
        self.lsd_sigma = lsd_sigma
        self.lsd_downsample = lsd_downsample
        self.grow_boundary = grow_boundary
        if not 0 <= min_labelled <= 1:
            raise InputError(f"min_labelled is a fraction in [0, 1], got {min_labelled}")
        self.min_labelled = min_labelled
        self.max_tries = max_tries

    def _voxel_size(self, source) -> np.ndarray:
        vs = self.voxel_size or source.open()["voxel_size"] or (1.0,) * len(self.input_shape)
        return np.asarray(vs, dtype=float)[-len(self.input_shape):]  # a stack of sections: in-plane

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One sample: ``raw`` (1, *input_shape) float32 and, over the output region, ``labels``
        (uint64), ``affs``, ``affs_mask``, ``affs_weights`` (C, ...) float32 and maybe ``lsds``."""
        for _ in range(self.max_tries):
            source = self.sources[rng.integers(len(self.sources))]
            sample = self._try(source, rng)
            if sample is not None:
                return sample
        raise InputError(
            f"no crop with at least {self.min_labelled:.0%} labelled voxels found in {self.max_tries} tries "
            f"(output shape {self.output_shape}); lower min_labelled or check the labels"
        )

    def _sections(self, source: Source, vol: dict) -> bool:
        """Whether the volume is a stack of 2D sections for a 2D network (one section per sample)."""
        ndim, data_ndim = len(self.input_shape), vol["raw"].ndim
        if data_ndim == ndim or (ndim == 2 and data_ndim == 3):
            return data_ndim != ndim
        raise InputError(f"training volume {source.raw!r} has shape {tuple(vol['raw'].shape)}: a {ndim}D "
                         f"network (as the offsets) needs {ndim}D volumes"
                         + (" or (z, y, x) stacks of 2D sections" if ndim == 2 else ""))

    def _try(self, source: Source, rng: np.random.Generator):
        vol = source.open()
        start, stop = vol["start"], vol["stop"]
        section = None
        if self._sections(source, vol):
            section = int(start[0] + rng.integers(stop[0] - start[0]))
            start, stop = start[1:], stop[1:]
        shape = np.array(self.input_shape)
        room = stop - start - shape
        # crops larger than the roi are centred on it and padded
        corner = start + np.where(room >= 0, [rng.integers(r + 1) if r >= 0 else 0 for r in room], room // 2)
        voxel_size = self._voxel_size(source)
        coords = sample_transform(self.input_shape, rng, self.augment)
        if coords is None:
            box, box_shape, local = corner, shape, None
        else:
            lo = np.floor(coords.reshape(len(shape), -1).min(axis=1)).astype(int) - 1
            hi = np.ceil(coords.reshape(len(shape), -1).max(axis=1)).astype(int) + 2
            box, box_shape = corner + lo, hi - lo
            local = coords - lo.reshape((-1,) + (1,) * len(shape))

        def crop(array, order, convert=None):
            """Read the box, convert, and sample it through the transform (if any)."""
            block = read_padded(array, box, box_shape) if section is None else \
                read_padded(array, (section, *box), (1, *box_shape))[0]
            block = block if convert is None else convert(block)
            return block if local is None else warp(block, local, order=order)

        labels = crop(vol["labels"], 0)
        mask = self._inside(start, stop, box, box_shape, local)
        if vol["mask"] is not None:
            mask &= crop(vol["mask"], 0, lambda m: (m != 0).astype(np.uint8)) != 0
        region = self._output_region()
        if np.mean((labels != 0)[region] & mask[region]) < self.min_labelled:
            return None  # raw is read only for accepted crops
        raw = crop(vol["raw"], 1, to_unit)
        anisotropic = len(shape) == 3 and voxel_size[0] > 1.5 * voxel_size[1:].max()
        raw, labels, mask = mirror_transpose([raw, labels, mask], rng, self.augment, anisotropic=anisotropic)
        raw = apply_intensity(raw, rng, self.augment)
        return self._targets(raw, labels, mask, voxel_size)

    def _output_region(self) -> tuple[slice, ...]:
        margin = (np.array(self.input_shape) - np.array(self.output_shape)) // 2
        return tuple(slice(m, m + o) for m, o in zip(margin, self.output_shape))

    @staticmethod
    def _inside(start, stop, box, shape, local):
        """Which voxels of the crop come from inside the volume's roi (the rest is padding)."""
        idx = [np.arange(b, b + s) for b, s in zip(box, shape)]
        inside = np.ones(tuple(int(s) for s in shape), bool)
        for axis, i in enumerate(idx):
            ok = (i >= start[axis]) & (i < stop[axis])
            inside &= ok.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        if local is None:
            return inside
        return warp(inside.astype(np.uint8), local, order=0) != 0

    def _targets(self, raw, labels, mask, voxel_size) -> dict[str, np.ndarray]:
        if self.grow_boundary:
            labels = grow_boundary(labels, self.grow_boundary, in_plane=labels.ndim == 3)
        affs, affs_mask = affinities_from_labels(labels, self.offsets, mask=mask)
        region = self._output_region()
        affs, affs_mask = affs[(slice(None),) + region], affs_mask[(slice(None),) + region]
        labelled = np.where(mask, labels, np.uint64(0))
        sample = {
            "raw": raw[None].astype(np.float32),
            "labels": labelled[region],
            "affs": affs,
            "affs_mask": affs_mask,
            "affs_weights": balance_weights(affs, affs_mask),
        }
        if self.lsd_sigma is not None:
            lsds = local_shape_descriptors(labelled, self.lsd_sigma, voxel_size=voxel_size,
                                           downsample=self.lsd_downsample)
            sample["lsds"] = lsds[(slice(None),) + region]
            sample["lsds_mask"] = np.broadcast_to(mask[region], lsds[(slice(None),) + region].shape).astype(np.float32)
        return sample


class CropDataset(torch.utils.data.IterableDataset):
    """An endless stream of batches as tensors, reproducible per iteration.

    The batch of iteration ``i`` is drawn from the seed ``(seed, i)`` whichever worker makes it:
    worker ``w`` of ``W`` makes iterations ``first + w``, ``first + w + W``, ... and the
    DataLoader (``batch_size=None``) returns them in order, so a resumed run sees the data an
    uninterrupted run would have seen.
    """

    def __init__(self, sampler: CropSampler, *, seed: int = 0, batch_size: int = 1, first_iteration: int = 1):
        super().__init__()
        self.sampler = sampler
        self.seed = seed
        self.batch_size = batch_size
        self.first = first_iteration

    def batch(self, iteration: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, iteration])
        samples = [self.sampler.sample(rng) for _ in range(self.batch_size)]
        return {k: torch.from_numpy(np.stack([_torch_dtype(s[k]) for s in samples])) for k in samples[0]}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        iteration = self.first + worker
        while True:
            yield self.batch(iteration)
            iteration += workers


def _torch_dtype(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64 if a.dtype == np.uint64 else a.dtype)
