"""fq-kernels is what a deployment installs: its dependencies must stay light.

Checked from the installed metadata (what pip actually resolves), not from pyproject.toml: the
base requirements of fq-kernels, followed transitively, must reach fq-core (without extras), torch
and triton, and never transformers, datasets, lm-eval or another flatquant package. A static scan of
the sources checks that no module imports them either.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEAVY = {"transformers", "datasets", "lm-eval", "accelerate", "gguf", "llama-cpp-python", "llm"}
HEAVY_MODULES = {"transformers", "datasets", "lm_eval", "accelerate", "gguf", "llama_cpp", "llm"}
OTHER_FLATQUANT = {"fq-calib", "fq-eval"}


def requirements(dist: str, extras: Iterable[str] = ()) -> list[Requirement]:
    """`dist`'s requirements that apply on this platform with `extras` requested (none: base only)."""
    wanted = ("", *extras)
    found = []
    for text in importlib.metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in wanted):
            found.append(req)
    return found


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
                continue  # not installed here (e.g. a platform-specific one): nothing to follow
            stack.append(key)
    return {name for name, _ in seen}


def by_name(reqs: Iterable[Requirement]) -> dict[str, Requirement]:
    return {canonicalize_name(req.name): req for req in reqs}


def test_requires_fq_core_without_extras_torch_and_triton() -> None:
    reqs = by_name(requirements("fq-kernels"))
    assert {"fq-core", "torch"} <= set(reqs)
    assert reqs["fq-core"].extras == set(), "fq-core[hf] would pull transformers into deployments"
    if sys.platform == "linux":
        assert "triton" in reqs


def test_installed_fq_core_is_within_the_declared_range() -> None:
    spec = by_name(requirements("fq-kernels"))["fq-core"].specifier
    installed = importlib.metadata.version("fq-core")
    assert spec.contains(installed, prereleases=True), (
        f"fq-kernels requires fq-core{spec} but fq-core {installed} is installed: "
        "update the range in packages/fq-kernels/pyproject.toml (docs/development.md, versioning)"
    )


def test_pulls_nothing_heavy_even_transitively() -> None:
    pulled = closure("fq-kernels")
    assert "fq-core" in pulled and "torch" in pulled
    assert pulled.isdisjoint(HEAVY), sorted(pulled & HEAVY)
    assert pulled.isdisjoint(OTHER_FLATQUANT), sorted(pulled & OTHER_FLATQUANT)


def test_the_closure_does_see_fq_cores_hf_extra() -> None:
    """The check above is meaningful: requesting fq-core[hf] does reach transformers."""
    assert "transformers" in closure("fq-core", extras=["hf"])
    assert "transformers" not in closure("fq-core")


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


def test_sources_import_no_heavy_library_and_no_other_flatquant_package() -> None:
    forbidden = HEAVY_MODULES | {"fq_calib", "fq_eval"}
    modules = _imported_top_level_modules("fq_kernels")
    assert modules, "no source files found for fq_kernels"
    offenders = {path: sorted(names & forbidden) for path, names in modules.items() if names & forbidden}
    assert not offenders, offenders
