"""Run per-block tasks on Dask distributed (an embedded LocalCluster or a scheduler's address),
or serially in this process.

Tasks are submitted as futures in a bounded window (a few per worker), never as one task graph
with a node per block, so that millions of blocks do not overwhelm the scheduler. Results come
back to the client as they complete; the caller records them (e.g. a block-done mark in the
graph store) in the client, one at a time. Dask retries a task whose worker died
(``distributed.scheduler.allowed-failures``), so per-block tasks must be idempotent: they
overwrite their own outputs only.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InputError

__all__ = ["Engine"]


class Engine:
    """Where blocks run.

    Parameters
    ----------
    workers : int, optional
        Worker processes of an embedded LocalCluster (one thread each); default: the CPU count.
        0 runs every task serially in this process (no Dask needed).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``), e.g. one whose workers
        dask-jobqueue started on a cluster; then ``workers`` is ignored.
    window : int, optional
        Tasks in flight at most; default 4 per worker.
    progress : bool
        A tqdm bar per :meth:`map` (for the command line).
    connect_timeout : float
        Seconds to wait for ``scheduler`` before an InputError.
    order_seed : int, optional
        Submit the items of every :meth:`map` in a random order drawn from this seed (to check
        that a result does not depend on the order of the blocks); default: in the order given.
    """

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None, window: int | None = None,
                 progress: bool = False, connect_timeout: float = 10.0, order_seed: int | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise InputError(f"workers must be a number >= 0, got {workers!r}")
        if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
            raise InputError(f"scheduler must be an address like tcp://host:8786, got {scheduler!r}")
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.scheduler, self.window_size, self.progress = scheduler, window, progress
        self.connect_timeout = connect_timeout
        if order_seed is not None and (isinstance(order_seed, bool) or not isinstance(order_seed, int)):
            raise InputError(f"order_seed must be an integer, got {order_seed!r}")
        self.order_seed = order_seed
        self.client = None
        self._cluster = None

    @property
    def serial(self) -> bool:
        return self.scheduler is None and self.workers == 0

    def __enter__(self) -> Engine:
        if self.serial:
            return self
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as e:
                raise InputError(f"the Dask scheduler at {self.scheduler} does not answer ({e})") from None
        else:
            with _glibc_malloc_defaults():
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=None, silence_logs=40)
            self.client = Client(self._cluster)
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    @property
    def dashboard(self) -> str | None:
        """The Dask dashboard's address, where there is one."""
        return getattr(self.client, "dashboard_link", None) if self.client is not None else None

    def worker_peak_memory(self) -> dict[str, int]:
        """Each worker's peak resident memory in bytes since the worker started, by address.

        Empty for the serial engine, or where the workers cannot tell (no ``resource`` module).
        Workers of a scheduler given by address may have run other jobs before this one.
        """
        if self.client is None:
            return {}
        peaks = self.client.run(_peak_resident_bytes)
        return {address: int(peak) for address, peak in peaks.items() if peak}

    def map(self, function: Callable[..., Any], items: Iterable[Any], *args, on_result=None, desc: str = "blocks",
            total: int | None = None, **kwargs) -> None:
        """Run ``function(item, *args, **kwargs)`` for every item; ``on_result(item, result)`` is
        called in this process as each finishes (in completion order)."""
        items = list(items)
        if self.order_seed is not None:
            import random

            random.Random(self.order_seed).shuffle(items)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items) if total is None else total, desc=desc, unit="block")
        try:
            if self.serial:
                for item in items:
                    result = function(item, *args, **kwargs)
                    if on_result is not None:
                        on_result(item, result)
                    if bar is not None:
                        bar.update()
                return
            self._map_futures(function, items, args, kwargs, on_result, bar)
        finally:
            if bar is not None:
                bar.close()

    def _map_futures(self, function, items, args, kwargs, on_result, bar) -> None:
        from distributed import as_completed

        window = self.window_size or 4 * max(1, len(self.client.scheduler_info().get("workers", {})) or self.workers)
        pending = iter(items)
        running = {}
        # scatter the shared arguments once, not once per task
        shared_args = [self.client.scatter(a, broadcast=True) if _large(a) else a for a in args]

        def submit(item):
            future = self.client.submit(function, item, *shared_args, pure=False, **kwargs)
            running[future] = item
            return future

        for item in pending:
            submit(item)
            if len(running) >= window:
                break
        queue = as_completed(list(running))
        for future in queue:
            item = running.pop(future)
            result = future.result()  # re-raises a task's error here, in the client
            if on_result is not None:
                on_result(item, result)
            if bar is not None:
                bar.update()
            for nxt in pending:
                queue.add(submit(nxt))
                break


def _peak_resident_bytes() -> int:
    """This process's peak resident memory in bytes (0 where the platform does not say).

    Linux: ``VmHWM``, the peak of this process's own memory; ``ru_maxrss`` would start at the
    parent's resident memory, which a spawned worker inherits over exec.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # (Windows)
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # (bytes on macOS, KiB elsewhere)


@contextlib.contextmanager
def _glibc_malloc_defaults():
    """Start the embedded cluster's workers without Dask's ``MALLOC_TRIM_THRESHOLD_=65536``.

    Setting that variable turns off glibc's adaptive mmap threshold, so every large temporary
    array of a block task is a fresh mapping whose pages fault in again, and the block tasks ran
    slower in a worker than in the client process. A value other than Dask's own, in the
    environment (Dask's nanny also copies its own into this process) or in the Dask config, is
    the user's and is kept; workers of a scheduler given by address keep theirs.
    """
    import dask

    key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    saved = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if saved == _DASK_TRIM:
        del os.environ["MALLOC_TRIM_THRESHOLD_"]
    ours = {key: None} if str(dask.config.get(key, None)) == _DASK_TRIM else {}
    try:
        with dask.config.set(ours):
            yield
    finally:
        if saved == _DASK_TRIM:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = saved


_DASK_TRIM = "65536"


def _large(value) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) and value.nbytes > 1 << 20
