"""``quantkit serve``: print (or run) the exact ``vllm serve`` command for a checkpoint on N GPUs x M nodes.

The command comes from :func:`quantkit.serve.args.serve_args` (the same object ``quantkit.serve_args()``
returns); each flag's reason is printed as a comment after it. ``--exec`` replaces this process with vLLM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from quantkit.cli import app
from quantkit.cli import common as _common
from quantkit.hardware import HARDWARE
from quantkit.schemes import KV_CACHE_DTYPES


@app.command("serve")
def serve_command(
    path: Path = typer.Argument(..., help="Checkpoint directory."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help=f"Serving target: {', '.join(HARDWARE)}. Default: the local GPU, else cpu."),
    gpus: int = typer.Option(None, "--gpus", help="GPUs on each node (default: the fewest that fit)."),
    nodes: int = typer.Option(1, "--nodes", help="Nodes of --gpus GPUs: one pipeline stage each, over Ray."),
    max_model_len: int = typer.Option(None, "--max-model-len", help="Context length (default: the model's, "
                                                                     "shortened until a sequence fits)."),
    max_num_seqs: int = typer.Option(None, "--max-num-seqs", help="Sequences at once (default: as many as fit)."),
    kv_cache_dtype: str = typer.Option(None, "--kv-cache-dtype",
                                       help=f"Override the KV-cache dtype: {', '.join(KV_CACHE_DTYPES)}."),
    quantization: str = typer.Option(None, "--quantization",
                                     help="Online FP8 for a 16-bit checkpoint: fp8 (= fp8_per_tensor), "
                                          "fp8_per_block, fp8_per_channel; vLLM quantizes at load."),
    lora: bool = typer.Option(False, "--lora", help="Serve LoRA adapters (--enable-lora), checked against the "
                                                    "format, model and target first."),
    run: bool = typer.Option(False, "--exec", help="Run the command (replaces this process with vLLM)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (argv, env, reasons, command)."),
) -> None:
    """Print the `vllm serve` command that serves PATH on --gpus GPUs (x --nodes), with the reason for each flag."""
    from quantkit.serve.args import serve_args

    with _common.json_errors(as_json):
        args = serve_args(path, hardware, gpus=gpus, nodes=nodes, max_model_len=max_model_len,
                          max_num_seqs=max_num_seqs, kv_cache_dtype=kv_cache_dtype,
                          quantization=quantization, lora=lora)
    typer.echo(json.dumps({"ok": True, **args.to_dict()}) if as_json else args.render())
    if run:
        os.environ.update(args.env)
        os.execvp(args.argv[0], args.argv)
