"""``quantkit quantize``: produce, validate and publish a checkpoint, then say how to serve it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from quantkit.cli import INTERRUPTED, app
from quantkit.cli.common import (
    HOST_MEMORY_OPTION,
    NPROC_OPTION,
    NUM_SAMPLES_OPTION,
    PATH_HELP,
    SEQ_LEN_OPTION,
    json_errors,
    load_call,
    run_log_path,
    vllm_serve_command,
    work_output_to_stderr,
)
from quantkit.errors import QuantkitError


@app.command("quantize")
def quantize_command(
    model: str = typer.Argument("embedded", help="Checkpoint directory, or 'embedded' for SmolLM2-135M."),
    scheme: str = typer.Option("auto", "--scheme", "-s",
                               help="Scheme (`quantkit schemes`) or 'auto' (`quantkit plan`)."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help="Serving target (`quantkit hardware`); default: the local GPU, else cpu."),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="Default: ./<model>-<scheme>."),
    backend: str = typer.Option(None, "--backend", help="llmcompressor or modelopt (default: chosen per scheme)."),
    kv_cache: str = typer.Option(None, "--kv-cache", help="'fp8' for an FP8 KV cache with calibrated scales."),
    calibration: Path = typer.Option(None, "--calibration",
                                     help=".txt, or .jsonl of {\"text\"} / chat {\"messages\"} rows; "
                                          "default: the shipped Macbeth/Julius Caesar."),
    num_samples: int | None = NUM_SAMPLES_OPTION,
    seq_len: int | None = SEQ_LEN_OPTION,
    group_size: int = typer.Option(None, "--group-size", min=1, help="Force a 4-bit group size."),
    ignore: list[str] = typer.Option(None, "--ignore", help="Extra module name or 're:' pattern to keep 16-bit; "
                                                            "repeatable (lm_head, MoE routers... are added anyway)."),
    path: str = typer.Option("auto", "--path", help=PATH_HELP),
    max_ppl_rise: float = typer.Option(None, "--max-ppl-rise", min=0.0, max=1000.0,
                                       help="Mixed precision: at most this %% perplexity rise on the calibration "
                                            "text; keeps the most sensitive layers at w8a16 / 16-bit, the rest "
                                            "w4a16 (docs/quality.md)."),
    eval_data: Path = typer.Option(None, "--eval-data",
                                   help="With --max-ppl-rise: score the budget on this held-out .txt / .jsonl of "
                                        "{\"text\"} rows instead of the calibration text."),
    nproc: int = NPROC_OPTION,
    host_memory: float = HOST_MEMORY_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    not_for_vllm: bool = typer.Option(False, "--not-for-vllm", help="Allow exports vLLM cannot load."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Quantize MODEL for HARDWARE, validate the checkpoint, and publish it atomically.

    Exit codes: 0 written and valid; 1 the producer failed or the checkpoint failed validation (kept at
    <output-dir>.rejected); 2 bad input (unknown scheme or hardware, missing model, existing output dir,
    a scheme the target or this machine cannot do).
    """
    res = None
    try:
        with json_errors(as_json):
            _check_source(model)  # a bad path fails in a fraction of a second, before torch is imported
        from quantkit.cli import _state
        from quantkit.pipeline import quantize
        from quantkit.progress import Progress

        with json_errors(as_json), work_output_to_stderr():
            prog = Progress(["quantize"], log_path=run_log_path("quantize"), verbose=_state["verbose"])
            with prog.active(), prog.stage("quantize", f"{model} with {scheme}"):
                res = quantize(model, scheme, hardware=hardware, output_dir=output_dir, backend=backend,
                               kv_cache=kv_cache, calibration=calibration, num_calibration_samples=num_samples,
                               max_seq_length=seq_len, group_size=group_size, ignore=tuple(ignore or ()),
                               overwrite=overwrite, for_vllm=not not_for_vllm, production=path,
                               max_quality_loss=None if max_ppl_rise is None else max_ppl_rise / 100,
                               eval_data=eval_data, nproc=nproc,
                               host_memory=host_memory)
            typer.echo(f"log of the libraries' output: {prog.log_path}", err=True)
    except KeyboardInterrupt:
        # quantize() removes its staging directory on the way out; the output is renamed into place only
        # as its very last step, so a run interrupted before quantize() returned published nothing
        typer.echo("interrupted, nothing published" if res is None else
                   f"interrupted after {res.output_dir} was published (complete)", err=True)
        raise typer.Exit(INTERRUPTED) from None
    data: dict[str, Any] = {"ok": True, **res.to_dict(), **_serve_hint(res.output_dir, res.hardware, not_for_vllm)}
    if as_json:
        typer.echo(json.dumps(data, default=str))
        return
    typer.echo(res.summary())
    if data.get("serve_command"):
        typer.echo(f"serve it on {res.hardware}:\n  {data['serve_command']}\n  {data['load_python']}")
    elif data.get("serve_note"):
        typer.echo(f"serve it: {data['serve_note']}")


def _check_source(model: str) -> None:
    """Refuse a missing or unreadable source checkpoint (config, index, shard headers) with a clear error.

    Tensor data is not checked here: ``plan()`` accepts header-only checkpoints, and a truncated shard is
    caught by ``load_model`` before anything is loaded.
    """
    from quantkit.checkpoint.reader import check_source
    from quantkit.models.loading import EMBEDDED_ALIASES, resolve_model_path

    if model not in EMBEDDED_ALIASES:
        check_source(resolve_model_path(model), data=False)


def _serve_hint(path: Path, hardware: str, not_for_vllm: bool) -> dict[str, str]:
    """The `vllm serve` command and `load()` call for the target, or why there is none."""
    if not_for_vllm:
        return {"serve_note": "built with --not-for-vllm: a checkpoint for another runtime"}
    from quantkit.serve.engine import serve_plan

    try:
        plan = serve_plan(path, hardware)
    except QuantkitError as exc:  # e.g. an FP8 KV cache on a CPU target without AVX-512
        return {"serve_note": exc.message}
    return {"serve_command": vllm_serve_command(path, plan), "load_python": load_call(path, hardware)}
