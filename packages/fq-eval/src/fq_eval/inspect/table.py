"""The numbers as rich tables: one number, one row per layer and site, one column per transform."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from fq_eval.inspect.analysis import LayerReport
from fq_eval.inspect.capture import SITES
from fq_eval.inspect.transforms import TRANSFORMS

COLUMNS = {
    "act_flatness": ("activation flatness (max / mean of per-channel max |x|)", "{:.1f}"),
    "output_error": ("per-token relative output error of the linears, W/A round-to-nearest", "{:.2e}"),
}
"""The numbers shown (the JSON has all of them), with their table title and format."""


def inspect_table(reports: Sequence[LayerReport], number: str, about: str) -> Table:
    title, fmt = COLUMNS[number]
    table = Table(title=f"{title}\n{about}")
    table.add_column("layer", justify="right")
    table.add_column("site")
    for name in TRANSFORMS:
        table.add_column(name, justify="right")
    for report in reports:
        for site in SITES:
            cells = [fmt.format(getattr(report.sites[site][name], number)) for name in TRANSFORMS]
            table.add_row(str(report.layer), site, *cells)
    return table
