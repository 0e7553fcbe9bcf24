"""``quantkit plan``: what to produce for a GPU and a workload, and how to serve it, with the reasons."""

from __future__ import annotations

import json

import typer

from quantkit.cli import app
from quantkit.cli.common import HOST_MEMORY_OPTION, NPROC_OPTION, PATH_HELP
from quantkit.hardware import HARDWARE
from quantkit.planning.rules import SELECTION_RULES, WORKLOADS, explain_rule
from quantkit.schemes import KV_CACHE_DTYPES


@app.command("plan")
def plan_command(
    model: str = typer.Argument("embedded", help="Checkpoint directory, or 'embedded' for the built-in SmolLM2."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help=f"Serving target: {', '.join(HARDWARE)}, or a compute capability "
                                      "(sm90, sm120:96 = GiB per GPU). Default: the local GPU, else cpu."),
    workload: str = typer.Option("balanced", "--workload", "-w", help=f"One of {', '.join(WORKLOADS)}."),
    scheme: str = typer.Option(None, "--scheme", "-s", help="Force a scheme (`quantkit schemes`); checked, explained."),
    backend: str = typer.Option(None, "--backend", help="Force a backend (default: every backend is asked)."),
    group_size: int = typer.Option(None, "--group-size", min=1, help="Force a 4-bit group size."),
    ignore: list[str] = typer.Option(None, "--ignore", help="Extra module name or 're:' pattern to keep 16-bit."),
    not_for_vllm: bool = typer.Option(False, "--not-for-vllm", help="Allow exports vLLM cannot load."),
    kv_cache: str = typer.Option(None, "--kv-cache", help=f"Force the KV-cache dtype: {', '.join(KV_CACHE_DTYPES)}."),
    max_model_len: int = typer.Option(4096, "--max-model-len", min=1, help="Context length per sequence."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", min=1, help="Sequences served at once."),
    tensor_parallel_size: int = typer.Option(None, "--tp", min=1,
                                             help="GPUs to fit on (default: the fewest that fit)."),
    gpus: int = typer.Option(None, "--gpus", min=1, help="GPUs on each node: propose TP (and PP) for them."),
    nodes: int = typer.Option(1, "--nodes", min=1, help="Nodes of --gpus GPUs: one pipeline stage each, over Ray."),
    accuracy_critical: bool = typer.Option(False, "--accuracy-critical",
                                           help="Prefer GPTQ W4A16 over W4A4, and 8-bit unless memory needs 4-bit."),
    online: bool = typer.Option(False, "--online", help="Plan online FP8: vLLM quantizes the 16-bit checkpoint "
                                                        "at load (no producer)."),
    lora: bool = typer.Option(False, "--lora", help="Serve LoRA adapters on the result (--enable-lora); checked "
                                                    "against the format, model and target."),
    path: str = typer.Option("auto", "--path", help=PATH_HELP),
    nproc: int = NPROC_OPTION,
    host_memory: float = HOST_MEMORY_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    rules: bool = typer.Option(False, "--rules", help="Print the selection rules, in the order they are tried."),
) -> None:
    """Choose scheme, producer, ignore list, KV-cache dtype and GPU count for a checkpoint on a target."""
    if rules:
        for r in SELECTION_RULES:
            typer.echo(f"{explain_rule(r)}\n    {r.why}")
        return
    from quantkit.planning.planner import plan

    result = plan(model, hardware, scheme=scheme, backend=backend, group_size=group_size, ignore=tuple(ignore or ()),
                  for_vllm=not not_for_vllm, workload=workload, kv_cache=kv_cache, max_model_len=max_model_len,
                  concurrency=concurrency, tensor_parallel_size=tensor_parallel_size, gpus=gpus, nodes=nodes,
                  accuracy_critical=accuracy_critical, online=online, production=path, lora=lora,
                  nproc=nproc, host_memory=host_memory)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else str(result))
