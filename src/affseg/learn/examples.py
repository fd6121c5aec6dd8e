"""Example training configs to start from: ``affseg train --example NAME > train.yaml``.

Each is a commented YAML text (the comments are the point: they say what to change for one's own
data); docs/training.md lists every key. Importing this module needs neither torch nor yaml.
"""
from __future__ import annotations

from ..errors import InputError

__all__ = ["EXAMPLE_NAMES", "example_text"]

EXAMPLE_NAMES = {
    "fibsem": "isotropic FIB-SEM (10 nm voxels), set to ../shared/data/neuroproof_train.h5, z < 100",
    "sstem": "anisotropic serial-section TEM (e.g. CREMI, 40 x 4 x 4 nm), MALA's U-Net",
    "2d": "single 2D images (one section each), e.g. ISBI 2012",
    "masks": "encoded central-instance masks + affinities (SNB+ENB, Bailoni et al. 2020) on the fibsem data",
}

_FIBSEM = """\
# affseg training config: isotropic FIB-SEM.
# As written it trains on ../shared/data/neuroproof_train.h5 (z 0-99; 100-149 held out for
# testing), from the affseg checkout. For your own data change data.train; every key is
# explained in docs/training.md. Relative paths are resolved against this file's folder.
data:
  train:
    # raw: uint8 or float; labels: uint64 object ids, 0 = unlabelled (ignored by the loss).
    # Each is a volume address: file.h5/dataset, or folder.zarr/array.
    - raw: ../shared/data/neuroproof_train.h5/raw
      labels: ../shared/data/neuroproof_train.h5/labels
      roi: [[0, 0, 0], [100, 250, 250]]   # (start, stop) voxels to sample from; omit for all
  min_labelled: 0.5          # redraw crops with less than this share of labelled voxels
model:
  # A small U-Net that trains on 2 CPU cores in minutes. On a GPU use num_fmaps: 12,
  # fmap_inc_factor: 5, three levels and output_shape: null (the largest valid shape near 48^3).
  num_fmaps: 8
  fmap_inc_factor: 3
  downsample_factors: [[2, 2, 2], [2, 2, 2]]
  output_shape: [20, 40, 40]  # a valid output shape of this model (null: choose one)
targets:
  # Affinity channels: the three nearest neighbours (for MALA fragments + agglomeration) and
  # long-range ones (for the Mutex Watershed and GASP). Channel c at voxel u is the affinity
  # between u and u + offset c; 1 = same object.
  offsets: [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-4, 0, 0], [0, -4, 0], [0, 0, -4]]
augment:
  # isotropic data: mirror and transpose every axis, elastic and rotation on
  mirror: true
  transpose: true
train:
  iterations: 1000           # about 6 minutes on 2 idle CPU cores; GPU runs go to 100k+
  learning_rate: 5.0e-4
  loss: mse                  # balanced MSE; add malis_start: N to switch to constrained MALIS
  checkpoint_every: 250
  seed: 0
  device: auto               # cuda when there is one, else cpu
"""

_SSTEM = """\
# affseg training config: anisotropic serial-section TEM (e.g. CREMI: 40 x 4 x 4 nm voxels).
# Change data.train to your volumes; every key is explained in docs/training.md.
data:
  train:
    # CREMI's files hold volumes/raw and volumes/labels/neuron_ids; list one entry per volume
    - raw: sample_A.h5/volumes/raw
      labels: sample_A.h5/volumes/labels/neuron_ids
  voxel_size: [40, 4, 4]     # overrides the files' metadata; decides the anisotropic augmentation
  grow_boundary: 1           # thin the objects by a voxel in-plane: sharper boundaries to learn
model:
  # MALA's U-Net (Funke et al. 2018): three levels that downsample in-plane first.
  num_fmaps: 12
  fmap_inc_factor: 5
  downsample_factors: [[1, 3, 3], [1, 3, 3], [3, 3, 3]]
  output_shape: null         # the valid output shape nearest to the default target
targets:
  # nearest neighbours, then long range in-plane and across two sections (for MWS / GASP)
  offsets: [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -9, 0], [0, 0, -9], [0, -27, 0], [0, 0, -27]]
augment:
  # serial sections: missing and low-contrast sections, as real stacks have
  missing_section: 0.05
  low_contrast: 0.05
train:
  iterations: 100000         # the papers' order of magnitude: a GPU run
  learning_rate: 5.0e-5      # MALA's Adam settings
  betas: [0.95, 0.999]
  loss: mse
  malis_start: null          # e.g. 50000 to finish with constrained MALIS
  checkpoint_every: 1000
  snapshot_every: 1000       # raw, targets and predictions into snapshots.zarr
  device: auto
"""

_2D = """\
# affseg training config: 2D images (each z-section on its own), e.g. ISBI 2012 from the
# affseg checkout. A 2D model is chosen by 2D offsets; an entry is a 2D image or a (z, y, x)
# stack, whose sections are then separate images (each crop comes from one section).
# Every key is explained in docs/training.md.
data:
  train:
    - raw: ../shared/data/isbi2012.h5/raw
      labels: ../shared/data/isbi2012.h5/labels_2d
model:
  num_fmaps: 12
  fmap_inc_factor: 3
  downsample_factors: [[2, 2], [2, 2]]
  output_shape: [120, 120]
targets:
  offsets: [[-1, 0], [0, -1], [-9, 0], [0, -9]]
train:
  iterations: 2000
  learning_rate: 5.0e-4
  loss: mse
  checkpoint_every: 250
  device: auto
"""

_MASKS = """\
# affseg training config: encoded central-instance masks (Bailoni et al. 2020) beside the usual
# affinities, on isotropic FIB-SEM: ../shared/data/neuroproof_train.h5 (z 0-99; 100-149 held out),
# from the affseg checkout. affseg predict then writes affs (the affinity head) and mask_affs with
# mask_affs_variance (affinities derived from the decoded masks); segment either with
# affseg segment --method mws. Every key is explained in docs/training.md.
data:
  train:
    - raw: ../shared/data/neuroproof_train.h5/raw
      labels: ../shared/data/neuroproof_train.h5/labels
      roi: [[0, 0, 0], [100, 250, 250]]
  min_labelled: 0.5
model:
  num_fmaps: 8
  fmap_inc_factor: 3
  downsample_factors: [[2, 2, 2], [2, 2, 2]]
  output_shape: [20, 40, 40]  # every branch factor must divide it
  type: snb+enb              # snb: affinities only; enb: masks only; snb+enb: both (the paper's best)
targets:
  offsets: [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-4, 0, 0], [0, -4, 0], [0, 0, -4], [0, -8, 0], [0, 0, -8]]
masks:
  # one latent map per branch: a mask window (odd sizes, in voxels of the branch grid) at a
  # downscale factor. Each offset's mask affinities come from the finest branch whose window
  # holds offset / factor: here the nearest neighbours from the first, the rest from the second.
  branches:
    - {window: [3, 5, 5], factor: [1, 1, 1]}
    - {window: [5, 7, 7], factor: [2, 4, 4]}
  latent_channels: 32        # Q, as the paper
  centres: 64                # masks decoded per crop and branch in training (never all voxels)
  readout: aggregate         # affseg predict: MaskAggr with variance; centre: the mask at each voxel
augment:
  mirror: true
  transpose: true
train:
  iterations: 1000
  learning_rate: 5.0e-4
  loss: mse                  # the affinity head's loss; the masks' Dice loss is added
  mask_loss_weight: 1.0
  checkpoint_every: 250
  seed: 0
  device: auto
"""

_TEXTS = {"fibsem": _FIBSEM, "sstem": _SSTEM, "2d": _2D, "masks": _MASKS}


def example_text(name: str) -> str:
    """The commented YAML text of an example config.

    Parameters
    ----------
    name : str
        One of :data:`EXAMPLE_NAMES`.

    Returns
    -------
    text : str
        A config that :func:`affseg.learn.config.load_config` accepts once written to a file.

    Raises
    ------
    InputError
        If ``name`` is not an example.
    """
    if name not in _TEXTS:
        raise InputError(f"no example config named {name!r}; the examples are {sorted(_TEXTS)}")
    return _TEXTS[name]
