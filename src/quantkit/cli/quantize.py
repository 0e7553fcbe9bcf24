"""``quantkit quantize``: produce, validate and publish a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from quantkit.cli import app


@app.command("quantize")
def quantize_command(
    model: str = typer.Argument("embedded", help="Checkpoint directory, or 'embedded' for SmolLM2-135M."),
    scheme: str = typer.Option("auto", "--scheme", "-s", help="Scheme (`quantkit schemes`) or 'auto'."),
    hardware: str = typer.Option("h100", "--hardware", "-H", help="Serving target (`quantkit hardware`)."),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="Default: ./<model>-<scheme>."),
    backend: str = typer.Option(None, "--backend", help="llmcompressor or modelopt (default: chosen)."),
    kv_cache: str = typer.Option(None, "--kv-cache", help="'fp8' for a calibrated FP8 KV cache."),
    calibration: Path = typer.Option(None, "--calibration", help=".txt or .jsonl calibration text."),
    num_samples: int = typer.Option(64, "--num-samples", min=1, help="Calibration samples."),
    seq_len: int = typer.Option(512, "--seq-len", min=8, help="Tokens per calibration sample."),
    group_size: int = typer.Option(None, "--group-size", help="Force a 4-bit group size."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    not_for_vllm: bool = typer.Option(False, "--not-for-vllm", help="Allow exports vLLM cannot load."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Quantize MODEL for HARDWARE, validate the checkpoint, and publish it atomically."""
    from quantkit.pipeline import quantize

    res = quantize(model, scheme, hardware=hardware, output_dir=output_dir, backend=backend, kv_cache=kv_cache,
                   calibration=calibration, num_calibration_samples=num_samples, max_seq_length=seq_len,
                   group_size=group_size, overwrite=overwrite, for_vllm=not not_for_vllm)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), default=str))
        return
    ratio = f", {res.compression_ratio:.2f}x smaller" if res.compression_ratio else ""
    typer.echo(f"wrote {res.output_dir} ({res.scheme} via {res.backend}, {res.quantized_bytes / 1e6:.1f} MB{ratio}) "
               f"in {res.timings['total_s']:.1f} s")
    for n in res.notes:
        typer.echo(f"  note: {n}")
    for f in res.findings:
        typer.echo(f"  {f['severity']} {f['rule']}: {f['message']}")
    typer.echo(f"serve it: vllm serve {res.output_dir}" + (" --kv-cache-dtype fp8" if res.kv_cache == "fp8" else ""))
