"""The ``vllm serve`` command line for a set of engine arguments and environment variables.

Engine arguments become flags (``kv_cache_dtype="fp8"`` -> ``--kv-cache-dtype fp8``, ``True`` -> a bare flag,
None/False -> nothing); environment variables vLLM needs are prefixed. No ``--quantization`` flag: vLLM detects
compressed-tensors and ModelOpt checkpoints itself. Used by ``Plan.vllm_serve_command`` and the CLI.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def serve_flags(engine_args: Mapping[str, Any]) -> list[str]:
    """``vllm.LLM`` engine arguments as ``vllm serve`` flags."""
    words: list[str] = []
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            words += [flag, shlex.quote(str(value))]
    return words


def vllm_serve_line(path: str | Path, engine_args: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """``ENV=... vllm serve PATH --flag value ...``, shell-quoted."""
    prefix = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    return " ".join([*prefix, "vllm", "serve", shlex.quote(str(path)), *serve_flags(engine_args)])
