"""Old spellings of arguments, accepted for one release with a DeprecationWarning."""
from __future__ import annotations

import functools
import warnings


def renamed_keywords(**renames: str):
    """Accept ``old=value`` for each ``old=new`` pair, warn, and pass it on as ``new=value``."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__name__}() got both {old}= (deprecated) and {new}=")
                    warnings.warn(f"{function.__name__}({old}=...) is deprecated: use {new}=...",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper

    return decorate
