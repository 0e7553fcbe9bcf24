"""Helpers the command modules share: the ``vllm serve`` line, the Python ``load()`` call, JSON error output,
keeping producers' console output off stdout, and running a vLLM probe here or in the serve environment.

No command lives here; each command is a module of its own, registered in ``quantkit/cli/__init__.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from quantkit.errors import EnvironmentNotFoundError, QuantkitError
from quantkit.planning.production import PRODUCTION_CHOICES
from quantkit.serve.command import QUANTKIT_ONLY_ENV, vllm_serve_line

#: ``--path`` of ``quantkit plan`` / ``quantize`` (the names come from planning/production.py)
PATH_HELP = (f"Production path: {', '.join(PRODUCTION_CHOICES)}. 'model-free' quantizes shard by shard without "
             "loading the model (data-free schemes); 'offloaded' keeps the weights beyond a RAM budget on disk and "
             "calibrates one layer at a time; 'auto' takes one of them when the model does not fit host RAM.")

if TYPE_CHECKING:
    from quantkit.serve.engine import ServePlan



def vllm_serve_command(path: str | Path, plan: ServePlan) -> str:
    """The ``vllm serve`` command line that serves ``path`` the way :func:`quantkit.load` loads it.

    Engine arguments become flags (``kv_cache_dtype="fp8"`` -> ``--kv-cache-dtype fp8``, ``True`` -> a bare
    flag); environment variables vLLM needs (``VLLM_CPU_KVCACHE_SPACE`` on CPU) are prefixed. No
    ``--quantization`` flag: vLLM detects compressed-tensors and ModelOpt checkpoints itself.
    """
    env = {k: v for k, v in plan.env.items() if k not in QUANTKIT_ONLY_ENV}
    return vllm_serve_line(path, plan.engine_args, env)


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


def run_log_path(command: str) -> Path:
    """Where a command keeps what the libraries printed: ``$QUANTKIT_CACHE/logs/<command>-<time>-<pid>.log``."""
    from quantkit.models.embedded import cache_root

    return cache_root() / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


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
              engine_args: dict[str, Any], eval_data: str | None = None) -> dict[str, Any]:
    """Load ``path`` in vLLM and measure it: in this process when vLLM is here, else in the serve environment.

    The serve environment answers ``python -m quantkit generate PATH --json``, so both routes return the
    same JSON object.
    """
    if vllm_here():
        route_vllm_logs_to_stderr()
        from quantkit.serve.probe import DEFAULT_PROMPTS, probe

        return probe(path, hardware=hardware, prompts=tuple(prompts) if prompts else DEFAULT_PROMPTS,
                     max_tokens=max_tokens, perplexity=perplexity, eval_tokens=eval_tokens, speed=speed,
                     kv_cache_dtype=kv_cache_dtype, eval_data=eval_data, **engine_args)
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
                        eval_tokens=eval_tokens, prompts=prompts, extra=extra, python=py, eval_data=eval_data)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """``quantkit.json`` of a checkpoint quantkit wrote (scheme, backend, target, notes), or None."""
    f = Path(path) / "quantkit.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    except (OSError, ValueError):
        return None


#: the calibration budget options of `quantize` and `roundtrip` (None: the plan's figures)
NUM_SAMPLES_OPTION = typer.Option(
    None, "--num-samples", min=1,
    help="Calibration samples (default: the plan's; 512 for real models, 32 for the embedded demo).")
NPROC_OPTION = typer.Option(
    1, "--nproc", min=1,
    help="Processes that quantize together under torchrun (one per GPU; gloo on CPU), each calibrating on its "
         "share of the samples; rank 0 writes (GPTQ, SmoothQuant + GPTQ; AWQ on GPUs; docs/big-models.md).")
HOST_MEMORY_OPTION = typer.Option(
    None, "--host-memory", min=0.1,
    help="GiB of host RAM the producer may use (default: this machine's, or its container's cgroup limit); "
         "the production path and the refusal of a job that cannot fit follow it.")
SEQ_LEN_OPTION = typer.Option(
    None, "--seq-len", min=8,
    help="Tokens per calibration sample (default: the plan's; 2048 llm-compressor, 512 ModelOpt, 256 demo).")
