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

__all__ = ["Engine", "start_worker_server"]


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
    fork_workers : bool
        On Linux, fork the embedded cluster's workers from a server process that loaded the block
        tasks once (:func:`start_worker_server`, which says what that changes for the whole
        process); default: Dask's configured start method (``spawn`` by default), each worker a
        fresh interpreter. The command line forks them.

    The embedded cluster starts in a thread: :meth:`__enter__` returns at once, and the first
    use of :attr:`client` (e.g. :meth:`map`) waits for it and raises its errors. The environment
    and Dask settings its workers start with are set in :meth:`__enter__` and kept until
    :meth:`__exit__` (``MALLOC_TRIM_THRESHOLD_`` and Dask's config restored then).
    """

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None, window: int | None = None,
                 progress: bool = False, connect_timeout: float = 10.0, order_seed: int | None = None,
                 fork_workers: bool = False):
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
        self.fork_workers = bool(fork_workers)
        self._client = self._cluster = self._starting = self._settings = None

    @property
    def serial(self) -> bool:
        return self.scheduler is None and self.workers == 0

    def __enter__(self) -> Engine:
        if self.serial:
            return self
        if self.scheduler is not None:
            from distributed import Client

            try:
                self._client = Client(self.scheduler, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as e:
                raise InputError(f"the Dask scheduler at {self.scheduler} does not answer ({e})") from None
            return self
        import dask

        forked = self.fork_workers and start_worker_server()  # (first: its imports run beside ours)
        import distributed  # noqa: F401

        # The environment and the Dask config the workers start with are set here, not in the
        # thread below while the caller's code runs, and kept while the engine is open (a worker
        # that Dask restarts starts the same way).
        self._settings = contextlib.ExitStack()
        self._settings.enter_context(_glibc_malloc_defaults())
        if forked:
            self._settings.enter_context(dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}))
        os.environ.update(_pre_spawn_environment())  # (what Dask's nanny sets in this process anyway)
        # (started in a thread: the caller checks its inputs while the workers start)
        self._starting = _in_thread(self._start_local_cluster, name="affseg-start-cluster")
        return self

    def _start_local_cluster(self):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        try:
            return cluster, Client(cluster)
        except BaseException:
            cluster.close()
            raise

    @property
    def client(self):
        """The ``distributed.Client`` (None for the serial engine), once the embedded cluster started."""
        if self._starting is not None:
            self._cluster, self._client = self._starting.result()  # (the start's error, raised here)
            self._starting = None
        return self._client

    def __exit__(self, *exc) -> None:
        try:
            client = self.client
        except BaseException:  # (the start failed, or an interrupt came while waiting for it)
            client = None
            _close_when_started(self._starting)  # (a start still under way: closed when it ends)
            self._starting = None
            if exc[0] is None:
                self._restore_settings()
                raise
        try:
            if client is not None:
                client.close()
            if self._cluster is not None:
                self._cluster.close()
        finally:
            self._client = self._cluster = None
            self._restore_settings()

    def _restore_settings(self) -> None:
        if self._settings is not None:
            settings, self._settings = self._settings, None
            settings.close()

    @property
    def dashboard(self) -> str | None:
        """The Dask dashboard's address, where there is one (an embedded cluster has none)."""
        if self.scheduler is None:
            return None
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


def start_worker_server() -> bool:
    """Start, now, the process from which :class:`Engine` forks its workers (Linux), once.

    A multiprocessing forkserver that imports Dask's worker and the block tasks' modules once
    and loads a MALA block's numba kernels from numba's cache (:mod:`affseg.blockwise._preload`);
    each worker is then forked from it with them in memory, instead of being a fresh interpreter
    that loads them before its first block (Dask's default start, ``spawn``), and leaves without
    the interpreter's exit. The command line calls it first thing, so that this loading runs
    beside the command's own start.

    It is one server per process, and multiprocessing's: later ``forkserver`` processes of this
    process (its default start method from Python 3.14) fork from it too, with its environment
    and affseg imported. Its environment is the one a spawned worker would get (Dask's
    ``distributed.nanny.pre-spawn-environ``, without its ``MALLOC_TRIM_THRESHOLD_``; see
    :func:`_glibc_malloc_defaults`) and stays as it was at the start: a variable changed later
    reaches the workers' ``os.environ`` only where Dask's nanny sets it, and modules changed
    later (a reinstall) reach them only in a new process.

    Returns
    -------
    bool
        Whether the server runs: not off Linux, nor where
        ``distributed.worker.multiprocessing-method`` is set to another method than Dask's default
        ``spawn`` or by the variable ``DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD`` (that
        setting then applies), nor where it could not start (e.g. a socket path under a long
        ``TMPDIR``). Where this process already ran a forkserver of its own, the workers fork
        from that one and import what they need.
    """
    global _SERVER
    if _SERVER is None:
        _SERVER = False
        if _forks_workers():
            try:
                import multiprocessing
                from multiprocessing import forkserver

                multiprocessing.get_context("forkserver").set_forkserver_preload([_WORKER_PRELOAD])
                with _worker_environment():
                    forkserver.ensure_running()
                _SERVER = True
            except Exception:  # (Dask's spawn then starts the workers, as without a server)
                pass
    return _SERVER


_SERVER: bool | None = None
_WORKER_PRELOAD = "affseg.blockwise._worker"


def _forks_workers() -> bool:
    """Whether this platform and Dask's settings leave the start of the workers to affseg."""
    import dask

    # (Dask's default is not in the config until distributed is imported; a user's setting is,
    # and a DASK_ variable asks for Dask's method even where it names the default)
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    chosen = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD" in os.environ
    return sys.platform.startswith("linux") and method == "spawn" and not chosen


_DASK_PRE_SPAWN = {"MALLOC_TRIM_THRESHOLD_": _DASK_TRIM, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1"}
"""distributed.yaml's ``distributed.nanny.pre-spawn-environ`` (before distributed is imported)."""


def _pre_spawn_environment() -> dict[str, str]:
    """What Dask's nanny sets in ``os.environ`` before it starts a worker: its
    ``pre-spawn-environ`` (values already in ``os.environ`` win) and its ``PYTHONHASHSEED``;
    without Dask's ``MALLOC_TRIM_THRESHOLD_``, also where an earlier nanny left it here."""
    import dask

    configured = {**_DASK_PRE_SPAWN, **(dask.config.get("distributed.nanny.pre-spawn-environ", None) or {})}
    current = dict(os.environ)
    if current.get("MALLOC_TRIM_THRESHOLD_") == _DASK_TRIM:
        del current["MALLOC_TRIM_THRESHOLD_"]  # (an earlier nanny's)
    environ = {name: current.get(name, str(value)) for name, value in configured.items() if value is not None}
    if environ.get("MALLOC_TRIM_THRESHOLD_") == _DASK_TRIM:
        del environ["MALLOC_TRIM_THRESHOLD_"]
    if environ.get("PYTHONHASHSEED") in (None, "0"):
        environ["PYTHONHASHSEED"] = "6640"  # (Dask's, for hashes that agree between workers)
    return environ


@contextlib.contextmanager
def _worker_environment():
    """``os.environ`` set to :func:`_pre_spawn_environment` (and no leftover of Dask's
    ``MALLOC_TRIM_THRESHOLD_``) inside the block, as it was after it."""
    environ = _pre_spawn_environment()
    saved = {name: os.environ.get(name) for name in [*environ, "MALLOC_TRIM_THRESHOLD_"]}
    os.environ.update(environ)
    if "MALLOC_TRIM_THRESHOLD_" not in environ:
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_thread(function, *, name: str):
    """A ``concurrent.futures.Future`` of ``function()``, run in a daemon thread of its own."""
    import threading
    from concurrent.futures import Future

    future = Future()

    def run():
        try:
            future.set_result(function())
        except BaseException as e:  # (raised by future.result(), in the caller's thread)
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _close_when_started(starting) -> None:
    """Close the client and the cluster of a start that nobody waits for any more, as soon as
    (or if) it succeeds."""

    def close(done):
        if done.exception() is None:
            cluster, client = done.result()
            client.close()
            cluster.close()

    starting.add_done_callback(close)


def _large(value) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) and value.nbytes > 1 << 20
