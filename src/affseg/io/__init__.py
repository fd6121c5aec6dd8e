"""Reading and writing volumes (zarr v3, HDF5) and other outputs, atomically."""
from .atomic import (
    atomic_path,
    check_output_writable,
    check_writable,
    output_lock,
    remove_stale_temporaries,
    write_json,
)
from .volumes import (
    Volume,
    open_volume,
    parse_address,
    read_group_record,
    read_volume,
    stop_zarr_io,
    volume_exists,
    write_group_record,
    write_volume,
    written_by_affseg,
)

__all__ = [
    "Volume",
    "atomic_path",
    "check_output_writable",
    "check_writable",
    "open_volume",
    "output_lock",
    "parse_address",
    "read_group_record",
    "read_volume",
    "remove_stale_temporaries",
    "stop_zarr_io",
    "volume_exists",
    "write_group_record",
    "write_json",
    "write_volume",
    "written_by_affseg",
]
