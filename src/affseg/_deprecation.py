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


def keyword_only(positional: int, *names: str):
    """Accept ``names``, now keyword-only, also positionally after the first ``positional``
    arguments (their old places, in order), with a DeprecationWarning."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if len(args) > positional:
                extra = args[positional:]
                if len(extra) > len(names):
                    raise TypeError(f"{function.__name__}() takes at most {positional + len(names)} positional "
                                    f"arguments ({len(args)} given)")
                for name, value in zip(names, extra):
                    if name in kwargs:
                        raise TypeError(f"{function.__name__}() got multiple values for argument {name!r}")
                    kwargs[name] = value
                moved = ", ".join(f"{name}=..." for name in names[:len(extra)])
                warnings.warn(f"passing {', '.join(names[:len(extra)])} to {function.__name__}() positionally is "
                              f"deprecated: use {moved}", DeprecationWarning, stacklevel=2)
                args = args[:positional]
            return function(*args, **kwargs)

        return wrapper

    return decorate
