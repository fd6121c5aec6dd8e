"""One test suite for every volume backend (zarr v3, HDF5)."""
import numpy as np
import pytest

from affseg.io import open_volume, parse_address, read_volume, volume_exists, write_volume


@pytest.fixture(params=["zarr", "hdf5"])
def container(request, tmp_path):
    return tmp_path / ("data.zarr" if request.param == "zarr" else "data.h5")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64, np.float32])
def test_round_trip_with_metadata(container, dtype):
    data = (np.arange(3 * 20 * 30) % 251).astype(dtype).reshape(3, 20, 30)
    address = container / "group" / "vol"
    write_volume(address, data, voxel_size=(40, 4, 4), offset=(80, 0, 8))
    with open_volume(address) as vol:
        assert vol.shape == data.shape and vol.dtype == dtype
        assert vol.voxel_size == (40.0, 4.0, 4.0) and vol.offset == (80.0, 0.0, 8.0)
        assert vol.axes == ("z", "y", "x") and vol.units == ("nm",) * 3
        np.testing.assert_array_equal(vol[1:2, 5:9, 10:], data[1:2, 5:9, 10:])  # lazy region
    np.testing.assert_array_equal(read_volume(address)[0], data)


def test_channel_axes(container):
    data = np.zeros((3, 2, 4, 5), np.float32)
    write_volume(container / "affs", data, axes=["c^", "z", "y", "x"], voxel_size=(1, 2, 3))
    with open_volume(container / "affs") as vol:
        assert vol.axes == ("c^", "z", "y", "x") and vol.voxel_size == (1.0, 2.0, 3.0)


def test_nothing_is_overwritten_without_overwrite(container):
    address = container / "vol"
    write_volume(address, np.zeros((2, 2), np.uint8))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_volume(address, np.ones((2, 2), np.uint8))
    np.testing.assert_array_equal(read_volume(address)[0], 0)
    write_volume(address, np.ones((3, 3), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_volume(address)[0], np.ones((3, 3)))


def test_missing_file_and_dataset_are_named(container):
    with pytest.raises(FileNotFoundError, match=str(container.name)):
        open_volume(container / "vol")
    write_volume(container / "vol", np.zeros((2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope"):
        open_volume(container / "nope")
    assert volume_exists(container / "vol") and not volume_exists(container / "nope")


@pytest.mark.parametrize("existing", [False, True])
def test_a_write_that_fails_at_the_end_changes_nothing(container, monkeypatch, existing):
    import h5py

    import affseg.io.volumes as volumes

    address = container / "a" / "vol"
    if existing:
        write_volume(address, np.zeros((4, 4), np.uint8))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # the data is fully written to a temporary node; the final rename fails
    if container.suffix == ".zarr":
        monkeypatch.setattr(volumes.os, "rename", lambda a, b: fail() if ".tmp-" in str(a) else _rename(a, b))
    else:
        real_move = h5py.Group.move
        monkeypatch.setattr(h5py.Group, "move", lambda self, a, b: fail() if b == "a/vol" and ".tmp-" in a
            and not a.endswith(".old") else real_move(self, a, b))
    with pytest.raises(OSError, match="disk full"):
        write_volume(address, np.ones((4, 4), np.uint8), overwrite=True)
    monkeypatch.undo()
    if existing:
        np.testing.assert_array_equal(read_volume(address)[0], 0)
    else:
        assert not volume_exists(address)
    _assert_no_temporaries(container)


def _rename(a, b):
    import os

    os.replace(a, b)


def _assert_no_temporaries(container):
    if container.suffix == ".zarr":
        names = [p.name for p in (container / "a").iterdir()]
        assert not [n for n in names if ".tmp-" in n or ".old-" in n], names
    else:
        import h5py

        with h5py.File(container) as f:
            assert not [n for n in f.get("a", {}) if ".tmp-" in n], list(f.get("a", {}))


def test_writes_leave_no_temporary_nodes(container):
    write_volume(container / "a" / "vol", np.zeros((2, 2), np.uint8))
    write_volume(container / "a" / "vol", np.ones((2, 2), np.uint8), overwrite=True)
    if container.suffix == ".zarr":
        assert sorted(p.name for p in (container / "a").iterdir()) == ["vol", "zarr.json"]
    else:
        import h5py

        with h5py.File(container) as f:
            assert list(f["a"]) == ["vol"]


def test_addresses():
    from pathlib import Path

    assert parse_address("x/y.zarr/a/b") == (Path("x/y.zarr"), "a/b", "zarr")
    assert parse_address("f.h5/raw")[2] == "hdf5"
    with pytest.raises(ValueError, match="no dataset"):
        parse_address("f.h5")
    with pytest.raises(ValueError, match="not a volume address"):
        parse_address("f.tif/raw")


def test_reads_the_shared_data(shared_data):
    with open_volume(shared_data / "isbi2012.h5" / "labels_2d") as vol:
        assert vol.dtype == np.uint64 and vol.shape == (30, 512, 512)
        assert vol.voxel_size == (50.0, 4.0, 4.0)
        assert vol[0, :4, :4].shape == (4, 4)
