"""The `fq` command line: one entry point, commands contributed by the installed packages.

Every flatquant package adds its commands through the ``fq.commands`` entry-point group. An entry
point names a function ``register(app: typer.Typer) -> None`` that adds commands or sub-apps to the
root app; fq-core's own commands (``fq info``, ``fq checkpoint ...``) come through the same group.

A plugin that cannot be imported (typically an optional dependency is missing), whose ``register``
raises, or whose command names clash with an earlier plugin does not break ``fq``: it is recorded,
``fq info`` lists it as unavailable with the reason on one line, and ``fq <entry-point name>``
explains why instead of saying "no such command".

Exit codes: 0 success; 1 failure (an unexpected error, shown with its traceback); 2 user error (a
usage error, or any `fq_core.errors.FqError`, printed as the single line ``error: <message>``);
130 interrupted (Ctrl-C). Set ``FQ_DEBUG=1`` to get the traceback of an `FqError` instead.

Plugin modules are imported on every ``fq`` invocation, ``fq --help`` included, so they must import
heavy libraries (torch, transformers, triton) inside their commands, not at module level.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlparse

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from fq_core.errors import FqError

ENTRY_POINT_GROUP = "fq.commands"
DISTRIBUTIONS: tuple[str, ...] = ("fq-core", "fq-kernels", "fq-calib", "fq-eval")
"""The flatquant distributions `fq info` always reports, installed or not."""
LIBRARIES: tuple[str, ...] = ("torch", "triton", "transformers", "safetensors")
"""Third-party libraries whose versions `fq info` reports (from metadata, without importing them)."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEBUG_ENV = "FQ_DEBUG"
PLUGINS_META_KEY = "fq.plugins"
"""Key of the loaded plugins' statuses in the click context's `meta` (shared by all sub-contexts)."""

_CORE_TARGET = "fq_core.cli:register_core_commands"


# ---------------------------------------------------------------------------------------------
# One-line messages and the root group that turns errors into exit codes.


def one_line(text: object, limit: int | None = None) -> str:
    """`text` with all whitespace runs (newlines included) collapsed to one space."""
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."
    return line


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, for reasons that are not `FqError` messages."""
    message = one_line(exc, limit=300)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def error_message(exc: FqError) -> str:
    """The user-facing line of an `FqError` (its class name if it has no message)."""
    return one_line(exc) or type(exc).__name__


class FqGroup(TyperGroup):
    """The root group: any command's `FqError` or Ctrl-C becomes one line on stderr and an exit code.

    Catching here (rather than around the whole program) leaves typer's handling of usage errors,
    --help and explicit exits untouched, and works the same under `typer.testing.CliRunner`.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except FqError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.echo(f"error: {error_message(exc)}", err=True)
            raise typer.Exit(EXIT_USAGE) from exc
        except KeyboardInterrupt as exc:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from exc


# ---------------------------------------------------------------------------------------------
# Plugins.


@dataclass(frozen=True)
class Plugin:
    """One entry point of the ``fq.commands`` group and whether it could be registered."""

    name: str
    target: str
    distribution: str | None
    version: str | None
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "distribution": self.distribution,
            "version": self.version,
            "available": self.available,
            "error": self.error,
        }


class _PluginError(Exception):
    """A plugin loaded but cannot be used (not callable, clashing names)."""


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``fq.commands`` entry points, fq-core's first, then by name (a stable command order)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: (ep.name != "core", ep.name))


def _entry_point_distribution(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _command_names(app: typer.Typer) -> set[str]:
    """The top-level command and group names `app` defines (those that can clash with others)."""
    names: set[str] = set()
    for command in app.registered_commands:
        name = command.name if isinstance(command.name, str) else None
        if name is None and command.callback is not None:
            name = command.callback.__name__
        if name:
            names.add(typer.main.get_command_name(name))
    for group in app.registered_groups:
        name = group.name if isinstance(group.name, str) else None
        if name is None and group.typer_instance is not None:
            info_name = group.typer_instance.info.name
            name = info_name if isinstance(info_name, str) else None
        if name:
            names.add(typer.main.get_command_name(name))
    return names


def _stage(register: Callable[[typer.Typer], None], taken: Mapping[str, str]) -> tuple[typer.Typer, set[str]]:
    """Run `register` on a scratch app, so a plugin that fails half-way adds nothing to the root."""
    if not callable(register):
        raise _PluginError(f"the entry point is a {type(register).__name__}, not a register(app) function")
    staging = typer.Typer()
    register(staging)
    names = _command_names(staging)
    clashes = sorted(names & set(taken))
    if clashes:
        owner = taken[clashes[0]]
        raise _PluginError(f"command {clashes[0]!r} is already provided by plugin {owner!r}")
    return staging, names


def _merge(app: typer.Typer, staging: typer.Typer) -> None:
    app.registered_commands.extend(staging.registered_commands)
    app.registered_groups.extend(staging.registered_groups)


def _add_unavailable_command(app: typer.Typer, plugin: Plugin) -> None:
    """`fq <plugin name>` for a plugin that failed: says why (exit 2) instead of "no such command"."""
    message = f"'fq {plugin.name}' is unavailable: {plugin.error} (see 'fq info')"

    def unavailable() -> None:
        raise FqError(message)

    app.command(
        plugin.name,
        help=f"Unavailable: {escape(plugin.error or '')}",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        rich_help_panel="Unavailable (see fq info)",
    )(unavailable)


def load_plugins(app: typer.Typer) -> list[Plugin]:
    """Register every ``fq.commands`` entry point on `app`; returns the status of each.

    fq-core's own commands are registered even if its entry point is missing (e.g. a tree used
    without installing fq-core's metadata), so `fq info` always works.
    """
    plugins: list[Plugin] = []
    taken: dict[str, str] = {}
    failed: list[Plugin] = []
    core_registered = False
    for ep in _entry_points():
        dist_name, version = _entry_point_distribution(ep)
        if any(p.name == ep.name for p in plugins):
            other = next(p for p in plugins if p.name == ep.name)
            plugins.append(
                Plugin(
                    ep.name,
                    ep.value,
                    dist_name,
                    version,
                    f"duplicate entry point name, already provided by {other.distribution or other.target}",
                )
            )
            continue
        try:
            register = ep.load()
            if register is register_core_commands and core_registered:
                raise _PluginError("fq-core's commands are already registered")
            staging, names = _stage(register, taken)
        except Exception as exc:
            reason = one_line(exc, limit=300) if isinstance(exc, _PluginError) else describe_exception(exc)
            plugin = Plugin(ep.name, ep.value, dist_name, version, reason)
            plugins.append(plugin)
            failed.append(plugin)
            continue
        _merge(app, staging)
        taken.update(dict.fromkeys(names, ep.name))
        core_registered = core_registered or register is register_core_commands
        plugins.append(Plugin(ep.name, ep.value, dist_name, version))
    if not core_registered:
        staging, names = _stage(register_core_commands, taken)
        _merge(app, staging)
        taken.update(dict.fromkeys(names, "core"))
        plugins.insert(0, Plugin("core", _CORE_TARGET, "fq-core", _version("fq-core")))
    for plugin in failed:
        if typer.main.get_command_name(plugin.name) not in taken:
            _add_unavailable_command(app, plugin)
    return plugins


# ---------------------------------------------------------------------------------------------
# The app and main().


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fq (fq-core {_version('fq-core') or 'unknown'})")
        raise typer.Exit()


def create_app() -> typer.Typer:
    """The root `fq` app with every installed plugin registered."""
    app = typer.Typer(
        name="fq",
        cls=FqGroup,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        no_args_is_help=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    plugins: list[Plugin] = []

    @app.callback()
    def root(
        ctx: typer.Context,
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_print_version, is_eager=True, help="Show fq-core's version and exit."
            ),
        ] = False,
    ) -> None:
        """FlatQuant: W4A4 quantisation of LLMs with learnable affine transforms.

        Exit codes: 0 ok, 1 failure, 2 user error (bad option, invalid input), 130 interrupted.
        """
        ctx.meta[PLUGINS_META_KEY] = tuple(plugins)

    plugins.extend(load_plugins(app))
    return app


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    typer.echo(str(code), err=True)
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run `fq` with `argv` (default: sys.argv[1:]) and return its exit code."""
    try:
        command = typer.main.get_command(create_app())
        command.main(args=argv, prog_name="fq", standalone_mode=True)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except FqError as exc:  # raised outside a command, e.g. while registering plugins
        if os.environ.get(DEBUG_ENV):
            raise
        typer.echo(f"error: {error_message(exc)}", err=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# fq info


def _distribution_record(name: str) -> dict[str, Any] | None:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    record: dict[str, Any] = {"version": dist.version, "editable": False, "source": None}
    try:
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct_url = {}
    if direct_url.get("dir_info", {}).get("editable"):
        record["editable"] = True
        url = urlparse(direct_url.get("url", ""))
        record["source"] = unquote(url.path) if url.scheme == "file" else direct_url.get("url")
    return record


def _cuda_record() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:
        return {"available": False, "cuda_version": None, "devices": [], "error": describe_exception(exc)}
    devices = []
    available = bool(torch.cuda.is_available())
    if available:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            devices.append(
                {"index": index, "name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}"}
            )
    return {"available": available, "cuda_version": torch.version.cuda, "devices": devices, "error": None}


def collect_info(plugins: Iterable[Plugin]) -> dict[str, Any]:
    """Everything `fq info` reports, as JSON-ready data."""
    return {
        "packages": {name: _distribution_record(name) for name in DISTRIBUTIONS},
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "executable": sys.executable,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "cuda": _cuda_record(),
        "plugins": [plugin.to_dict() for plugin in plugins],
    }


def _console(stderr: bool = False) -> Console:
    return Console(highlight=False, stderr=stderr, soft_wrap=True)


def _cuda_summary(cuda: Mapping[str, Any]) -> str:
    if cuda["error"]:
        return f"unknown (torch does not import: {cuda['error']})"
    if not cuda["available"]:
        if cuda["cuda_version"] is None:
            return "not available (this torch is a CPU-only build)"
        return f"not available (torch built for CUDA {cuda['cuda_version']}, no usable device)"
    devices = ", ".join(f"cuda:{d['index']} {d['name']} (sm {d['capability']})" for d in cuda["devices"])
    return f"available, CUDA {cuda['cuda_version']}: {devices}"


def _print_info(report: Mapping[str, Any]) -> None:
    console = _console()
    width = max(len(name) for name in (*DISTRIBUTIONS, *LIBRARIES, "python", "CUDA"))
    console.print("[bold]flatquant packages[/]")
    for name, record in report["packages"].items():
        if record is None:
            console.print(f"  {name:<{width}}  [dim]not installed[/]")
            continue
        where = f"  editable: {escape(str(record['source']))}" if record["editable"] else ""
        console.print(f"  {name:<{width}}  {escape(record['version'])}{where}")
    console.print("[bold]environment[/]")
    console.print(f"  {'python':<{width}}  {report['python']} ({report['platform']})")
    for name, version in report["libraries"].items():
        shown = escape(version) if version else "[dim]not installed[/]"
        console.print(f"  {name:<{width}}  {shown}")
    console.print(f"  {'CUDA':<{width}}  {escape(_cuda_summary(report['cuda']))}")
    console.print("[bold]plugins[/] (entry points of fq.commands)")
    name_width = max((len(p["name"]) for p in report["plugins"]), default=0)
    for plugin in report["plugins"]:
        source = escape(f"{plugin['distribution'] or '?'} {plugin['version'] or ''}".strip())
        if plugin["available"]:
            console.print(f"  {plugin['name']:<{name_width}}  [green]loaded[/]       {source}")
        else:
            reason = escape(plugin["error"])
            console.print(f"  {plugin['name']:<{name_width}}  [red]unavailable[/]  {source}: {reason}")


def _info_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Installed flatquant packages, library versions, CUDA, and which plugins loaded."""
    report = collect_info(ctx.meta.get(PLUGINS_META_KEY, ()))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_info(report)


# ---------------------------------------------------------------------------------------------
# fq checkpoint ...

CheckpointDir = Annotated[
    Path,
    typer.Argument(
        metavar="DIR",
        show_default=False,
        help="Checkpoint directory (holds fq_config.json and the .safetensors files).",
    ),
]


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _spec_of(quant: Any, kind: str) -> Any:
    return quant[kind] if isinstance(quant, Mapping) else getattr(quant, kind)


def checkpoint_summary(config: Any, directory: Path) -> dict[str, Any]:
    """The short summary `fq checkpoint validate` prints, from a validated `CheckpointConfig`."""
    from fq_core.checkpoint.config import CONFIG_NAME

    files = list(config.files)
    paths = [directory / name for name in (CONFIG_NAME, *files)]
    total_bytes = sum(path.stat().st_size for path in paths if path.is_file())
    bits = {kind: _spec_of(config.quant, kind).bits for kind in ("weight", "act", "key", "value")}
    model = config.model
    return {
        "directory": str(directory),
        "method": config.method,
        "bits": bits,
        "bits_label": "W{weight}A{act}K{key}V{value}".format(**bits),
        "family": model.family,
        "model_type": model.model_type,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "files": files,
        "total_bytes": total_bytes,
    }


def _checkpoint_validate(
    directory: CheckpointDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a checkpoint completely (config, files, tensor names, shapes, dtypes and values).

    Prints a short summary when it is valid; an invalid one is a user error (exit 2, one line).
    """
    from fq_core.checkpoint import validate_checkpoint

    config = validate_checkpoint(directory)
    summary = checkpoint_summary(config, directory)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = _console()
    console.print(f"[green]valid[/] flatquant checkpoint {escape(summary['directory'])}")
    rows = {
        "method": summary["method"],
        "bits": f"{summary['bits_label']} (weight/activation/key/value; 16 = not quantised)",
        "model": f"{summary['family']} ({summary['model_type']}), {summary['num_layers']} layers, "
        f"hidden size {summary['hidden_size']}",
        "files": f"{len(summary['files'])}: {', '.join(summary['files'])}",
        "size": _human_size(summary["total_bytes"]),
    }
    for key, value in rows.items():
        console.print(f"  {key:<6}  {escape(str(value))}")


class _Note(str):
    """A table cell shown as is, not as JSON."""


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, _Note):
        return [(prefix, str(data))]
    if isinstance(data, Mapping) and data:
        rows: list[tuple[str, str]] = []
        for key, value in data.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, json.dumps(data))]


def _config_rows(config_dict: Mapping[str, Any], full: bool) -> list[tuple[str, str]]:
    shown = dict(config_dict)
    model = dict(shown.get("model") or {})
    hf_config = model.pop("hf_config", None)
    if hf_config is not None:
        model["hf_config"] = hf_config if full else _Note(f"({len(hf_config)} keys; --full shows them)")
    shown["model"] = model
    layers = shown.pop("layers", None)
    rows = _flatten(shown)
    if layers is None:
        rows.append(("layers", "null"))
    elif full or not layers:
        rows.extend(_flatten({f"layers[{i}]": layer for i, layer in enumerate(layers)}))
    elif all(layer == layers[0] for layer in layers):
        rows.append(("layers", f"{len(layers)} entries, all equal to layers[0]"))
        rows.extend(_flatten({"layers[0]": layers[0]}))
    else:
        rows.append(("layers", f"{len(layers)} entries that differ; --full shows them"))
    return rows


def _checkpoint_show(
    directory: CheckpointDir,
    full: Annotated[bool, typer.Option("--full", help="Show hf_config and every layer entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print fq_config.json as parsed, as JSON.")] = False,
) -> None:
    """Show a checkpoint's fq_config.json as a table (reads the config only, not the tensors)."""
    from fq_core.checkpoint import read_config

    config = read_config(directory)
    if as_json:
        typer.echo(json.dumps(config.to_dict(), indent=2))
        return
    table = Table(title=f"{directory}", title_justify="left", show_header=True)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in _config_rows(config.to_dict(), full):
        table.add_row(escape(key), escape(value))
    Console(highlight=False).print(table)


def register_core_commands(app: typer.Typer) -> None:
    """fq-core's entry point of ``fq.commands``: `fq info` and `fq checkpoint ...`."""
    app.command("info")(_info_command)
    checkpoint = typer.Typer(
        name="checkpoint",
        help="Validate and inspect quantised checkpoints.",
        no_args_is_help=True,
        rich_markup_mode="rich",
    )
    checkpoint.command("validate")(_checkpoint_validate)
    checkpoint.command("show")(_checkpoint_show)
    app.add_typer(checkpoint, name="checkpoint")


__all__ = [
    "DISTRIBUTIONS",
    "ENTRY_POINT_GROUP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FqGroup",
    "Plugin",
    "collect_info",
    "create_app",
    "load_plugins",
    "main",
    "register_core_commands",
]
