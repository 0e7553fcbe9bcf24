"""``quantkit load PATH``: how vLLM will load a checkpoint, without starting vLLM (unless ``--generate``).

It prints the serve plan :func:`quantkit.load` would use -- the quantization vLLM detects, the KV-cache dtype
and why, the engine arguments and environment -- as the exact ``vllm serve`` command and the Python call,
plus the validator's verdict from the checkpoint's headers. ``--generate`` then runs a quick greedy prompt
through vLLM: here when vLLM is installed, otherwise in the serve environment (``quantkit.serve.remote``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from quantkit.cli import app
from quantkit.cli.common import (
    QUANTKIT_ONLY_ENV,
    json_errors,
    load_call,
    read_manifest,
    run_probe,
    vllm_serve_command,
    work_output_to_stderr,
)


# ------------------------------------------------------------------------------------------------ command

@app.command("load")
def load_command(
    path: Path = typer.Argument(..., help="Checkpoint directory (compressed-tensors, ModelOpt, or unquantized)."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help="Serving target (`quantkit hardware`). Default: the local GPU, else cpu."),
    kv_cache_dtype: str = typer.Option(None, "--kv-cache-dtype",
                                       help="Override the KV-cache dtype (auto, fp8); default: the checkpoint's."),
    tensor_parallel_size: int = typer.Option(None, "--tensor-parallel-size", "--tp", min=1,
                                             help="Passed to vLLM."),
    max_model_len: int = typer.Option(None, "--max-model-len", min=1, help="Passed to vLLM."),
    validate: bool = typer.Option(True, "--validate/--no-validate",
                                  help="Also run the headers-only validator for the target (exit 1 on errors)."),
    generate: bool = typer.Option(False, "--generate", "-g",
                                  help="Load it in vLLM and generate greedily (serve environment; ~30 s on CPU)."),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Prompt(s) for --generate; repeatable."),
    max_tokens: int = typer.Option(16, "--max-tokens", min=1, help="Tokens per prompt for --generate."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Show how vLLM will load PATH: quantization detected, KV-cache dtype and why, the exact `vllm serve`."""
    from quantkit.serve.engine import serve_plan

    with json_errors(as_json):
        engine_args = {k: v for k, v in {"tensor_parallel_size": tensor_parallel_size,
                                         "max_model_len": max_model_len}.items() if v is not None}
        plan = serve_plan(path, hardware, kv_cache_dtype=kv_cache_dtype, **engine_args)
        target = plan.hardware
        manifest = read_manifest(path)
        data: dict[str, Any] = {
            "ok": True,
            "path": str(path),
            "hardware": target,
            "quant_method": plan.quant_method,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "kv_reason": plan.kv_reason,
            "engine_args": plan.engine_args,
            "env": {k: v for k, v in plan.env.items() if k not in QUANTKIT_ONLY_ENV},
            "command": vllm_serve_command(path, plan),
            "python": load_call(path, target, kv_cache_dtype, engine_args),
            "manifest": ({k: manifest.get(k) for k in ("scheme", "backend", "hardware", "kv_cache", "group_size")}
                         if manifest else None),
        }
        if validate:
            from quantkit.validation import validate as run_validate

            report = run_validate(path, hardware=target, tensor_parallel_size=tensor_parallel_size)
            data["validation"] = {"ok": report.ok, "findings": [f.to_dict() for f in report.findings]}
            data["ok"] = report.ok
        if generate:
            with work_output_to_stderr():
                data["generation"] = run_probe(path, hardware=target, prompts=prompt, max_tokens=max_tokens,
                                               perplexity=False, eval_tokens=16, speed=False,
                                               kv_cache_dtype=kv_cache_dtype, engine_args=engine_args)
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        _print(data)
    if not data["ok"]:
        raise SystemExit(1)  # not typer.Exit: main() runs click with standalone_mode=False


def _print(data: dict[str, Any]) -> None:
    m = data["manifest"]
    made = (f" (made by quantkit: {m['scheme']} via {m['backend']} for {m['hardware']})" if m else "")
    typer.echo(f"{data['path']}{made}")
    typer.echo(f"  quantization : {data['quant_method'] or 'none (unquantized)'} (vLLM detects it; no flag)")
    typer.echo(f"  KV cache     : {data['kv_cache_dtype']} -- {data['kv_reason']}")
    typer.echo(f"  target       : {data['hardware']}")
    if m and m.get("hardware") and m["hardware"] != data["hardware"]:
        typer.echo(f"  note         : it was made for {m['hardware']}; pass --hardware {m['hardware']} for "
                   "that target's command")
    if "validation" in data:
        v = data["validation"]
        errors = [f for f in v["findings"] if f["severity"] == "error"]
        warnings = [f for f in v["findings"] if f["severity"] != "error"]
        typer.echo(f"  validator    : {'OK' if v['ok'] else 'FAILED'} "
                   f"({len(errors)} error(s), {len(warnings)} warning(s))")
        for f in v["findings"]:
            typer.echo(f"    {f['severity']} [{f['rule']}] {f['message']}\n      fix: {f['fix']}")
    typer.echo("serve it:")
    typer.echo(f"  {data['command']}")
    typer.echo(f"  {data['python']}")
    gen = data.get("generation")
    if gen:
        typer.echo(f"generated in vLLM (loaded in {gen['load_s']:.1f} s):")
        for g in gen["generations"]:
            typer.echo(f"  {g['prompt']!r} -> {g['text']!r}")
