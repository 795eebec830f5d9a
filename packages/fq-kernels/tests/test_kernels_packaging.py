"""fq-kernels is what a deployment installs: its dependencies must stay light.

Checked from the installed metadata (what pip actually resolves), not from pyproject.toml: the
base requirements of fq-kernels, followed transitively, must reach fq-core (without extras), torch
and triton, and never transformers, datasets, lm-eval or another flatquant package. A static scan of
the sources checks that no module imports them either.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fq_core.layering import closure, imported_modules, requirements

HEAVY = {"transformers", "datasets", "lm-eval", "accelerate", "gguf", "llama-cpp-python", "llm"}
HEAVY_MODULES = {"transformers", "datasets", "lm_eval", "accelerate", "gguf", "llama_cpp", "llm"}
OTHER_FLATQUANT = {"fq-calib", "fq-eval"}


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


def test_sources_import_no_heavy_library_and_no_other_flatquant_package() -> None:
    """Only fq_kernels.runtime (the `hf` extra, loaded lazily) may import transformers."""
    forbidden = HEAVY_MODULES | {"fq_calib", "fq_eval"}
    modules = imported_modules("fq_kernels")
    assert modules, "no source files found for fq_kernels"
    runtime = str(Path(importlib.util.find_spec("fq_kernels.runtime").origin).parent)
    offenders = {}
    for path, names in modules.items():
        allowed = {"transformers"} if path.startswith(runtime) else set()
        if names & forbidden - allowed:
            offenders[path] = sorted(names & forbidden - allowed)
    assert not offenders, offenders


def test_the_hf_extra_brings_transformers_for_the_runtime() -> None:
    hf = by_name(requirements("fq-kernels", extras=["hf"]))
    assert "hf" in hf["fq-core"].extras
    assert "transformers" in closure("fq-kernels", extras=["hf"])


def test_the_wheel_carries_the_cuda_sources(tmp_path: Path) -> None:
    """The CUDA decode GEMM is compiled from its .cu file at run time: a non-editable install needs it."""
    import shutil
    import subprocess
    import zipfile

    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "fq-kernels"  # build from a copy: setuptools leaves build/ next to its sources
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    wheel_dir = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(wheel_dir), str(copy)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("fq_kernels-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fq_kernels/cuda/decode_gemm.cu" in names and "fq_kernels/cuda/decode_gemm.py" in names
