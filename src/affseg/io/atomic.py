"""Atomic file output: write to a temporary sibling, then rename over the target."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from ..errors import OutputExists

__all__ = ["atomic_path", "check_writable", "write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    return path


def write_json(path: str | os.PathLike, data, *, overwrite: bool = False) -> Path:
    path = check_writable(path, overwrite=overwrite)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
