"""What the server that forks an embedded cluster's workers loads before it forks them
(:mod:`affseg.blockwise._worker`, :func:`affseg.blockwise.engine.start_worker_server`): Dask's
worker and the modules of the block tasks, and the numba kernels of a MALA block from numba's
cache, so that each worker starts with them in memory instead of a fresh interpreter loading
them before its first block.

Kernels are loaded, never compiled, here: one missing from numba's cache (a first run after an
install) would keep every worker waiting while a method that may not use it runs; the worker
compiles what it needs. Nothing here starts a thread (a forked child would inherit it dead):
the kernels run on a tiny block, and none of them is a parallel numba kernel. A failure is left
to the workers, which load what they need themselves.
"""
from __future__ import annotations

import importlib

MODULES = ("distributed.nanny", "distributed.worker", "zarr", "affseg.io.volumes", "affseg.graph.core.relabel",
           "affseg.graph.mala.fragments", "affseg.graph.mala.statistics", "affseg.graph.mala.agglomeration",
           "affseg.graph.mala.levels", "affseg.graph.signed.mutex", "affseg.blockwise.pipeline",
           "affseg.blockwise.components", "affseg.blockwise.mutex", "affseg.blockwise.synth")
"""What Dask's worker and the block tasks import."""


class NotCached(Exception):
    """A kernel that numba's cache does not hold (raised instead of compiling it)."""


def _refuse_to_compile(self, args, return_type):
    raise NotCached(f"{getattr(self, 'py_func', '?')} {args}")


def run_cached_only(function, *args, **kwargs) -> bool:
    """``function(*args, **kwargs)`` with every numba kernel it calls loaded from numba's cache;
    False (and the call abandoned) at the first kernel that is not there."""
    from numba.core import dispatcher

    compiler = dispatcher._FunctionCompiler  # (numba's: a dispatcher compiles through it after a cache miss)
    original = compiler.compile
    compiler.compile = _refuse_to_compile
    try:
        function(*args, **kwargs)
        return True
    except NotCached:
        return False
    finally:
        compiler.compile = original


def mala_block(dtype) -> None:
    """What the MALA block tasks run (default options), on a tiny block of ``dtype`` affinities."""
    import numpy as np

    from ..graph.core.relabel import relabel_by_tables, relabel_consecutive
    from ..graph.mala.fragments import extract_fragments, sizes_and_centres
    from ..graph.mala.statistics import edge_statistics

    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1]])
    affs = np.random.default_rng(0).random((3, 4, 12, 12), np.float32)
    affs = (affs * 255).astype(dtype) if np.dtype(dtype).kind == "u" else affs.astype(dtype)
    fragments, count = relabel_consecutive(extract_fragments(affs, offsets, min_seed_distance=3), start=1)
    sizes_and_centres(fragments, 1, count)
    edge_statistics(affs, fragments, offsets, histogram=True)  # (a block's inside edges)
    edge_statistics(affs, fragments, offsets, owned=(slice(1, 2), slice(0, 12), slice(0, 12)), histogram=True)
    ids = np.arange(1, count + 1, dtype=np.uint64)
    for _ in relabel_by_tables(fragments, ids, [ids]):  # (the relabel stage)
        pass


def preload() -> None:
    """Import :data:`MODULES` and load a MALA block's kernels from numba's cache (errors ignored)."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # (a worker that needs it imports it itself, and reports the error)
            pass
    for dtype in ("uint8", "float32"):  # (how affinities are stored: lsd's uint8, or floats)
        try:
            run_cached_only(mala_block, dtype)
        except Exception:  # (the worker's own call reports it)
            pass

