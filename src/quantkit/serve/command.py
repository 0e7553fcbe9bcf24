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


#: environment that quantkit sets for its own runs only (a cache location); not part of a serve command
QUANTKIT_ONLY_ENV = frozenset({"VLLM_CACHE_ROOT"})


def flag_name(key: str) -> str:
    """``kv_cache_dtype`` -> ``--kv-cache-dtype``."""
    return "--" + key.replace("_", "-")


def serve_argv(path: str | Path, engine_args: Mapping[str, Any]) -> list[str]:
    """``["vllm", "serve", PATH, "--flag", "value", ...]`` unquoted, as ``os.execvp`` takes it."""
    words = ["vllm", "serve", str(path)]
    for key, value in engine_args.items():
        if value is True:
            words.append(flag_name(key))
        elif value is not None and value is not False:
            words += [flag_name(key), str(value)]
    return words


def serve_flags(engine_args: Mapping[str, Any]) -> list[str]:
    """``vllm.LLM`` engine arguments as ``vllm serve`` flags (values shell-quoted)."""
    return [shlex.quote(w) for w in serve_argv("", engine_args)[3:]]


def env_prefix(env: Mapping[str, str]) -> list[str]:
    """``KEY=value`` words for a shell line, sorted, values quoted."""
    return [f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]


def vllm_serve_line(path: str | Path, engine_args: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """``ENV=... vllm serve PATH --flag value ...``, shell-quoted."""
    return " ".join([*env_prefix(env), *(shlex.quote(w) for w in serve_argv(path, engine_args))])
