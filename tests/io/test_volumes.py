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


# --- untrusted and damaged inputs, portable metadata, outputs that are not affseg's ------------


def test_damaged_hdf5_files_are_named(tmp_path):
    from affseg.errors import CorruptInput

    good = tmp_path / "good.h5"
    write_volume(good / "raw", np.arange(64, dtype=np.uint8).reshape(8, 8))
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "garbage.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "truncated.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "folder.h5").mkdir()
    for name in ("empty.h5", "garbage.h5", "truncated.h5", "folder.h5"):
        with pytest.raises(CorruptInput, match=name):
            open_volume(tmp_path / name / "raw")
        with pytest.raises(CorruptInput, match=name):
            volume_exists(tmp_path / name / "raw")


def test_damaged_zarr_metadata_and_chunks_are_named(tmp_path):
    from affseg.errors import CorruptInput

    bad_meta = tmp_path / "meta.zarr"
    write_volume(bad_meta / "raw", np.zeros((4, 4), np.uint8))
    (bad_meta / "raw" / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptInput, match=r"meta.zarr/raw/zarr.json"):
        open_volume(bad_meta / "raw")
    bad_chunk = tmp_path / "chunk.zarr"
    write_volume(bad_chunk / "raw", np.arange(16, dtype=np.uint8).reshape(4, 4))
    chunk = next(p for p in (bad_chunk / "raw").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"garbage")
    with pytest.raises(CorruptInput, match=r"chunk.zarr/raw"):
        read_volume(bad_chunk / "raw")
    (tmp_path / "file.zarr").write_text("")
    with pytest.raises(CorruptInput, match="not a zarr container"):
        open_volume(tmp_path / "file.zarr" / "raw")


def test_attributes_are_portable_to_both_backends(container):
    address = container / "seg"
    write_volume(address, np.zeros((2, 3), np.uint64),
                 attrs={"long_range_bias": None, "bias": 0.5, "linkage": "mean", "strides": [1, 2],
                        "options": {"a": 1}, "cannot_link": True})
    with open_volume(address) as vol:
        attrs = dict(vol.data.attrs)
    assert "long_range_bias" not in attrs and attrs["bias"] == 0.5 and attrs["linkage"] == "mean"
    assert list(attrs["strides"]) == [1, 2] and bool(attrs["cannot_link"])
    assert attrs["written_by"].startswith("affseg")


def test_overwrite_replaces_only_what_affseg_wrote(container):
    from affseg.errors import OutputExists

    foreign = container / "theirs"
    if container.suffix == ".zarr":
        import zarr

        zarr.open_group(str(container), mode="a").create_array("theirs", data=np.ones((2, 2), np.uint8))
    else:
        import h5py

        with h5py.File(container, "a") as f:
            f.create_dataset("theirs", data=np.ones((2, 2), np.uint8))
    with pytest.raises(OutputExists, match="not written by affseg"):
        write_volume(foreign, np.zeros((2, 2), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_volume(foreign)[0], 1)


@pytest.mark.parametrize("writer_alive", [False, True])
def test_stale_temporaries_are_removed_by_the_next_write(container, writer_alive):
    import os
    import subprocess
    import sys

    if writer_alive:
        pid = os.getpid()
    else:  # the id of a process that has ended
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        pid = int(child.stdout)
    temporaries = [f".vol.tmp-{pid}-0123abcd", ".vol.tmp-89abcdef"]  # the second: an older affseg, no pid
    if container.suffix == ".zarr":
        write_volume(container / "other", np.zeros(2, np.uint8))
        for name in temporaries:
            (container / name).mkdir()
    else:
        import h5py

        with h5py.File(container, "a") as f:
            for name in temporaries:
                f.create_dataset(name, data=np.zeros(2))
    write_volume(container / "vol", np.zeros((2, 2), np.uint8))
    if container.suffix == ".zarr":
        left = sorted(p.name for p in container.iterdir() if p.name.startswith("."))
    else:
        import h5py

        with h5py.File(container) as f:
            left = sorted(n for n in f if n.startswith("."))
    assert left == ([temporaries[0]] if writer_alive else [])


def test_an_unwritable_output_is_refused_before_writing(tmp_path, read_only_dir):
    from affseg.errors import OutputNotWritable

    with pytest.raises(OutputNotWritable, match=r"read-only|not writable"):
        write_volume(read_only_dir / "out.zarr" / "seg", np.zeros((2, 2), np.uint8))
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputNotWritable, match="afile is a file"):
        write_volume(tmp_path / "afile" / "out.zarr" / "seg", np.zeros((2, 2), np.uint8))
