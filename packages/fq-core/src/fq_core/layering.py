"""The one-way dependency rule (docs/architecture.md), made checkable.

What a distribution pulls in, from installed metadata (what pip actually resolved), and which
top-level modules a package's sources import (a static scan). Every package's tests use these to
prove it depends on fq-core only, and that a kernels-only deployment stays light.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path


def requirements(dist: str, extras: Iterable[str] = ()) -> list:
    """`dist`'s requirements (packaging `Requirement`s) that apply here with `extras` requested."""
    from packaging.requirements import Requirement

    wanted = ("", *extras)
    found = []
    for text in importlib.metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in wanted):
            found.append(req)
    return found


def closure(dist: str, extras: Iterable[str] = ()) -> set[str]:
    """Canonical names of every distribution `dist` (with `extras`) pulls in, transitively."""
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(dist, frozenset(extras))]
    while stack:
        name, wanted = stack.pop()
        for req in requirements(name, wanted):
            key = (canonicalize_name(req.name), frozenset(req.extras))
            if key in seen:
                continue
            seen.add(key)
            try:
                importlib.metadata.distribution(key[0])
            except importlib.metadata.PackageNotFoundError:
                continue  # not installed here (e.g. platform-specific): nothing to follow
            stack.append(key)
    return {name for name, _ in seen}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Top-level module names imported (absolute imports) by each source file of `package`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package} is not an installed package")
    found: dict[str, set[str]] = {}
    for root in spec.submodule_search_locations:
        for path in sorted(Path(root).rglob("*.py")):
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
            found[str(path)] = names
    return found
