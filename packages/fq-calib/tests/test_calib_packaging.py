"""The dependency direction: fq-core <- fq-calib, never fq-calib -> fq-kernels/fq-eval.

Checked from the installed metadata (what pip actually resolves) and from the sources (what the
code imports), so a new import or requirement that breaks the layering fails here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

FLATQUANT = {"fq-core", "fq-calib", "fq-kernels", "fq-eval"}


def requirements(dist: str, extras: Iterable[str] = ()) -> list[Requirement]:
    """`dist`'s requirements that apply on this platform with `extras` requested (none: base only)."""
    wanted = ("", *extras)
    found = []
    for text in importlib.metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in wanted):
            found.append(req)
    return found


def all_extras(dist: str) -> list[str]:
    return importlib.metadata.metadata(dist).get_all("Provides-Extra") or []


def closure(dist: str, extras: Iterable[str] = ()) -> set[str]:
    """Names of every distribution `dist` (with `extras`) pulls in, following installed metadata."""
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
                continue
            stack.append(key)
    return {name for name, _ in seen}


def test_fq_calib_requires_fq_core_within_range() -> None:
    reqs = {canonicalize_name(r.name): r for r in requirements("fq-calib")}
    assert "fq-core" in reqs
    installed = importlib.metadata.version("fq-core")
    assert reqs["fq-core"].specifier.contains(installed, prereleases=True), (
        f"fq-calib requires fq-core{reqs['fq-core'].specifier} but fq-core {installed} is installed: "
        "update the range in packages/fq-calib/pyproject.toml (docs/development.md, versioning)"
    )


def test_fq_calib_depends_on_no_other_flatquant_package() -> None:
    pulled = closure("fq-calib", extras=all_extras("fq-calib"))
    assert "fq-core" in pulled
    assert pulled.isdisjoint({"fq-kernels", "fq-eval"}), sorted(pulled & {"fq-kernels", "fq-eval"})


def test_fq_core_depends_on_no_flatquant_package_with_any_extra() -> None:
    pulled = closure("fq-core", extras=all_extras("fq-core"))
    assert pulled.isdisjoint(FLATQUANT), sorted(pulled & FLATQUANT)


def _imported_top_level_modules(package: str) -> dict[str, set[str]]:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
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


def test_fq_calib_sources_do_not_import_kernels_or_eval() -> None:
    modules = _imported_top_level_modules("fq_calib")
    assert modules, "no source files found for fq_calib"
    offenders = {
        p: sorted(n & {"fq_kernels", "fq_eval"}) for p, n in modules.items() if n & {"fq_kernels", "fq_eval"}
    }
    assert not offenders, offenders


def test_fq_core_sources_do_not_import_any_other_flatquant_package() -> None:
    others = {"fq_calib", "fq_kernels", "fq_eval"}
    offenders = {
        p: sorted(n & others) for p, n in _imported_top_level_modules("fq_core").items() if n & others
    }
    assert not offenders, offenders


def test_fq_calib_version_matches_its_metadata() -> None:
    import fq_calib

    assert fq_calib.__version__ == importlib.metadata.version("fq-calib")
