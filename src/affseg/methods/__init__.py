"""The segmentation methods: each declares its name, options and function once, here.

A method is a module in this package that defines ``METHOD = Method(...)``; the registry finds
every such module, so adding a method touches its own module (and its tests) only.
:func:`affseg.segment`, the ``affseg segment`` flags, their ``--help`` and the methods table in
``docs/methods.md`` all come from the registry.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import as_flag, as_int, as_number
from ..errors import InputError

__all__ = ["Method", "Option", "Segmentation", "get_method", "method_names", "methods", "methods_markdown"]


@dataclass(frozen=True)
class Option:
    """One option of a method.

    ``kind`` is ``"int"``, ``"float"``, ``"str"`` (with ``choices``), ``"bool"`` (a flag) or
    ``"ints"`` (a list of integers); ``minimum``/``maximum`` bound numbers. ``check`` replaces the
    standard check where an option takes more than the command line can say (e.g. one bias per
    channel from Python).
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value):
        """The value, checked (an InputError naming the option otherwise)."""
        if self.check is not None:
            return self.check(value)
        if value is None and self.default is None:
            return None
        if self.kind == "int":
            return as_int(value, name=self.name, minimum=self.minimum, maximum=self.maximum)
        if self.kind == "float":
            return as_number(value, name=self.name, low=self.minimum, high=self.maximum)
        if self.kind == "bool":
            return as_flag(value, name=self.name)
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise InputError(f"unknown {self.name} {value!r}; choose one of {self.choices}")
            return value
        if self.kind == "ints":
            if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) == 0:
                raise InputError(f"{self.name} must be a list of integers, got {value!r}")
            return [as_int(v, name=f"{self.name}[{i}]", minimum=self.minimum) for i, v in enumerate(value)]
        raise AssertionError(f"unknown option kind {self.kind}")


@dataclass(frozen=True)
class Method:
    """A segmentation method: affinities (and offsets) -> one segmentation per threshold, or one.

    ``run(affs, offsets, *, thresholds, mask, voxel_size, fragments, **options)`` gets validated
    affinities (float32, ``(C, [z,] y, x)``), their offsets, increasing float32 ``thresholds``
    (empty where the method has none), and its own options, checked; it returns a
    :class:`Segmentation`. ``thresholded(options)`` tells whether the method, with these
    options, gives one segmentation per threshold; ``uses_fragments(options)`` whether it makes
    (and accepts) MALA fragments.
    """

    name: str
    summary: str
    run: Callable[..., Segmentation]
    options: tuple[Option, ...] = ()
    thresholded: Callable[[dict], bool] = field(default=lambda options: True)
    uses_fragments: Callable[[dict], bool] = field(default=lambda options: False)
    needs_long_range: bool = False

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def resolve(self, given: dict) -> dict:
        """All options with defaults filled in and values checked; an unknown option is an error."""
        known = {o.name for o in self.options}
        unknown = sorted(set(given) - known)
        if unknown:
            raise InputError(f"method {self.name!r} has no option(s) {unknown}; its options: {sorted(known)}")
        return {o.name: o.validate(given.get(o.name, o.default)) for o in self.options}


@dataclass
class Segmentation:
    """Segmentations of one volume, one per threshold (or one), and how they were made."""

    method: str
    thresholds: np.ndarray
    fragments: np.ndarray | None
    agglomeration: Any | None
    _segs: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.thresholds)

    def segmentation(self, index: int) -> np.ndarray:
        if self._segs is not None:
            return self._segs[index]
        return self.agglomeration.segmentation(index)


_REGISTRY: dict[str, Method] | None = None


def methods() -> dict[str, Method]:
    """Every registered method by name, in the order of their modules' names.

    The registry is built on the first call (importing every method module) and cached.

    Returns
    -------
    registry : dict of str to Method
        The cached registry itself (not a copy): do not modify it.

    Raises
    ------
    RuntimeError
        If two method modules declare the same name.
    """
    global _REGISTRY
    if _REGISTRY is None:
        found = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            method = getattr(importlib.import_module(f"{__name__}.{info.name}"), "METHOD", None)
            if isinstance(method, Method):
                if method.name in found:
                    raise RuntimeError(f"two methods are named {method.name!r}")
                found[method.name] = method
        _REGISTRY = found
    return _REGISTRY


def method_names() -> tuple[str, ...]:
    """The names of the registered methods, in the order of :func:`methods`.

    Returns
    -------
    names : tuple of str
        For example ``("cc", "gasp", "mala", "mws", "rw")``.
    """
    return tuple(methods())


def get_method(name: str) -> Method:
    """The method called ``name``, or an InputError listing the known ones.

    Parameters
    ----------
    name : str
        A registered method name.

    Returns
    -------
    method : Method
        Its registry entry.

    Raises
    ------
    InputError
        If ``name`` is not a string or not a registered method.
    """
    registry = methods()
    if not isinstance(name, str) or name not in registry:
        raise InputError(f"unknown method {name!r}; choose one of {tuple(registry)}")
    return registry[name]


def methods_markdown() -> str:
    """The methods and their options as Markdown (the body of ``docs/methods.md``).

    Returns
    -------
    markdown : str
        Two tables: the methods (summary, thresholds, options) and every option (kind, default,
        help; an option that several methods declare alike is listed once).
    """
    lines = ["| method | what it does | thresholds | options |", "|---|---|---|---|"]
    for method in methods().values():
        defaults = method.resolve({})
        has_thresholds = "yes" if method.thresholded(defaults) else "no"
        if method.name == "rw":
            has_thresholds = "with `rw_seeds=fragments`"
        options = ", ".join(f"`{o.name}`" for o in method.options) or "none"
        lines.append(f"| `{method.name}` | {method.summary} | {has_thresholds} | {options} |")
    lines += ["", "| option | kind | default | what it does |", "|---|---|---|---|"]
    seen = []
    for method in methods().values():
        for o in method.options:
            if o in seen:
                continue
            seen.append(o)
            kind = o.kind + (f" ({', '.join(o.choices)})" if o.choices else "")
            lines.append(f"| `{o.name}` (`{o.flag}`) | {kind} | `{o.default}` | {o.help} |")
    return "\n".join(lines) + "\n"
