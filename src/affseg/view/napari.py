"""napari layer data for affseg volumes (napari itself is not needed to make them)."""
from __future__ import annotations

import os
from collections.abc import Iterable

from .layers import close_layers, display_range, plan_layers

# affinity channels 0, 1, 2 in red, green, blue (as in the neuroglancer view); more channels in grey
_CHANNEL_COLOURS = ("red", "green", "blue")


def napari_layers(*addresses: str | os.PathLike, segmentation: Iterable[str | os.PathLike] = (),
                  image: Iterable[str | os.PathLike] = ()) -> list[tuple[object, dict, str]]:
    """napari layer-data tuples for volumes: ``viewer._add_layer_from_data(*t)`` or a reader's return value.

    Layers are chosen as by :func:`affseg.view`: images for raw data, one image per affinity
    channel (channels 0, 1, 2 in red, green, blue, blended additively), labels for integer
    segmentations; each with ``scale`` (voxel size, nm) and ``translate`` (offset, nm) from the
    volume's metadata. The data are the lazily read datasets themselves (a zarr array or an open
    h5py dataset), not copies. Use them as
    ``for data, kwargs, kind in napari_layers(...): getattr(viewer, f"add_{kind}")(data, **kwargs)``.

    Parameters
    ----------
    *addresses : str or path-like
        Datasets (``out.zarr/seg``, ``data.h5/raw``), or containers or groups: every dataset directly
        inside them.
    segmentation : iterable of str or path-like
        Datasets to show as labels whatever their dtype says (integer dtypes only); added if not in
        ``addresses``.
    image : iterable of str or path-like
        Datasets to show as images whatever their dtype says; added if not in ``addresses``.

    Returns
    -------
    layers : list of (data, dict, str)
        ``(data, kwargs, layer_type)`` with ``layer_type`` ``"image"`` or ``"labels"``, images
        first, in napari's layer-data tuple form.

    Raises
    ------
    InputError
        No volume, a float volume forced as segmentation, 2D and 3D volumes together, a unit that is
        not a length, an offset that is not a whole number of voxels.
    VolumeNotFound, CorruptInput
        As for :func:`affseg.open_volume`.
    """
    layers = plan_layers(addresses, segmentation=segmentation, image=image)
    result = []
    try:
        for layer in layers:
            common = {"name": layer.name, "scale": list(layer.voxel_size), "translate": list(layer.offset),
                      "metadata": {"address": layer.address, "kind": layer.kind, "units": "nm"}}
            data = layer.volume.data
            if layer.kind == "segmentation":
                result.append((data, {**common, "opacity": 0.5}, "labels"))
            elif layer.kind == "affinities":
                n = layer.channels
                low, high = display_range(layer)
                kwargs = {**common, "channel_axis": 0, "blending": "additive",
                          "name": [f"{layer.name}[{c}]" for c in range(n)],
                          "colormap": [_CHANNEL_COLOURS[c] if c < 3 else "gray" for c in range(n)],
                          "visible": [c < 3 for c in range(n)], "contrast_limits": [[low, high]] * n}
                result.append((data, kwargs, "image"))
            else:
                low, high = display_range(layer)
                result.append((data, {**common, "colormap": "gray", "contrast_limits": [low, high]}, "image"))
    except BaseException:
        close_layers(layers)
        raise
    return result
