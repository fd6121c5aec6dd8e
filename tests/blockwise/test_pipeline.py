"""Blockwise stages on zarr volumes with real worker processes (Dask LocalCluster)."""
import numpy as np
import pytest
from conftest import same_partition

from affseg import connected_components
from affseg.io import read_volume, write_volume
from affseg.synthetic import make_volume

pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
from affseg.blockwise.engine import Engine  # noqa: E402
from affseg.blockwise.pipeline import connected_components_to_zarr  # noqa: E402

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0], [0, 0, 3]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("bw") / "data.zarr"
    vol = make_volume((16, 64, 64), seed=8, offsets=OFFSETS)
    write_volume(path / "affs", vol.affs, axes=["c^", "z", "y", "x"], attrs={"offsets": OFFSETS}, chunks=(6, 8, 32, 32))
    mask = np.ones((16, 64, 64), np.uint8)
    mask[3:9, 20:40, :12] = 0
    write_volume(path / "mask", mask)
    return path, vol.affs, mask


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_connected_components_blockwise_equal_one_pass(tmp_path, data, workers):
    path, affs, mask = data
    out = tmp_path / "out.zarr" / "cc"
    with Engine(workers=workers) as engine:
        connected_components_to_zarr(str(path / "affs"), str(out), threshold=0.6, block_shape=(8, 32, 32),
                                     engine=engine, mask_address=str(path / "mask"))
    seg, _ = read_volume(out)
    whole = connected_components(affs, OFFSETS, threshold=0.6, mask=mask)
    assert same_partition(seg, whole) and ((seg == 0) == (whole == 0)).all()
    assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["cc", "zarr.json"]  # no scratch left


def test_a_scheduler_that_does_not_answer_is_named():
    from affseg.errors import InputError

    with pytest.raises(InputError, match="tcp://127.0.0.1:1"), Engine(scheduler="tcp://127.0.0.1:1", connect_timeout=1):
        pass
