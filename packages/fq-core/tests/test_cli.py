"""The `fq` entry point: plugin loading, error handling and exit codes, `fq info`, `fq checkpoint`.

Most tests call `fq_core.cli.main(argv)` in-process (the function the `fq` script runs) and read
stdout/stderr with capsys; a few run the installed `fq` script as a subprocess to check what a user
sees end to end.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer

from fq_core import cli
from fq_core.errors import ConfigError, FqError

PLUGIN_MODULE = "fq_test_cli_plugin"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`fq *argv` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fq_script() -> str:
    """The installed `fq` console script of the running environment."""
    candidate = Path(sys.executable).parent / "fq"
    found = str(candidate) if candidate.exists() else shutil.which("fq")
    assert found, "the `fq` script is not installed next to this Python; install fq-core"
    return found


@pytest.fixture
def extra_entry_points(monkeypatch: pytest.MonkeyPatch) -> list[importlib.metadata.EntryPoint]:
    """Entry points appended to the real `fq.commands` group for the duration of a test."""
    extra: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(**params: str) -> list[importlib.metadata.EntryPoint]:
        found = list(real(**params))
        if params.get("group") == cli.ENTRY_POINT_GROUP:
            found += extra
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return extra


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module `fq_test_cli_plugin` whose functions the tests turn into plugins."""
    module = types.ModuleType(PLUGIN_MODULE)
    monkeypatch.setitem(sys.modules, PLUGIN_MODULE, module)
    return module


def entry_point(name: str, target: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=target, group=cli.ENTRY_POINT_GROUP)


def info_json(capsys: pytest.CaptureFixture[str]) -> dict:
    code, out, err = run(capsys, "info", "--json")
    assert code == 0, err
    return json.loads(out)


def plugin_status(report: dict, name: str) -> dict:
    matches = [p for p in report["plugins"] if p["name"] == name]
    assert len(matches) == 1, report["plugins"]
    return matches[0]


# ---------------------------------------------------------------------------------------------
# fq info


def test_info_lists_fq_core_with_its_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    report = info_json(capsys)
    assert report["packages"]["fq-core"]["version"] == importlib.metadata.version("fq-core")
    core = plugin_status(report, "core")
    assert core["available"] and core["distribution"] == "fq-core"


def test_info_reports_library_versions_and_cuda_like_torch_does(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    report = info_json(capsys)
    assert report["libraries"]["torch"] == importlib.metadata.version("torch")
    assert report["cuda"]["available"] == torch.cuda.is_available()
    assert report["cuda"]["cuda_version"] == torch.version.cuda
    assert len(report["cuda"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_info_reports_uninstalled_flatquant_packages_as_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == "fq-calib":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    report = info_json(capsys)
    assert report["packages"]["fq-calib"] is None
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert any(line.split() == ["fq-calib", "not", "installed"] for line in out.splitlines()), out


def test_info_human_output_names_core_package_and_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info")
    assert code == 0, err
    version = importlib.metadata.version("fq-core")
    assert any(line.split()[:2] == ["fq-core", version] for line in out.splitlines()), out
    assert any(line.split()[:2] == ["core", "loaded"] for line in out.splitlines()), out


# ---------------------------------------------------------------------------------------------
# Plugin loading


def test_plugin_that_fails_to_import_is_reported_not_fatal(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list
) -> None:
    extra_entry_points.append(entry_point("broken", "fq_no_such_module_for_tests.cli:register"))
    report = info_json(capsys)
    broken = plugin_status(report, "broken")
    assert not broken["available"]
    assert "ModuleNotFoundError" in broken["error"] and "fq_no_such_module_for_tests" in broken["error"]
    assert plugin_status(report, "core")["available"]
    # The other commands still work.
    code, out, err = run(capsys, "checkpoint", "--help")
    assert code == 0, err
    assert "validate" in out


def test_unavailable_plugin_is_one_line_in_info(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list
) -> None:
    extra_entry_points.append(entry_point("broken", "fq_no_such_module_for_tests.cli:register"))
    code, out, _ = run(capsys, "info")
    assert code == 0
    lines = [line for line in out.splitlines() if line.split()[:1] == ["broken"]]
    assert len(lines) == 1, out
    assert "unavailable" in lines[0] and "fq_no_such_module_for_tests" in lines[0]


def test_running_an_unavailable_plugin_says_why(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list
) -> None:
    extra_entry_points.append(entry_point("broken", "fq_no_such_module_for_tests.cli:register"))
    code, out, err = run(capsys, "broken", "--some-option", "x")
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: 'fq broken' is unavailable")
    assert "fq_no_such_module_for_tests" in err


def test_working_plugin_adds_its_commands(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list, plugin_module: types.ModuleType
) -> None:
    def register(app: typer.Typer) -> None:
        @app.command("hello")
        def hello(name: str) -> None:
            typer.echo(f"hello {name}")

    plugin_module.register = register
    extra_entry_points.append(entry_point("hello", f"{PLUGIN_MODULE}:register"))
    code, out, err = run(capsys, "hello", "world")
    assert (code, out, err) == (0, "hello world\n", "")
    assert plugin_status(info_json(capsys), "hello")["available"]


def test_plugin_whose_register_raises_adds_nothing(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list, plugin_module: types.ModuleType
) -> None:
    def register(app: typer.Typer) -> None:
        app.command("half")(lambda: None)
        raise RuntimeError("optional dependency foo is missing")

    plugin_module.register = register
    extra_entry_points.append(entry_point("halfway", f"{PLUGIN_MODULE}:register"))
    status = plugin_status(info_json(capsys), "halfway")
    assert status["error"] == "RuntimeError: optional dependency foo is missing"
    code, _, err = run(capsys, "half")
    assert code == cli.EXIT_USAGE and "No such command" in err


def test_plugin_clashing_with_a_core_command_is_refused(
    capsys: pytest.CaptureFixture[str], extra_entry_points: list, plugin_module: types.ModuleType
) -> None:
    def register(app: typer.Typer) -> None:
        @app.command("info")
        def info() -> None:
            typer.echo("impostor")

    plugin_module.register = register
    extra_entry_points.append(entry_point("clash", f"{PLUGIN_MODULE}:register"))
    report = info_json(capsys)  # the real `fq info` still answers
    status = plugin_status(report, "clash")
    assert not status["available"] and "'info'" in status["error"] and "core" in status["error"]


def test_core_commands_exist_without_any_entry_point(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: [])
    report = info_json(capsys)
    assert [p["name"] for p in report["plugins"]] == ["core"]


# ---------------------------------------------------------------------------------------------
# Errors and exit codes


@pytest.fixture
def failing_command(extra_entry_points: list, plugin_module: types.ModuleType) -> dict:
    """`fq fail`: raises whatever the test puts in the returned dict under "exc"."""
    state: dict = {}

    def register(app: typer.Typer) -> None:
        @app.command("fail")
        def fail() -> None:
            raise state["exc"]

    plugin_module.register = register
    extra_entry_points.append(entry_point("fail", f"{PLUGIN_MODULE}:register"))
    return state


def test_fq_error_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], failing_command: dict
) -> None:
    failing_command["exc"] = ConfigError("bits=3 is not supported:\n  use 4 or 8")
    code, out, err = run(capsys, "fail")
    assert code == 2
    assert out == ""
    assert err == "error: bits=3 is not supported: use 4 or 8\n"


def test_fq_error_without_message_names_its_class(
    capsys: pytest.CaptureFixture[str], failing_command: dict
) -> None:
    failing_command["exc"] = FqError()
    assert run(capsys, "fail") == (2, "", "error: FqError\n")


def test_fq_debug_shows_the_traceback_instead(
    capsys: pytest.CaptureFixture[str], failing_command: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    failing_command["exc"] = ConfigError("bad option")
    with pytest.raises(ConfigError, match="bad option"):
        cli.main(["fail"])


def test_keyboard_interrupt_exits_130_with_one_line(
    capsys: pytest.CaptureFixture[str], failing_command: dict
) -> None:
    failing_command["exc"] = KeyboardInterrupt()
    code, out, err = run(capsys, "fail")
    assert (code, out) == (130, "")
    assert err.count("\n") == 1 and "interrupted" in err


def test_unexpected_exception_is_not_swallowed(
    capsys: pytest.CaptureFixture[str], failing_command: dict
) -> None:
    failing_command["exc"] = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["fail"])


def test_usage_errors_keep_click_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "no-such-command")
    assert code == 2
    assert "No such command" in err and "Usage" in err
    code, _, err = run(capsys, "info", "--no-such-option")
    assert code == 2 and "--no-such-option" in err


def test_version_option_prints_fq_core_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and importlib.metadata.version("fq-core") in out


def test_importing_the_cli_does_not_import_torch() -> None:
    """`fq --help` stays fast: torch is imported only by the commands that need it."""
    code = "import sys, fq_core.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# fq checkpoint


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    from fq_core.checkpoint import save_checkpoint
    from fq_core.checkpoint.testing import random_tensors, tiny_config

    config = tiny_config()
    directory = tmp_path / "ckpt"
    save_checkpoint(directory, config, random_tensors(config), max_shard_bytes=4096)
    return directory


def test_checkpoint_validate_summarises_a_valid_checkpoint(
    capsys: pytest.CaptureFixture[str], checkpoint_dir: Path
) -> None:
    from fq_core.checkpoint import read_config

    config = read_config(checkpoint_dir)
    code, out, err = run(capsys, "checkpoint", "validate", str(checkpoint_dir), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["method"] == config.method
    assert summary["bits"] == {k: getattr(config.quant, k).bits for k in ("weight", "act", "key", "value")}
    assert summary["num_layers"] == config.model.num_layers
    assert summary["family"] == config.model.family
    assert summary["files"] == list(config.files) and len(summary["files"]) > 1  # sharded
    assert summary["total_bytes"] == sum(f.stat().st_size for f in checkpoint_dir.iterdir())


def test_checkpoint_validate_human_summary(capsys: pytest.CaptureFixture[str], checkpoint_dir: Path) -> None:
    code, out, err = run(capsys, "checkpoint", "validate", str(checkpoint_dir))
    assert code == 0, err
    assert out.startswith("valid ")
    fields = {line.split()[0] for line in out.splitlines()[1:]}
    assert fields == {"method", "bits", "model", "files", "size"}


def test_checkpoint_validate_rejects_a_broken_checkpoint_in_one_line(
    capsys: pytest.CaptureFixture[str], checkpoint_dir: Path
) -> None:
    from fq_core.checkpoint import read_config

    missing = read_config(checkpoint_dir).files[-1]
    (checkpoint_dir / missing).unlink()
    code, out, err = run(capsys, "checkpoint", "validate", str(checkpoint_dir))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and missing in err


def test_checkpoint_validate_missing_directory_is_a_user_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "checkpoint", "validate", str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1


def test_checkpoint_show_json_is_the_parsed_config(
    capsys: pytest.CaptureFixture[str], checkpoint_dir: Path
) -> None:
    from fq_core.checkpoint import read_config

    code, out, err = run(capsys, "checkpoint", "show", str(checkpoint_dir), "--json")
    assert code == 0, err
    assert json.loads(out) == read_config(checkpoint_dir).to_dict()


def test_checkpoint_show_table_has_one_row_per_field(
    capsys: pytest.CaptureFixture[str], checkpoint_dir: Path
) -> None:
    from fq_core.checkpoint import read_config

    config = read_config(checkpoint_dir)
    code, out, err = run(capsys, "checkpoint", "show", str(checkpoint_dir))
    assert code == 0, err
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") == 3]
    table = dict(cells)
    assert table["quant.weight.bits"] == str(config.quant.weight.bits)
    assert table["model.num_layers"] == str(config.model.num_layers)
    assert table["method"] == json.dumps(config.method)


def test_checkpoint_show_reports_bad_json_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "fq_config.json").write_text("{not json")
    code, out, err = run(capsys, "checkpoint", "show", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The installed script, end to end


def test_installed_fq_script_prints_one_line_for_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "fq_config.json").write_text(json.dumps({"format": "something-else"}))
    result = subprocess.run(
        [fq_script(), "checkpoint", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_installed_fq_script_info_runs() -> None:
    result = subprocess.run([fq_script(), "info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "fq-core" in result.stdout


# ---------------------------------------------------------------------------------------------
# docs/cli.md documents every command and option


DOCS = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def leaf_commands(register) -> dict[str, set[str]]:
    """'fq checkpoint show' -> {'--full', '--json'} for every command `register` adds."""
    app = typer.Typer()
    app.callback()(lambda: None)  # always a group, even with one command
    register(app)
    found: dict[str, set[str]] = {}

    def walk(command, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}")
            return
        found[path] = {
            opt
            for param in command.params
            if param.param_type_name == "option"
            for opt in param.opts
            if opt.startswith("--")
        }

    walk(typer.main.get_command(app), "fq")
    return found


def docs_sections() -> dict[str, str]:
    """`### \\`fq ...\\`` heading -> the text of its section."""
    sections: dict[str, str] = {}
    current = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        if line.startswith("### `") and line.rstrip().endswith("`"):
            current = line.strip()[5:-1]
            sections[current] = ""
        elif line.startswith(("## ", "### ")):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_docs_cover_every_core_command_and_option() -> None:
    commands = leaf_commands(cli.register_core_commands)
    assert {"fq info", "fq checkpoint validate", "fq checkpoint show"} <= set(commands)
    sections = docs_sections()
    for path, options in commands.items():
        assert path in sections, f"docs/cli.md has no '### `{path}`' section"
        missing = sorted(opt for opt in options if f"`{opt}`" not in sections[path])
        assert not missing, f"docs/cli.md section '{path}' does not document {missing}"


def test_python_dash_m_fq_is_the_console_script() -> None:
    """`python -m fq` (what `torchrun ... -m fq calib` runs) gives the same app as `fq`."""
    result = subprocess.run([sys.executable, "-m", "fq", "info", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    packages = json.loads(result.stdout)["packages"]
    assert packages["fq-core"]["version"] == importlib.metadata.version("fq-core")
