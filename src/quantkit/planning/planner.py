"""``quantkit.plan()``: what to produce for a GPU and a workload, and how to serve it -- with the reasons.

A plan reads the checkpoint's ``config.json`` and safetensors headers (never tensor data, never torch),
then: describes the architecture, builds the ignore list from the on-disk module names, picks a scheme by
the first matching row of :data:`~quantkit.planning.rules.SELECTION_RULES`, picks the KV-cache dtype, and
sizes weights + KV cache for every scheme the target runs. The result says which rule fired, why, what the
alternatives were and why not, and which known pitfalls apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantkit import hardware as _hardware
from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import CheckpointReadError, QuantkitError, UnknownNameError, UnsupportedSchemeError
from quantkit.hardware import Hardware, get_hardware, support
from quantkit.planning.architectures import ModelTraits, describe
from quantkit.planning.ignore import check_ignore, checkpoint_module_names, explain_ignore, ignore_matcher
from quantkit.planning.kv import plan_kv_cache_dtype
from quantkit.planning.memory import BASELINE, GIB, MemoryFit, memory_fit, weight_inventory
from quantkit.planning.rules import (
    SELECTION_RULES,
    WARNING_RULES,
    WORKLOADS,
    PlanContext,
    SelectionRule,
    select_rule,
)
from quantkit.schemes import SCHEMES, Scheme, get_scheme


class PlanOptionError(QuantkitError, ValueError):
    """A plan() option is out of range (context length, concurrency, tensor-parallel size)."""

    default_rule = "QK001"


@dataclass(frozen=True)
class Plan:
    """What to produce for a target and how to serve it, with the reasons.

    ``alternatives`` pairs every other scheme with why it was not chosen (or when it would be);
    ``memory`` holds one :class:`~quantkit.planning.memory.MemoryFit` per scheme the target runs, the chosen
    one first and the unquantized ``bf16`` reference last. ``vllm_args`` are the engine arguments the plan
    implies (``load()`` applies ``kv_cache_dtype``).
    """

    model: str
    hardware: str
    workload: str
    scheme: str
    backend: str
    kv_cache_dtype: str
    ignore: list[str]
    rule: str
    reasons: list[str]
    alternatives: list[tuple[str, str]]
    warnings: list[str]
    memory: list[MemoryFit]
    tensor_parallel_size: int
    vllm_args: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    ignore_reasons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fit(self) -> MemoryFit:
        """The memory fit of the chosen scheme."""
        return self.memory[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole plan."""
        out = asdict(self)
        out["alternatives"] = [{"scheme": s, "why": w} for s, w in self.alternatives]
        out["ignore_reasons"] = [{"entry": e, "why": w} for e, w in self.ignore_reasons]
        return out

    def summary(self) -> str:
        """One line: scheme, producer, KV dtype, TP size, target and the rule that fired."""
        fits = "fits" if self.fit.fits else "does not fit"
        return (f"{self.scheme} via {self.backend}, KV {self.kv_cache_dtype}, TP {self.tensor_parallel_size} on "
                f"{self.hardware} ({fits}; rule {self.rule})")

    def __str__(self) -> str:
        arch = self.architecture
        lines = [
            f"Plan for {Path(self.model).name} ({arch.get('family', '?')}) on {self.hardware}, "
            f"workload {self.workload}",
            f"  scheme     {self.scheme} via {self.backend}  (rule {self.rule})",
            f"  KV cache   {self.kv_cache_dtype}",
            f"  ignore     {', '.join(self.ignore)}",
            "  serve      " + ", ".join(f"{k}={v}" for k, v in self.vllm_args.items()),
            "Why:",
            *(f"  - {r}" for r in self.reasons),
            "Alternatives:",
            *(f"  - {s}: {w}" for s, w in self.alternatives),
            f"Memory (max_model_len {self.vllm_args.get('max_model_len')}, "
            f"{self.vllm_args.get('max_num_seqs')} sequences, KV {self.kv_cache_dtype}):",
            *(f"  {m.row()}" for m in self.memory),
        ]
        if self.warnings:
            lines += ["Warnings:", *(f"  ! {w}" for w in self.warnings)]
        return "\n".join(lines)


def _resolve(model: str | Path | None) -> Path:
    from quantkit.models.loading import resolve_model_path

    return resolve_model_path(model)


def _choose_backend(rule: SelectionRule, scheme: Scheme, traits: ModelTraits) -> tuple[str, str]:
    if rule.backend == "modelopt" and scheme.modelopt is not None and scheme.modelopt.vllm_loadable:
        mo = scheme.modelopt
        if traits.tied_embeddings and scheme.llmcompressor is not None:
            return "llmcompressor", (
                f"producer llm-compressor ({scheme.llmcompressor.preset}): ModelOpt exports of tied-embedding "
                "models fail to load in vLLM (vllm#45543); compressed-tensors output loads")
        if mo.needs_cuda and _hardware.query_local_gpu() is None and scheme.llmcompressor is not None:
            return "llmcompressor", (
                f"producer llm-compressor ({scheme.llmcompressor.preset}): ModelOpt {mo.config} calibrates on a "
                "CUDA GPU and none is visible here; llm-compressor writes the same format as compressed-tensors")
        return "modelopt", (f"producer ModelOpt ({mo.config}): NVIDIA's path for {scheme.name}, loaded by vLLM as "
                            f"{'modelopt_fp4' if 'FP4' in mo.quant_algo else 'modelopt'}; llm-compressor is the "
                            "alternative")
    if scheme.llmcompressor is None:
        assert scheme.modelopt is not None  # every scheme has at least one producer (schemes table)
        return "modelopt", f"producer ModelOpt ({scheme.modelopt.config}): the only producer of {scheme.name}"
    rec = scheme.llmcompressor
    data = "data-free" if not scheme.needs_calibration else f"{rec.algorithm} with calibration data"
    return "llmcompressor", (f"producer llm-compressor ({rec.preset}, {data}): compressed-tensors output that "
                             "vLLM detects without flags")


def _marlin_warning(scheme: Scheme, hw: Hardware, tensors: Any, names: list[str], ignore: list[str]) -> str | None:
    sup = support(scheme, hw)
    if hw.kind != "cuda" or not any(k in sup.kernel for k in ("Marlin", "Machete")):
        return None
    bad = []
    ignored = ignore_matcher(ignore)
    for n in names:
        if ignored(n):
            continue
        info = tensors.get(n + ".weight")
        if info is None or len(info.shape) != 2:
            continue
        out_f, in_f = info.shape
        if in_f % 128 or out_f % 64:
            bad.append(f"{n} [{out_f}x{in_f}]")
    if not bad:
        return None
    return (f"[marlin-shape] {len(bad)} quantized layers have shapes Marlin does not tile (in_features % 128, "
            f"out_features % 64), e.g. {bad[0]}: vLLM pads them or falls back to a slower kernel")


def _architecture(traits: ModelTraits) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for spec in traits.layers:
        kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
    return {"family": traits.family, "model_type": traits.model_type, "description": traits.description,
            "moe": traits.moe, "num_experts": traits.num_experts, "mla": traits.mla, "hybrid": traits.hybrid,
            "vision": traits.vision, "mtp": traits.mtp, "tied_embeddings": traits.tied_embeddings,
            "layers": kinds, "quant_method": traits.quant_method}


def _model_reason(traits: ModelTraits) -> str:
    facts = []
    if traits.moe:
        facts.append(f"MoE ({traits.num_experts} experts)" if traits.num_experts else "MoE")
    if traits.mla:
        facts.append("MLA attention")
    if traits.hybrid:
        n_lin = sum(1 for s in traits.layers if s.kind in ("linear", "mamba"))
        facts.append(f"hybrid: {n_lin} of {len(traits.layers)} layers are linear-attention/Mamba")
    if traits.vision:
        facts.append("vision tower")
    if traits.mtp:
        facts.append("MTP layers")
    if traits.tied_embeddings:
        facts.append("tied embeddings")
    tail = f" ({', '.join(facts)})" if facts else ""
    return f"model: {traits.family}, {traits.description}{tail}"


def _alternative(sch: Scheme, hw: Hardware, traits: ModelTraits, chosen: MemoryFit,
                 fits: dict[str, MemoryFit]) -> str:
    sup = support(sch, hw)
    if not sup.runs:
        return f"not served on {hw.name}: {sup.reason}"
    picked = []
    for rule in SELECTION_RULES:
        if rule.scheme != sch.name or rule.kind != hw.kind:
            continue
        for crit in (False, True):
            for w in WORKLOADS:
                if rule.applies(hw, traits, w, crit):
                    fired, _ = select_rule(hw, traits, w, crit)
                    if fired is rule:
                        picked.append(f"workload={w}" + (" accuracy-critical" if crit else ""))
    fallback = "" if sup.native else f" (fallback kernel: {sup.kernel})"
    fit = fits.get(sch.name)
    size = (f"; weights {fit.weight_bytes / GIB:.2f} GiB vs {chosen.weight_bytes / GIB:.2f} GiB"
            if fit is not None else "")
    if picked:
        return f"chosen instead for {', '.join(dict.fromkeys(picked))}{fallback}{size}"
    return f"runs{fallback} but no rule prefers it here; best for: {sch.best_for}{size}"


def plan(model: str | Path | None, hardware: str | Hardware | None = None, *, workload: str = "balanced",
         kv_cache: str | None = None, max_model_len: int = 4096, concurrency: int = 16,
         tensor_parallel_size: int | None = None, accuracy_critical: bool = False) -> Plan:
    """Plan how to quantize and serve a checkpoint on a target, with reasons and a memory fit.

    Args:
        model: a checkpoint directory (``config.json`` + ``*.safetensors``), or None / ``"embedded"``.
        hardware: a name from ``quantkit hardware`` (``h100``, ``b200``, ``cpu``, ...); None detects the
            local GPU (``nvidia-smi``) and falls back to ``cpu``.
        workload: ``balanced`` | ``accuracy`` | ``throughput`` | ``memory`` (see planning/rules.py).
        kv_cache: force ``"auto"`` or ``"fp8"``; None lets the plan choose.
        max_model_len: context length per sequence for the memory fit.
        concurrency: sequences held at once for the memory fit.
        tensor_parallel_size: GPUs to fit on; None reports the smallest TP size that fits.
        accuracy_critical: 4-bit only where needed, and then GPTQ-calibrated W4A16 rather than W4A4.

    Returns:
        A :class:`Plan`.

    Raises:
        UnknownNameError: unknown hardware, workload or KV-cache dtype.
        ModelNotFoundError / CheckpointReadError: the checkpoint is missing, unreadable or has no safetensors.
        UnsupportedSchemeError: no scheme in the table runs on the target, or ``kv_cache='fp8'`` cannot run.
        PlanOptionError: a non-positive context length, concurrency or TP size.
    """
    if workload not in WORKLOADS:
        raise UnknownNameError.for_name("workload", workload, WORKLOADS)
    for opt, value in (("max_model_len", max_model_len), ("concurrency", concurrency),
                       ("tensor_parallel_size", tensor_parallel_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PlanOptionError(f"{opt} must be a positive integer, got {value!r}.",
                                  fix=f"Pass {opt}=1 or more.")
    path = _resolve(model)
    hw = get_hardware(hardware) if hardware is not None else _hardware.default_hardware()
    view = CheckpointView(path)
    config = view.config
    tensors = view.tensors
    names = checkpoint_module_names(tensors)
    traits = describe(config, names)

    if not tensors:
        raise CheckpointReadError(
            f"{path} has no safetensors weights: planning reads tensor names and shapes from their headers.",
            fix="Convert the checkpoint to safetensors (transformers' save_pretrained does by default).")
    entries = explain_ignore(names, config=config)
    ignore = [e.entry for e in entries]
    warnings = [f"[ignore] {p}" for p in check_ignore(ignore, names)]

    rule, skipped = select_rule(hw, traits, workload, accuracy_critical)
    if rule is None:
        runnable = [s.name for s in SCHEMES.values() if support(s, hw).runs]
        raise UnsupportedSchemeError(
            f"No selection rule gives a scheme that {hw.name} runs for workload {workload!r}"
            + (f" (skipped: {'; '.join(f'{r.id}: {why}' for r, why in skipped)})" if skipped else "") + ".",
            fix=f"Pass scheme= explicitly ({', '.join(runnable) or 'none runs here'}) or another hardware.")
    scheme = get_scheme(rule.scheme)
    sup = support(scheme, hw)
    backend, backend_reason = _choose_backend(rule, scheme, traits)
    kv, kv_reasons, kv_warnings = plan_kv_cache_dtype(traits, hw, workload=workload, requested=kv_cache)
    warnings += kv_warnings

    fit_args = dict(kv_cache_dtype=kv, max_model_len=max_model_len, concurrency=concurrency,
                    tensor_parallel_size=tensor_parallel_size, ignore=ignore, config=config)
    inventory = weight_inventory(view, ignore=ignore, config=config)
    runnable = [s for s in SCHEMES.values() if s.name != scheme.name and support(s, hw).runs]
    fits = {s.name: memory_fit(view, s, hw, weight_bytes=inventory.bytes_for(s), **fit_args)
            for s in [scheme, *runnable]}
    chosen = fits[scheme.name]
    baseline = memory_fit(view, BASELINE, hw, weight_bytes=inventory.bytes_for(None), **fit_args)
    memory = [chosen, *sorted((fits[s.name] for s in runnable), key=lambda m: m.weight_bytes), baseline]

    reasons = [
        f"{hw.description}: rule {rule.id} ({rule.condition()}) picks {scheme.name}: {rule.why}"
        + (f" [{rule.upstream}]" if rule.upstream else ""),
        _model_reason(traits),
        f"kernel on {hw.name}: {sup.kernel}" + ("" if sup.native else f" (fallback: {sup.reason})"),
        backend_reason,
        *kv_reasons,
        "ignore (kept 16-bit): " + "; ".join(
            f"{e.entry} ({e.rule}, {e.matches} module{'s' if e.matches != 1 else ''})" if e.matches
            else f"{e.entry} (tied embeddings)" for e in entries),
    ]
    per_gpu = chosen.per_gpu_bytes / GIB
    unit = "host" if hw.kind == "cpu" else "GPU"
    where = "this host" if hw.kind == "cpu" else f"{chosen.gpus} x {hw.name}"
    if chosen.fits:
        reasons.append(f"memory: fits on {where} ({per_gpu:.2f} GiB of {chosen.capacity_per_gpu_bytes / GIB:.2f} "
                       f"GiB usable per {unit}); weights {chosen.weight_bytes / GIB:.2f} GiB vs "
                       f"{baseline.weight_bytes / GIB:.2f} GiB unquantized")
    else:
        others = [f"{m.scheme} (TP {m.tp_needed})" for m in memory[1:] if m.tp_needed is not None]
        instead = (f"Schemes that fit one node: {', '.join(others)}." if others
                   else "No scheme fits one node at this context length and concurrency.")
        warnings.append(f"[memory] {scheme.name} does not fit {where} for {concurrency} x {max_model_len} tokens "
                        f"({per_gpu:.2f} GiB needed per {unit}, {chosen.capacity_per_gpu_bytes / GIB:.2f} GiB "
                        f"usable). {chosen.note}. {instead}")
    reasons += [f"skipped rule {r.id} ({r.scheme}): {why}" for r, why in skipped]

    alternatives = [(s.name, _alternative(s, hw, traits, chosen, fits)) for s in SCHEMES.values()
                    if s.name != scheme.name]

    ctx = PlanContext(traits, hw, scheme.name, backend, kv, workload)
    warnings += [w.render() for w in WARNING_RULES if w.check(ctx)]
    marlin = _marlin_warning(scheme, hw, tensors, names, ignore)
    if marlin:
        warnings.append(marlin)

    tp = chosen.gpus
    vllm_args: dict[str, Any] = {"tensor_parallel_size": tp, "max_model_len": max_model_len,
                                 "max_num_seqs": concurrency}
    if kv != "auto":
        vllm_args["kv_cache_dtype"] = kv
    return Plan(
        model=str(path), hardware=hw.name, workload=workload, scheme=scheme.name, backend=backend,
        kv_cache_dtype=kv, ignore=ignore, rule=rule.id, reasons=reasons, alternatives=alternatives,
        warnings=warnings, memory=memory, tensor_parallel_size=tp, vllm_args=vllm_args,
        architecture=_architecture(traits),
        ignore_reasons=[(e.entry, f"{e.why} ({e.matches} modules)" + (f" [{e.upstream}]" if e.upstream else ""))
                        for e in entries],
    )
