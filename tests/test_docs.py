"""Every public function has a numpydoc docstring and type hints (issue #14, item 6).

A public function is a function defined in affseg and listed in the ``__all__`` of a public module: affseg,
affseg.conventions, .synthetic, .pipeline, .methods, .io, .io.volumes, .io.atomic, .evaluation,
.evaluation.metrics, .evaluation.curves, and every module under affseg.graph, affseg.central_masks and
affseg.learn whose name does not start with an underscore.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap

import pytest

pytest.importorskip("torch")  # affseg.learn is public, and imports torch

_TOP_LEVEL = (
    "affseg",
    "affseg.conventions",
    "affseg.synthetic",
    "affseg.pipeline",
    "affseg.methods",
    "affseg.io",
    "affseg.io.volumes",
    "affseg.io.atomic",
    "affseg.evaluation",
    "affseg.evaluation.metrics",
    "affseg.evaluation.curves",
    "affseg.evaluation.report",
)
_WALKED = ("affseg.graph", "affseg.central_masks", "affseg.learn")


def _walk(name: str) -> list[str]:
    """``name`` and, for a package, every module below it whose name does not start with ``_``."""
    module = importlib.import_module(name)
    names = [name]
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            names += _walk(f"{name}.{info.name}")
    return names


def public_modules() -> list[str]:
    names = list(_TOP_LEVEL)
    for package in _WALKED:
        names += _walk(package)
    return list(dict.fromkeys(names))


def public_functions() -> dict[str, object]:
    """``{"module.qualname": function}`` for every function in a public ``__all__`` (each listed once)."""
    found: dict[str, object] = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj) and obj.__module__.split(".")[0] == "affseg":
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return dict(sorted(found.items()))


def _sections(doc: str | None) -> dict[str, str]:
    """numpydoc sections of a docstring: ``{"Parameters": body, ...}``."""
    lines = inspect.cleandoc(doc or "").splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            current = line.strip()
            sections[current] = []
        elif current is not None and not re.fullmatch(r"-{3,}", line.strip()):
            sections[current].append(line)
    return {name: "\n".join(body) for name, body in sections.items()}


def _documented_names(body: str) -> dict[str, bool]:
    """Parameter names of a Parameters section (unindented ``name : type`` or ``a, b : type`` lines),
    each with whether its line gives a type."""
    names = {}
    for line in body.splitlines():
        if line and not line[0].isspace():
            head, typed, _ = line.partition(" : ")
            for name in head.rstrip(":").split(","):
                names[name.strip().lstrip("*")] = bool(typed) or name.strip().startswith("*")
    return names


def _returns_none(function) -> bool:
    """True for a function annotated ``-> None``, or, lacking that annotation, without ``return value``."""
    annotation = inspect.signature(function).return_annotation
    if annotation is not inspect.Signature.empty:
        return annotation in (None, "None")
    target = inspect.unwrap(function)
    tree = ast.parse(textwrap.dedent(inspect.getsource(target)))
    body = tree.body[0]
    for node in ast.walk(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node is not body:
            continue
        if isinstance(node, (ast.Yield, ast.YieldFrom)) or (isinstance(node, ast.Return) and node.value is not None):
            return False
    return True


FUNCTIONS = public_functions()


def test_public_functions_found():
    # guard against the collection silently finding nothing (a renamed module, a broken __all__)
    assert len(FUNCTIONS) > 50
    assert "affseg.pipeline.segment" in FUNCTIONS


def test_numpydoc_sections():
    missing = []
    for name, function in FUNCTIONS.items():
        sections = _sections(function.__doc__)
        problems = []
        if not (function.__doc__ or "").strip():
            problems.append("no docstring")
        if inspect.signature(function).parameters and "Parameters" not in sections:
            problems.append("no Parameters section")
        if not _returns_none(function) and not {"Returns", "Yields"} & sections.keys():
            problems.append("no Returns/Yields section")
        if problems:
            missing.append(f"{name}: {', '.join(problems)}")
    assert not missing, f"{len(missing)} public functions lack numpydoc sections:\n" + "\n".join(missing)


def test_parameters_sections_name_every_parameter():
    wrong = []
    for name, function in FUNCTIONS.items():
        sections = _sections(function.__doc__)
        if "Parameters" not in sections:
            continue  # reported by test_numpydoc_sections
        documented = _documented_names(sections["Parameters"])
        actual = set(inspect.signature(function).parameters)
        if actual - documented.keys():
            wrong.append(f"{name}: undocumented {sorted(actual - documented.keys())}")
        if documented.keys() - actual:
            wrong.append(f"{name}: documents {sorted(documented.keys() - actual)}, not in the signature")
        untyped = sorted(p for p, typed in documented.items() if not typed)
        if untyped:  # numpydoc: ``name : type`` (shapes and dtypes of arrays go in the type)
            wrong.append(f"{name}: no type given for {untyped}")
    assert not wrong, "Parameters sections out of step with signatures:\n" + "\n".join(wrong)


def test_type_hints():
    missing = []
    for name, function in FUNCTIONS.items():
        signature = inspect.signature(function)
        bare = [p for p, parameter in signature.parameters.items() if parameter.annotation is inspect.Parameter.empty]
        problems = []
        if bare:
            problems.append(f"parameters without a type hint: {', '.join(bare)}")
        if signature.return_annotation is inspect.Signature.empty:
            problems.append("no return annotation")
        if problems:
            missing.append(f"{name}: {'; '.join(problems)}")
    assert not missing, f"{len(missing)} public functions lack type hints:\n" + "\n".join(missing)
