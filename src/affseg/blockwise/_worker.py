"""The preload module of the server that forks an embedded cluster's workers
(:func:`affseg.blockwise.engine.start_worker_server`): imported there once, and nowhere else."""
from __future__ import annotations

import atexit
import os

from ._preload import preload

_SERVER = os.getpid()


def _leave_at_once() -> None:
    """The server leaves without the interpreter's exit (its modules' teardown took about half a
    second): a pipe on the command's output (``affseg ... | tee log``), which the server holds
    too, closes when the command ends, not that much later. Its forked workers leave on their own."""
    if os.getpid() == _SERVER:
        os._exit(0)


preload()
atexit.register(_leave_at_once)
