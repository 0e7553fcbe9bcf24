"""``quantkit load PATH``: how vLLM will load a checkpoint, without starting vLLM (unless ``--generate``).

It prints the serve plan :func:`quantkit.load` would use -- the quantization vLLM detects, the KV-cache dtype
and why, the engine arguments and environment -- as the exact ``vllm serve`` command and the Python call,
plus the validator's verdict from the checkpoint's headers. ``--generate`` then runs a quick greedy prompt
through vLLM: here when vLLM is installed, otherwise in the serve environment (``quantkit.serve.remote``).

This module also holds the helpers the other command modules share: :func:`vllm_serve_command` and
:func:`json_errors`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from quantkit.cli import app
from quantkit.errors import EnvironmentNotFoundError, QuantkitError

if TYPE_CHECKING:
    from quantkit.serve.engine import ServePlan

#: environment that quantkit sets for its own runs only (a cache location); not part of a serve command
_QUANTKIT_ONLY_ENV = frozenset({"VLLM_CACHE_ROOT"})


# ------------------------------------------------------------------------------------------- shared helpers

def vllm_serve_command(path: str | Path, plan: ServePlan) -> str:
    """The ``vllm serve`` command line that serves ``path`` the way :func:`quantkit.load` loads it.

    Engine arguments become flags (``kv_cache_dtype="fp8"`` -> ``--kv-cache-dtype fp8``, ``True`` -> a bare
    flag); environment variables vLLM needs (``VLLM_CPU_KVCACHE_SPACE`` on CPU) are prefixed. No
    ``--quantization`` flag: vLLM detects compressed-tensors and ModelOpt checkpoints itself.
    """
    env = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(plan.env.items()) if k not in _QUANTKIT_ONLY_ENV]
    words = ["vllm", "serve", shlex.quote(str(path))]
    for key, value in plan.engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            words += [flag, shlex.quote(str(value))]
    return " ".join(env + words)


def load_call(path: str | Path, hardware: str, kv_cache_dtype: str | None = None,
              engine_args: dict[str, Any] | None = None) -> str:
    """The Python call that loads ``path`` (what a notebook would type)."""
    args = [repr(str(path)), f"hardware={hardware!r}"]
    if kv_cache_dtype:
        args.append(f"kv_cache_dtype={kv_cache_dtype!r}")
    args += [f"{k}={v!r}" for k, v in (engine_args or {}).items()]
    return f"from quantkit import load; llm = load({', '.join(args)})"


@contextmanager
def json_errors(as_json: bool) -> Iterator[None]:
    """With ``--json``, a quantkit error also prints ``{"ok": false, "error": {...}}`` on stdout.

    The error is re-raised, so ``quantkit.cli.main`` still prints the readable paragraph on stderr and picks
    the exit code (2 bad input, 1 otherwise). A machine reading stdout always gets one JSON object.
    """
    try:
        yield
    except QuantkitError as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": exc.to_dict()}))
        raise


@contextmanager
def work_output_to_stderr() -> Iterator[None]:
    """Send whatever the libraries print while a command works to stderr; stdout is for the command's result.

    llm-compressor attaches its loguru console sink to ``sys.stdout`` when it is first imported, ModelOpt and
    vLLM print progress there too; inside this block ``sys.stdout`` is stderr, so ``--json`` output stays the
    only thing on stdout.
    """
    with redirect_stdout(sys.stderr):
        yield


def vllm_here() -> bool:
    """Whether this interpreter can import vLLM (the serve environment) -- without importing it."""
    return importlib.util.find_spec("vllm") is not None


def route_vllm_logs_to_stderr() -> None:
    """vLLM logs to stdout by default; stdout of a quantkit command is for its result (``--json``)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:  # --quiet
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def run_probe(path: Path, *, hardware: str | None, prompts: list[str] | None, max_tokens: int, perplexity: bool,
              eval_tokens: int, speed: bool, kv_cache_dtype: str | None,
              engine_args: dict[str, Any]) -> dict[str, Any]:
    """Load ``path`` in vLLM and measure it: in this process when vLLM is here, else in the serve environment.

    The serve environment answers ``python -m quantkit generate PATH --json``, so both routes return the
    same JSON object.
    """
    if vllm_here():
        route_vllm_logs_to_stderr()
        from quantkit.serve.probe import DEFAULT_PROMPTS, probe

        return probe(path, hardware=hardware, prompts=tuple(prompts) if prompts else DEFAULT_PROMPTS,
                     max_tokens=max_tokens, perplexity=perplexity, eval_tokens=eval_tokens, speed=speed,
                     kv_cache_dtype=kv_cache_dtype, **engine_args)
    from quantkit.serve.remote import probe_remote, serve_python

    py = serve_python()  # EnvironmentNotFoundError (with the fix) when there is no serve environment
    # compare without resolving symlinks: every venv's python links to the same base interpreter
    if os.path.abspath(py) == os.path.abspath(sys.executable):  # pragma: no cover - vLLM vanished under us
        raise EnvironmentNotFoundError("The serve environment's python cannot import vLLM.",
                                       fix="Recreate it: scripts/setup_envs.sh serve.")
    extra: list[str] = []
    if kv_cache_dtype:
        extra += ["--kv-cache-dtype", kv_cache_dtype]
    for key, flag in (("tensor_parallel_size", "--tensor-parallel-size"), ("max_model_len", "--max-model-len")):
        if engine_args.get(key) is not None:
            extra += [flag, str(engine_args[key])]
    return probe_remote(path, hardware=hardware, perplexity=perplexity, speed=speed, max_tokens=max_tokens,
                        eval_tokens=eval_tokens, prompts=prompts, extra=extra, python=py)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """``quantkit.json`` of a checkpoint quantkit wrote (scheme, backend, target, notes), or None."""
    f = Path(path) / "quantkit.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    except (OSError, ValueError):
        return None


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
    from quantkit.serve.engine import default_hardware, serve_plan

    with json_errors(as_json):
        engine_args = {k: v for k, v in {"tensor_parallel_size": tensor_parallel_size,
                                         "max_model_len": max_model_len}.items() if v is not None}
        target = hardware or default_hardware()
        plan = serve_plan(path, target, kv_cache_dtype=kv_cache_dtype, **engine_args)
        from quantkit.hardware import get_hardware

        target = get_hardware(target).name
        manifest = read_manifest(path)
        data: dict[str, Any] = {
            "ok": True,
            "path": str(path),
            "hardware": target,
            "quant_method": plan.quant_method,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "kv_reason": plan.kv_reason,
            "engine_args": plan.engine_args,
            "env": {k: v for k, v in plan.env.items() if k not in _QUANTKIT_ONLY_ENV},
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
