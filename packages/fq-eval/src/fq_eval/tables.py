"""Rich tables of `fq eval` results: one comparison table (PPL, accuracy, ratio to FP), one latency table."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _ratio(value: float | None) -> str:
    return f" ({value:.2f}x)" if value is not None else ""


def comparison_table(rows: list[dict[str, Any]], facts: dict[str, Any]) -> Table | None:
    """Methods as rows; each PPL protocol and zero-shot task as a column; ratios to FP in brackets."""
    ppl_names = list(rows[0]["ppl"])
    tasks = list(rows[0]["zero_shot"])
    if not ppl_names and not tasks:
        return None
    data = facts.get("ppl_data", {})
    caption = "; ".join(f"{n}: {d['windows']} windows x {d['seqlen']} tokens" for n, d in data.items())
    table = Table(title="fq eval: methods side by side", caption=caption or None)
    table.add_column("method")
    table.add_column("bits")
    for name in ppl_names:
        table.add_column(f"{name} PPL (x FP)", justify="right")
    for task in tasks:
        table.add_column(f"{task} {rows[0]['zero_shot'][task]['metric']} %", justify="right")
    if tasks:
        table.add_column("avg % (x FP)", justify="right")
    for row in rows:
        cells = [row["method"], row["label"]]
        for name in ppl_names:
            cells.append(f"{row['ppl'][name]:.2f}" + _ratio(row.get("ppl_ratio", {}).get(name)))
        for task in tasks:
            cells.append(f"{100 * row['zero_shot'][task]['accuracy']:.2f}")
        if tasks:
            cells.append(f"{100 * row['zero_shot_avg']:.2f}" + _ratio(row.get("acc_ratio")))
        table.add_row(*cells)
    return table


def latency_table(rows: list[dict[str, Any]], device_name: str) -> Table | None:
    """One line per method and measurement: prefill ms, decode ms/step and tokens/s, speedup over FP."""
    if not any(row["latency"] for row in rows):
        return None
    table = Table(
        title=f"latency on {device_name}",
        caption="median ms per prefill / per decode step; length: prompt or prompt+steps",
    )
    for name, justify in [
        ("method", "left"),
        ("bits", "left"),
        ("phase", "left"),
        ("batch", "right"),
        ("length", "right"),
        ("ms", "right"),
        ("tok/s", "right"),
        ("x FP", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        for m in row["latency"]:
            length = m["seqlen"] if m["phase"] == "prefill" else f"{m['prompt']}+{m['steps']}"
            fast = m.get("speedup_vs_fp")
            table.add_row(
                row["method"],
                row["label"],
                m["phase"] if m["scope"] == "model" else f"{m['phase']} (layer)",
                str(m["batch"]),
                str(length),
                f"{m['ms']:.3f}" if m.get("ms") else m.get("error", "-"),
                f"{m['tokens_per_s']:.1f}" if m.get("ms") else "-",
                f"{fast:.2f}" if fast else "-",
            )
    return table


def quickstart_table(rows: list[dict[str, Any]], facts: dict[str, Any], seqlen: int, windows: int) -> Table:
    """FP / RTN / FlatQuant PPL, with every part's seconds in the caption (CPU time is shared: be honest)."""
    seconds = {k.removesuffix("_s").replace("_", " "): v for k, v in facts.items() if k.endswith("_s")}
    parts = [f"{name} {value:.1f} s" for name, value in seconds.items()]
    parts += [f"{row['method']} eval {row['eval_s']:.1f} s" for row in rows]
    table = Table(title=f"pydoc tail: {windows} windows x {seqlen} tokens", caption=", ".join(parts))
    table.add_column("method")
    table.add_column("W/A bits", justify="center")
    table.add_column("PPL", justify="right")
    table.add_column("ratio to FP", justify="right")
    for row in rows:
        bits = f"{row['w_bits']}/{row['a_bits']}"
        table.add_row(row["method"], bits, f"{row['ppl']:.2f}", f"{row['ratio_to_fp']:.2f}")
    return table
