"""Which vLLM scheme a config group becomes, and what it expects on disk.

:func:`resolve_group` follows ``CompressedTensorsConfig._get_scheme_from_parts`` (vLLM 0.32) branch by
branch, without torch: the first matching branch names the vLLM scheme class; no match is vLLM's
``No compressed-tensors compatible scheme was found``. ModelOpt algorithms and GPTQ/AWQ map directly.
Each :class:`Resolved` also names the quantkit scheme it corresponds to (for the hardware table) and the
on-disk tensor layout the rules check scales against.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantkit.validation.qconfig import ACTIVATION_FORMATS, Group, QArgs
from quantkit.vllm_facts import ACTORDER_RUNTIME, ACTORDER_RUNTIME_REFUSED_FROM, MODELOPT_ALGOS


@dataclass(frozen=True)
class Resolved:
    """A scheme vLLM implements for a layer.

    ``layout`` names the tensors expected on disk: ``ct-fp8`` / ``ct-int8`` (``weight`` + ``weight_scale``),
    ``ct-packed`` (int ``weight_packed``), ``ct-nvfp4``, ``ct-mxfp4``, ``ct-mxfp8``, ``mo-fp8``,
    ``mo-nvfp4``, ``mo-mxfp8``, ``gptq``, ``awq``. ``group_size`` is the quantization group along the input
    dimension (None for per-tensor/channel), ``block`` the FP8 block shape.
    """

    vllm_scheme: str
    quantkit_scheme: str | None
    layout: str
    weight_bits: int
    group_size: int | None = None
    block: tuple[int, int] | None = None
    weight_only: bool = False
    symmetric: bool = True
    static_input: bool = False
    input_kind: str | None = None  # "fp4" for NVFP4 W4A4
    weight_strategy: str = "channel"
    exact_capability: int | None = None


def _nvfp4(a: QArgs | None) -> bool:
    return (a is not None and a.strategy == "tensor_group" and a.type == "float" and a.num_bits == 4
            and a.group_size == 16 and a.symmetric)


def _mxfp4(a: QArgs | None) -> bool:
    return (a is not None and a.strategy == "group" and a.type == "float" and a.num_bits == 4
            and a.group_size == 32 and a.symmetric)


def _mxfp8(a: QArgs) -> bool:
    return (a.strategy == "group" and a.type == "float" and a.num_bits == 8 and a.group_size == 32
            and a.symmetric and "uint8" in str(a.scale_dtype or ""))


def _int_layout(fmt: str | None) -> str:
    """Integer weights are int32-packed (``pack-quantized``) or one int8 per value (``int-quantized``)."""
    return "ct-packed" if fmt == "pack-quantized" else "ct-int8"


def _fp8_weight(w: QArgs) -> bool:
    return w.type == "float" and w.symmetric and not w.dynamic and w.strategy in ("tensor", "channel", "block")


def resolve_group(group: Group, global_format: str | None) -> Resolved | str:
    """The vLLM scheme for one compressed-tensors group, or the reason vLLM refuses it."""
    w, i, o = group.weights, group.inputs, group.outputs
    fmt = group.format or global_format
    if group.problem:
        return group.problem
    if w is None:
        return Resolved("unquantized", None, "dense", 16)
    if w.actorder in ACTORDER_RUNTIME:
        return (f"activation ordering actorder={w.actorder!r} (a g_idx permutation at run time) is refused by vLLM "
                f"{'.'.join(map(str, ACTORDER_RUNTIME_REFUSED_FROM))} and later (vllm#54809; RFC vllm#48148): "
                "re-quantize with GPTQModifier(actorder='static'), llm-compressor's default, which needs nothing at "
                "run time")
    if _nvfp4(w):
        if i is None:
            return Resolved("CompressedTensorsW4A4Fp4 (A16)", "nvfp4a16", "ct-nvfp4", 4, 16,
                            weight_only=True, weight_strategy=w.strategy)
        if not _nvfp4(i):
            return "for NVFP4 weights vLLM needs NVFP4 input activations (or none, for NVFP4A16)"
        return Resolved("CompressedTensorsW4A4Fp4", "nvfp4", "ct-nvfp4", 4, 16, input_kind="fp4",
                        weight_strategy=w.strategy)
    if _mxfp4(w):
        if (i is not None and i.type == "float" and i.num_bits == 8 and not w.dynamic and i.dynamic
                and i.strategy in ("token", "group") and i.symmetric):
            return Resolved("CompressedTensorsW4A8Mxfp4", None, "ct-mxfp4", 4, 32, weight_strategy=w.strategy)
        return Resolved("CompressedTensorsW4A4Mxfp4", "mxfp4a16", "ct-mxfp4", 4, 32, weight_only=i is None,
                        weight_strategy=w.strategy)
    if _mxfp8(w):
        return Resolved("CompressedTensorsW8A8Mxfp8", None, "ct-mxfp8", 8, 32, weight_strategy=w.strategy)
    int_group = w.type == "int" and w.strategy in ("channel", "group") and not w.dynamic
    if (w.type == "int" and i is not None and i.type == "float" and w.num_bits == 4 and i.num_bits == 8
            and w.strategy == "group" and i.strategy == "token" and i.dynamic and w.symmetric and i.symmetric):
        return Resolved("CompressedTensorsW4A8Fp8", None, _int_layout(fmt), 4, w.group_size,
                        weight_strategy=w.strategy, exact_capability=90)
    if (int_group and fmt in ("pack-quantized", "int-quantized") and i is not None and i.type == "int"
            and i.strategy == "tensor" and i.num_bits == 8 and not i.dynamic and o is not None
            and o.type == "int" and o.strategy == "tensor" and o.num_bits == 8 and not o.dynamic):
        return Resolved("CompressedTensorsWNA8O8Int", None, "ct-packed" if fmt == "pack-quantized" else "ct-int8",
                        w.num_bits, w.group_size if w.strategy == "group" else None,
                        symmetric=w.symmetric, static_input=True, weight_strategy=w.strategy)
    if (int_group and fmt == "pack-quantized" and i is not None and i.type == "int" and i.symmetric
            and i.dynamic and i.strategy in ("token", "group") and i.num_bits in (4, 8)):
        name = "CompressedTensorsWNA8Int" if i.num_bits == 8 else "CompressedTensorsWNA4Int"
        qk = "w4a8-int" if w.num_bits == 4 and i.num_bits == 8 else None
        return Resolved(name, qk, "ct-packed", w.num_bits, w.group_size if w.strategy == "group" else None,
                        symmetric=w.symmetric, weight_strategy=w.strategy)
    if int_group and i is None and fmt == "pack-quantized":
        qk = None
        if w.num_bits == 4:
            qk = "w4a16" if w.symmetric else "w4a16-awq"
        elif w.num_bits == 8 and w.symmetric:
            qk = "w8a16"
        return Resolved("CompressedTensorsWNA16", qk, "ct-packed", w.num_bits,
                        w.group_size if w.strategy == "group" else None, weight_only=True,
                        symmetric=w.symmetric, weight_strategy=w.strategy)
    if fmt in ACTIVATION_FORMATS:
        if i is None and w.type != "float":
            return (f"format {fmt!r} quantizes activations but the group has no input_activations and "
                    "integer weights (vLLM asserts float weights here)")
        if i is not None and _fp8_weight(w) and i.type == "float" and (
                i.dynamic or (i.symmetric and i.strategy == "tensor")):
            if w.strategy == "block":
                qk = "fp8-block"
            elif i.dynamic:
                qk = "fp8-dynamic"
            else:
                qk = "fp8-static"
            return Resolved("CompressedTensorsW8A8Fp8", qk, "ct-fp8", 8,
                            w.block_structure[1] if w.block_structure else None, block=w.block_structure,
                            static_input=not i.dynamic, weight_strategy=w.strategy)
        if _fp8_weight(w):
            return Resolved("CompressedTensorsW8A16Fp8", None, "ct-fp8", 8,
                            w.block_structure[1] if w.block_structure else None, block=w.block_structure,
                            weight_only=True, static_input=bool(i is not None and not i.dynamic),
                            weight_strategy=w.strategy)
        if i is not None and w.num_bits == 8 and i.num_bits == 8 and w.symmetric \
                and w.strategy in ("tensor", "channel") and not w.dynamic:
            if i.strategy == "tensor" and not i.dynamic:
                return Resolved("CompressedTensorsW8A8Int8", "w8a8-int8", "ct-int8", 8, static_input=True,
                                weight_strategy=w.strategy)
            if i.strategy == "token" and i.dynamic:
                return Resolved("CompressedTensorsW8A8Int8", "w8a8-int8", "ct-int8", 8,
                                weight_strategy=w.strategy)
        if (i is not None and w.type == "int" and i.type == "int" and w.num_bits == 4 and i.num_bits == 8
                and w.strategy in ("group", "channel") and i.strategy == "token" and i.dynamic
                and not w.dynamic and w.symmetric):
            return Resolved("CompressedTensorsW4A8Int", "w4a8-int", _int_layout(fmt), 4,
                            w.group_size if w.strategy == "group" else None, weight_strategy=w.strategy)
    return (f"no vLLM compressed-tensors scheme implements weights [{w.describe()}], "
            f"input_activations [{i.describe() if i else 'none'}]"
            + (f", output_activations [{o.describe()}]" if o else "") + f", format {fmt!r}")


#: ModelOpt quant_algo -> what vLLM builds for it (from the facts table)
MODELOPT_SCHEMES: dict[str, Resolved] = {
    a.algo: Resolved(a.label, a.scheme, a.layout, a.bits, a.group_size, static_input=a.static_input,
                     input_kind=a.input_kind, weight_strategy=a.weight_strategy, block=a.block,
                     weight_only=a.weight_only)
    for a in MODELOPT_ALGOS.values() if a.layout
}


def resolve_modelopt(algo: str | None, group_size: int | None) -> Resolved | None:
    base = MODELOPT_SCHEMES.get(algo or "")
    if base is None:
        return None
    if base.layout == "mo-nvfp4" and group_size and group_size != base.group_size:
        from dataclasses import replace

        return replace(base, group_size=group_size)
    return base


def resolve_gptq_awq(group: Group, style: str) -> Resolved | str:
    if group.problem or group.weights is None:
        return group.problem or "no weight quantization settings"
    w = group.weights
    qk = "w4a16" if style == "gptq" else "w4a16-awq"
    return Resolved(f"{style.upper()} (Marlin when eligible)", qk if w.num_bits == 4 else None, style,
                    w.num_bits, w.group_size if w.group_size and w.group_size > 0 else None, weight_only=True,
                    symmetric=w.symmetric, weight_strategy=w.strategy)
