"""``validate()``: read headers, run every rule, return a report."""

from __future__ import annotations

import time
from pathlib import Path

from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import PlanOptionError, UnknownNameError
from quantkit.hardware import Hardware, get_hardware
from quantkit.validation.checks import run_checks
from quantkit.validation.context import Context, Target
from quantkit.validation.report import ValidationReport
from quantkit.validation.vllm_registry import (
    KNOWN_VLLM_VERSIONS,
    installed_vllm_version,
    newest_known_version,
    parse_version,
    vllm_facts,
)


def _target(hardware: str | Hardware | None, tensor_parallel_size: int | None, vllm_version: str | None) -> Target:
    hw = get_hardware(hardware) if hardware is not None else None
    tp = 1 if tensor_parallel_size is None else tensor_parallel_size
    if type(tp) is not int or tp < 1:
        raise PlanOptionError(f"tensor_parallel_size must be a positive integer, got {tensor_parallel_size!r}.",
                               fix="Pass the number of GPUs vLLM will shard each layer across (1, 2, 4, 8).")
    if vllm_version is not None:
        if not parse_version(vllm_version):
            raise UnknownNameError(f"vLLM version {vllm_version!r} is not a version number.",
                                   fix=f"Pass a version such as {newest_known_version()} "
                                       f"(known: {', '.join(KNOWN_VLLM_VERSIONS)}).")
        return Target(hw, tp, str(vllm_version), "option")
    installed = installed_vllm_version()
    if installed is not None:
        return Target(hw, tp, installed, "installed")
    return Target(hw, tp, newest_known_version(), "newest known")


def validate(path: str | Path, hardware: str | Hardware | None = None, *, tensor_parallel_size: int | None = None,
             vllm_version: str | None = None) -> ValidationReport:
    """Say whether vLLM will load the checkpoint at ``path`` and serve it correctly, from headers alone.

    Reads ``config.json``, ``hf_quant_config.json``, ``model.safetensors.index.json`` and the safetensors
    headers -- no tensor data (except NVFP4 global-scale scalars, 4 bytes each), no torch, no GPU -- and runs
    every rule in :data:`quantkit.validation.rules.RULES`.

    Args:
        path: the checkpoint directory.
        hardware: serving target name from ``quantkit hardware`` (``"h100"``, ``"b200"``, ``"cpu"``, ...);
            without it the hardware rule is skipped and Marlin eligibility assumes a CUDA GPU.
        tensor_parallel_size: check group sizes and Marlin shapes per tensor-parallel shard.
        vllm_version: the vLLM version to check version-gated rules against; defaults to the installed vLLM,
            else the newest version quantkit knows.

    Returns:
        A :class:`ValidationReport`; ``report.ok`` is False when any finding is an error.

    Raises:
        CheckpointReadError: the checkpoint cannot be read at all (missing path or config.json, JSON that
            does not parse, a truncated or corrupt safetensors header).
        UnknownNameError: ``hardware`` or ``vllm_version`` is not valid; the message lists the valid values.
        PlanOptionError: ``tensor_parallel_size`` is not a positive integer.
    """
    t0 = time.perf_counter()
    facts = vllm_facts()
    target = _target(hardware, tensor_parallel_size, vllm_version)
    view = CheckpointView(path)
    try:
        # read everything that can make the checkpoint unreadable up front, so that a CheckpointReadError
        # surfaces as such and never as a finding
        t_read = time.perf_counter()
        _ = view.config, view.hf_quant_config, view.index, view.weight_map, view.shards
        t_read = time.perf_counter() - t_read
        ctx = Context(view, facts, target)
        run_checks(ctx)
        try:
            spec = ctx.spec
        except Exception:  # noqa: BLE001 - already reported as a validator-internal finding by the check that hit it
            spec = None
    finally:
        view.close()
    stats = {"shards": len(view.shards), "tensors": len(view.tensors), "header_bytes_read": view.header_bytes_read,
             "tensor_bytes_read": view.tensor_bytes_read, "seconds": round(time.perf_counter() - t0, 4),
             "read_seconds": round(t_read, 4),
             "rule_seconds": {k: round(v, 4) for k, v in ctx.timings.items()}}
    return ValidationReport(
        path=str(view.path), quant_method=spec.method if spec else None, findings=ctx.findings.finish(),
        vllm_method=spec.vllm_method if spec else None, hardware=target.hardware.name if target.hardware else None,
        vllm_version=target.vllm_version, vllm_version_source=target.vllm_version_source, registry=facts.source,
        stats=stats)
