"""A one-pass check that float32 values lie in [0, 1] (numba; imported by ``_checks`` only when
there are values to check, so that importing ``_checks`` stays light)."""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def all_in_unit_interval(values):
    """Whether every value of the 1D array lies in [0, 1] (False for NaN)."""
    ok = True
    for i in range(values.shape[0]):
        v = values[i]
        ok &= (v >= 0) & (v <= 1)
    return ok
