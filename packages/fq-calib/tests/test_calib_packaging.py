"""The dependency direction: fq-core <- fq-calib, never fq-calib -> fq-kernels/fq-eval.

Checked from the installed metadata (what pip actually resolves) and from the sources (what the
code imports), so a new import or requirement that breaks the layering fails here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

from packaging.utils import canonicalize_name

from fq_core.layering import closure, imported_modules, requirements

FLATQUANT = {"fq-core", "fq-calib", "fq-kernels", "fq-eval"}


def all_extras(dist: str) -> list[str]:
    return importlib.metadata.metadata(dist).get_all("Provides-Extra") or []


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


def test_fq_calib_sources_do_not_import_kernels_or_eval() -> None:
    modules = imported_modules("fq_calib")
    assert modules, "no source files found for fq_calib"
    offenders = {
        p: sorted(n & {"fq_kernels", "fq_eval"}) for p, n in modules.items() if n & {"fq_kernels", "fq_eval"}
    }
    assert not offenders, offenders


def test_fq_core_sources_do_not_import_any_other_flatquant_package() -> None:
    others = {"fq_calib", "fq_kernels", "fq_eval"}
    offenders = {p: sorted(n & others) for p, n in imported_modules("fq_core").items() if n & others}
    assert not offenders, offenders


def test_fq_calib_version_matches_its_metadata() -> None:
    import fq_calib

    assert fq_calib.__version__ == importlib.metadata.version("fq-calib")
