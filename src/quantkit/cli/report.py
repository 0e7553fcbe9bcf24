"""``quantkit roundtrip`` and ``quantkit report``: the proof, as JSON, Markdown and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from quantkit.cli import app


@app.command("roundtrip")
def roundtrip_command(
    model: str = typer.Argument("embedded", help="Checkpoint directory, or 'embedded'."),
    scheme: list[str] = typer.Option(["auto"], "--scheme", "-s", help="Scheme(s) to run; repeat the option."),
    hardware: str = typer.Option("cpu", "--hardware", "-H", help="Serving target; 'cpu' runs vLLM here."),
    output_root: Path = typer.Option(Path("runs/roundtrip"), "--output-root", "-o", help="Checkpoints and report."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing checkpoints under --output-root."),
    num_samples: int = typer.Option(64, "--num-samples", min=1),
    seq_len: int = typer.Option(512, "--seq-len", min=8),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Held-out tokens scored."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure decode tokens/s."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json's content instead of the table."),
) -> None:
    """Quantize → validate → load in vLLM → generate → perplexity and speed against the original."""
    from quantkit.report.render import print_table
    from quantkit.report.roundtrip import roundtrip

    rep = roundtrip(model, scheme, hardware=hardware, output_root=output_root, overwrite=overwrite,
                    num_calibration_samples=num_samples, max_seq_length=seq_len, eval_tokens=eval_tokens,
                    speed=speed)
    data = rep.to_dict()
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        for run in data["runs"]:
            for g in (run["quantized"].get("generations") or [])[:3]:
                typer.echo(f"[{run['scheme']}] {g['prompt']!r} -> {g['text']!r}")
        print_table(data)
        typer.echo(f"report: {rep.files.get('markdown')}  json: {rep.files.get('json')}  plot: {rep.files.get('plot')}")
    if not all(r["validation"]["ok"] for r in data["runs"]):
        raise typer.Exit(1)


@app.command("report")
def report_command(
    original: Path = typer.Argument(..., help="Unquantized checkpoint directory."),
    quantized: list[Path] = typer.Argument(..., help="Quantized checkpoint directory(ies)."),
    hardware: str = typer.Option("cpu", "--hardware", "-H"),
    output_dir: Path = typer.Option(Path("runs/report"), "--output-dir", "-o"),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16),
    speed: bool = typer.Option(True, "--speed/--no-speed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Compare existing checkpoints against ORIGINAL in vLLM: perplexity, agreement, size, speed, findings."""
    from quantkit.checkpoint.reader import CheckpointView
    from quantkit.report.compare import measure
    from quantkit.report.render import print_table, write_report
    from quantkit.report.roundtrip import compare_checkpoints

    for p in [original, *quantized]:
        CheckpointView(p)  # unreadable input is exit 2 before any vLLM work
    orig = measure(original, hardware=hardware, eval_tokens=eval_tokens, speed=speed)
    runs = []
    for q in quantized:
        run = compare_checkpoints(original, q, hardware=hardware, eval_tokens=eval_tokens, speed=speed,
                                  original_measure=orig)["run"]
        run["scheme"] = (run.get("manifest") or {}).get("scheme", q.name)
        runs.append(run)
    data = {"model": str(original), "hardware": hardware, "original": orig, "runs": runs}
    data["files"] = write_report(data, output_dir)
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        print_table(data)
        typer.echo(f"report: {data['files'].get('markdown')}")
    if not all(r["validation"]["ok"] for r in runs):
        raise typer.Exit(1)
