"""Reading and writing volumes (zarr v3, HDF5) and other outputs, atomically."""
from .atomic import atomic_path, check_writable, write_json
from .volumes import Volume, open_volume, parse_address, read_volume, volume_exists, write_volume

__all__ = [
    "Volume",
    "atomic_path",
    "check_writable",
    "open_volume",
    "parse_address",
    "read_volume",
    "volume_exists",
    "write_json",
    "write_volume",
]
