"""``quantkit validate PATH``: will vLLM load this checkpoint and serve it correctly?

Exit codes: 0 no error finding (warnings allowed), 1 at least one error finding, 2 the checkpoint cannot be
read at all or an option is invalid (one line on stderr). ``--json`` prints only
``{"ok", "quant_method", "findings"}`` on stdout, also for exit 2 (with the read error as the one finding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from quantkit.cli import app
from quantkit.errors import CheckpointReadError, QuantkitError, UnknownNameError

if TYPE_CHECKING:
    from quantkit.validation import ValidationReport

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}
# Exit codes are raised as SystemExit, not typer.Exit: quantkit.cli.main() runs the app with
# standalone_mode=False, where click turns typer.Exit into a return value that main() does not propagate.


def _fail(exc: QuantkitError, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"ok": False, "quant_method": None, "findings": [
            {"rule": exc.rule, "severity": "error", "module": None, "message": exc.message, "fix": exc.fix}]}))
    line = f"error: [{exc.rule}] {exc.message}" + (f" To resolve: {exc.fix}" if exc.fix else "")
    typer.echo(" ".join(line.split()), err=True)
    raise SystemExit(2)


@app.command("validate")
def validate_command(
    path: Path = typer.Argument(..., help="Checkpoint directory (holds config.json and *.safetensors)."),
    hardware: str | None = typer.Option(None, "--hardware", help="Serving target, e.g. h100, b200, cpu "
                                                                 "(`quantkit hardware` lists them)."),
    tensor_parallel_size: int | None = typer.Option(None, "--tensor-parallel-size", "--tp", min=1,
                                                    help="Check group sizes and kernels per tensor-parallel shard."),
    vllm_version: str | None = typer.Option(None, "--vllm-version",
                                            help="vLLM version for version-gated rules (default: the installed "
                                                 "vLLM, else the newest quantkit knows)."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON report on stdout."),
) -> None:
    """Check, from headers alone, that vLLM will load a checkpoint and serve it correctly."""
    from quantkit.validation import validate

    try:
        report = validate(path, hardware=hardware, tensor_parallel_size=tensor_parallel_size,
                          vllm_version=vllm_version)
    except (CheckpointReadError, UnknownNameError) as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
    raise SystemExit(0 if report.ok else 1)


def _print(report: ValidationReport) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    for f in report.findings:
        where = f" [bold]{escape(f.module)}[/bold]:" if f.module else ""
        console.print(f"[{_SEVERITY_STYLE[f.severity]}]{f.severity}[/] [dim]\\[{f.rule}][/]{where} {escape(f.message)}")
        console.print(f"    [dim]fix:[/] {escape(f.fix)}")
    stats = report.stats
    console.print(f"{escape(report.summary())}; read {stats.get('shards', 0)} shard header(s), "
                  f"{stats.get('tensors', 0)} tensors, {stats.get('tensor_bytes_read', 0)} tensor bytes, "
                  f"in {stats.get('seconds', 0):.3f} s; vLLM registry: {escape(str(report.registry))}")
