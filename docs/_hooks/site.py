"""MkDocs hooks of the documentation site (mkdocs.yml): what the site shows that no page holds.

- The home page is README.md (the repository's front page stays the one source), with its links
  into docs/ made relative to the site.
- `reference/cli.md` gets every `fq` command's own `--help`, from the installed app (typer/click),
  so the CLI reference cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI_MARKER = "<!-- fq-help -->"
REPO_LINK = re.compile(r"\]\((?!https?://|#)([^)]+)\)")


def _readme_for_site() -> str:
    """README.md with `docs/x.md` links as `x.md`; other repository paths as plain text paths."""

    def link(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.startswith("docs/"):
            target = target.removeprefix("docs/")
            return f"]({target}index.md)" if target.endswith("/") else f"]({target})"
        return f"](https://github.com/flatquant/flatquant/blob/main/{target})"

    return REPO_LINK.sub(link, (ROOT / "README.md").read_text())


def _help_pages() -> str:
    """Markdown of `fq --help` and of every command's and group's `--help`, depth first."""
    import typer

    from fq_core.cli import create_app, load_plugins

    failed = [f"{p.name} ({p.error})" for p in load_plugins(typer.Typer()) if p.error]
    if failed:  # its commands would be missing from the reference: fail the build instead
        raise RuntimeError(f"fq plugins that did not load: {', '.join(failed)}; install what they import")
    root = typer.main.get_command(create_app())
    parts: list[str] = []

    def visit(command: Any, path: list[str], parent: Any) -> None:
        command.rich_markup_mode = None  # typer's plain-text help instead of its rich panels
        ctx = command.context_class(command, info_name=path[-1], parent=parent, max_content_width=100)
        ctx.terminal_width = 100
        parts.append(f"## `{' '.join(path)}`\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n")
        for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                visit(sub, [*path, name], ctx)

    visit(root, ["fq"], None)
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri == "index.md":
        return _readme_for_site()
    if CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, _help_pages())
    return markdown
