"""Rules about tensors: NVFP4 global scales, scale shapes, KV-cache scales, index consistency."""

from __future__ import annotations

import math
from functools import lru_cache
from collections import defaultdict
from collections.abc import Iterable

from quantkit.checkpoint.reader import DTYPE_BITS, INDEX_FILE
from quantkit.validation.checks import check
from quantkit.validation.context import Context
from quantkit.validation.layout import Layout
from quantkit.validation.resolve import Resolved

FLOAT_SCALE = ("BF16", "F16", "F32")
#: producer-internal tensors: quantizer amax buffers, NVFP4 double scales, ModelOpt ``*_quantizer.*`` state
_LEAKED_SUFFIXES = ("_amax", "_double_scale")
_KV_SUFFIXES = (".k_scale", ".v_scale", ".kv_scale", ".k_cache.scale", ".v_cache.scale")


def _scalar_shapes() -> tuple[tuple[int, ...], ...]:
    return (), (1,), (1, 1)


def _c(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=4096)
def expected_params(r: Resolved, out_f: int, in_f: int) -> list[tuple[str, tuple[str, ...], tuple[tuple[int, ...], ...] | None, bool]]:
    """(param, allowed dtypes, allowed shapes or None for any, required) for a quantized linear layer."""
    sc = _scalar_shapes()
    g = r.group_size or 0
    bits = r.weight_bits
    lay = r.layout
    if lay in ("ct-fp8", "ct-int8", "mo-fp8"):
        wdt = ("I8",) if lay == "ct-int8" else ("F8_E4M3", "F8_E5M2")
        sdt = ("F32",) if lay == "mo-fp8" else FLOAT_SCALE
        if r.block is not None:
            scale = ((_c(out_f, r.block[0]), _c(in_f, r.block[1])),)
        elif r.weight_strategy == "group" and g > 0:
            scale = ((out_f, _c(in_f, g)),)
        elif r.weight_strategy == "tensor":
            scale = sc
        else:
            scale = ((out_f, 1), (out_f,))
        out = [("weight", wdt, ((out_f, in_f),), True), ("weight_scale", sdt, scale, True)]
        if r.static_input:
            out.append(("input_scale", FLOAT_SCALE, sc, True))
        return out
    if lay == "ct-packed":
        out = [("weight_packed", ("I32",), ((out_f, _c(in_f * bits, 32)),), True),
               ("weight_scale", FLOAT_SCALE, ((out_f, _c(in_f, g)),) if g > 0 else ((out_f, 1), (out_f,)), True),
               ("weight_shape", ("I64", "I32"), ((2,),), False)]
        if not r.symmetric:
            out.append(("weight_zero_point", ("I32", "I8", "U8") + FLOAT_SCALE, None, True))
        return out
    if lay == "ct-nvfp4":
        out = [("weight_packed", ("U8",), ((out_f, _c(in_f, 2)),), True),
               ("weight_scale", ("F8_E4M3",), ((out_f, _c(in_f, 16)),), True),
               ("weight_global_scale", ("F32",), sc, True)]
        if r.input_kind == "fp4":
            out.append(("input_global_scale", ("F32",), sc, True))
        return out
    if lay == "ct-mxfp4":
        return [("weight_packed", ("U8",), ((out_f, _c(in_f, 2)),), True),
                ("weight_scale", ("U8", "F8_E8M0"), ((out_f, _c(in_f, 32)),), True)]
    if lay in ("ct-mxfp8", "mo-mxfp8"):
        return [("weight", ("F8_E4M3",), ((out_f, in_f),), True),
                ("weight_scale", ("U8", "F8_E8M0"), ((out_f, _c(in_f, 32)),), True)]
    if lay == "mo-nvfp4":
        group = g or 16
        out = [("weight", ("U8",), ((out_f, _c(in_f, 2)),), True),
               ("weight_scale", ("F8_E4M3",), ((out_f, _c(in_f, group)),), True),
               ("weight_scale_2", ("F32",), sc, True)]
        if r.input_kind == "fp4":
            out.append(("input_scale", ("F32",), sc, True))
        return out
    if lay in ("gptq", "awq"):
        groups = _c(in_f, g) if g > 0 else 1
        packed = ((_c(in_f * bits, 32), out_f),) if lay == "gptq" else ((in_f, _c(out_f * bits, 32)),)
        return [("qweight", ("I32",), packed, True), ("scales", ("F16", "BF16", "F32"), ((groups, out_f),), True),
                ("qzeros", ("I32",), ((groups, _c(out_f * bits, 32)),), lay == "awq" or not r.symmetric)]
    return []


def _fmt(shapes: Iterable[tuple[int, ...]]) -> str:
    return " or ".join(str(list(s)) for s in shapes)


def _scale_problems(r: Resolved, dims: tuple[int, int], params: dict) -> list[str]:
    out = []
    for name, dtypes, shapes, required in expected_params(r, *dims):
        t = params.get(name)
        if t is None:
            if required:
                out.append(f"{r.vllm_scheme} needs '{name}', which is missing")
            continue
        if t.dtype not in dtypes:
            out.append(f"'{name}' is {t.dtype}; {r.vllm_scheme} stores it as {'/'.join(dtypes)}")
        elif shapes is not None and t.shape not in shapes:
            out.append(f"'{name}' has shape {list(t.shape)}, {r.vllm_scheme} expects {_fmt(shapes)} for "
                       f"out_features {dims[0]}, in_features {dims[1]}")
    return out


@check("scale-tensors")
def scale_tensors(ctx: Context) -> None:
    lay = ctx.layout
    problems: dict[str, list[str]] = defaultdict(list)
    verdicts: dict[tuple, list[str]] = {}  # same scheme, dims and tensors -> same problems (experts!)
    for m, r in ctx.quantized_modules:
        dims = lay.in_out(m, r.weight_bits, r.layout)
        if dims is None:
            continue
        mod = lay.modules[m]
        key = (id(r), dims, mod.signature())
        if key not in verdicts:
            verdicts[key] = _scale_problems(r, dims, mod.params)
        for msg in verdicts[key]:
            problems[msg].append(m)
    for msg, modules in problems.items():
        ctx.findings.add_grouped("scale-tensors", modules, msg + ".", problem=msg)
    leaked = [n for n in ctx.view.tensors if n.endswith(_LEAKED_SUFFIXES) or "_quantizer." in n]
    if leaked:
        ctx.findings.add_grouped("scale-tensors", leaked,
                                 "producer-internal tensor leaked into the checkpoint: vLLM has no parameter for it "
                                 "and raises KeyError while loading.",
                                 fix="Re-export with the producer's export function (compressed save_pretrained / "
                                     "export_hf_checkpoint) instead of saving a raw state_dict; or drop these tensors.")


def _scale_name(r: Resolved) -> str | None:
    return {"ct-nvfp4": "weight_global_scale", "mo-nvfp4": "weight_scale_2"}.get(r.layout)


@check("nvfp4-global-scales")
def nvfp4_global_scales(ctx: Context) -> None:
    nv = {m: r for m, r in ctx.quantized_modules if _scale_name(r)}
    if not nv:
        return
    lay, view = ctx.layout, ctx.view
    groups: list[tuple[str, str, list[str]]] = []
    for fused, shards in lay.fused:
        if all(s in nv for s in shards):
            groups.append((fused, fused.rsplit(".", 1)[-1], shards))
    for a, b in lay.expert_w13_pairs():
        if a in nv and b in nv:
            groups.append((a.rsplit(".", 1)[0], "expert w1/w3", [a, b]))
    problems: dict[str, list[str]] = defaultdict(list)
    suffix = {m: _scale_name(r) for m, r in nv.items()}
    for layer, kind, shards in groups:
        values = [view.read_scalar(f"{s}.{suffix[s]}") for s in shards]
        if any(v is None for v in values):
            continue
        top = max(abs(v) for v in values)  # type: ignore[arg-type]
        if any(not math.isclose(v, values[0], rel_tol=1e-6, abs_tol=0.0) for v in values):  # type: ignore[arg-type]
            leaves = ", ".join(f"{s.rsplit('.', 1)[-1]}={v:.6g}" for s, v in zip(shards, values))
            problems[f"{kind}: the fused shards have different NVFP4 global scales, vLLM uses one for all of them; "
                     f"the others dequantize off by up to {top / min(abs(v) or top for v in values):.3g}x "  # type: ignore[arg-type]
                     f"(e.g. {leaves})"].append(layer)
    for msg, layers in problems.items():
        ctx.findings.add_grouped("nvfp4-global-scales", layers, msg + ".", severity="warning",
                                 problem=msg.split(" (e.g.")[0])


def _kv_owners(lay: Layout) -> dict[str, set[str]]:
    """Attention block -> which of 'k'/'v' it has scales for (any naming vLLM remaps)."""
    attn = set(lay.attention)
    out: dict[str, set[str]] = defaultdict(set)
    for n in lay.tensors:
        if not n.endswith(_KV_SUFFIXES):
            continue
        kinds = {"k", "v"} if n.endswith(".kv_scale") else \
            ({"k"} if n.endswith((".k_scale", ".k_cache.scale")) else {"v"})
        prefix = n
        for _ in range(3):
            prefix = prefix.rsplit(".", 1)[0]
            if prefix in attn:
                out[prefix] |= kinds
                break
    return out


@check("kv-cache-scales")
def kv_cache_scales(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None or not spec.kv_declared:
        return
    lay = ctx.layout
    owners = _kv_owners(lay)
    missing: dict[str, list[str]] = defaultdict(list)
    for a in lay.attention:
        have = owners.get(a, set())
        lack = sorted({"k", "v"} - have)
        if lack:
            missing[" and ".join(f"{x}_scale" for x in lack)].append(a)
    declared = (f"kv_cache_scheme {dict(spec.kv_scheme)}" if spec.kv_scheme is not None
                else f"kv_cache_quant_algo {spec.kv_algo!r}")
    for what, layers in missing.items():
        ctx.findings.add_grouped("kv-cache-scales", layers,
                                 f"{declared} is declared but this attention layer has no {what}: vLLM falls back to "
                                 "a scale of 1.0 and the FP8 KV cache clips or loses precision (vllm#54623).",
                                 problem=what)
    if ctx.mla:
        ctx.findings.add("kv-cache-scales",
                         f"{declared} on a multi-head-latent-attention (MLA) model: FP8 KV caches corrupt multi-turn "
                         "output on MLA in vLLM (vllm#38652, unresolved).", severity="warning",
                         fix="Serve MLA models with a 16-bit KV cache (drop the KV scheme) until vllm#38652 is fixed.")


@check("index-consistent")
def index_consistent(ctx: Context) -> None:
    view, f = ctx.view, ctx.findings
    if not view.shard_files:
        others = view.other_weight_files()
        if others:
            f.add("index-consistent", f"No safetensors weights (only {', '.join(others[:3])}): quantkit reads "
                                      "safetensors headers only, so the tensor rules did not run.",
                  severity="warning", fix="Convert the weights to safetensors to validate them.")
        else:
            f.add("index-consistent", "The checkpoint has no weight files (no *.safetensors, no index).",
                  fix="Copy the weight shards into the checkpoint directory.")
        return
    for name in view.bad_shard_names:
        f.add("index-consistent", f"{INDEX_FILE} lists shard {name!r}, a path outside the checkpoint directory; "
                                  "quantkit does not open it.", problem="bad-shard")
    if view.missing_shards:
        f.add("index-consistent", f"{len(view.missing_shards)} shard(s) listed in {INDEX_FILE} are missing: "
                                  f"{', '.join(view.missing_shards[:5])}.")
    if view.weight_map is not None:
        listed: dict[str, list[str]] = defaultdict(list)
        for t, s in view.weight_map.items():
            listed[s].append(t)
        absent = sorted(t for s, names in listed.items() if s in view.shards
                        for t in set(names).difference(view.shards[s].tensors))
        if absent:
            f.add_grouped("index-consistent", absent,
                          f"listed in {INDEX_FILE} but not in its shard's header: vLLM fails to find it.")
        unlisted = sorted(set(view.tensors).difference(view.weight_map))
        if unlisted:
            f.add_grouped("index-consistent", unlisted,
                          f"stored in a shard but not listed in {INDEX_FILE}: tools that trust the index miss it.",
                          severity="warning")
    for name, shards in view.duplicate_tensors.items():
        f.add("index-consistent", f"tensor {name!r} is stored in {len(shards)} shards ({', '.join(shards)}): "
                                  "which copy vLLM loads depends on file order.", module=name, problem="duplicate")
    for shard in view.shards.values():
        entries = sorted(shard.tensors.values(), key=lambda t: t.offsets)
        pos = 0
        bad: dict[str, tuple[str, list[str]]] = {}

        def flag(kind: str, detail: str, tensor: str) -> None:
            bad.setdefault(kind, (detail, []))[1].append(tensor)

        data_size = shard.data_size
        for t in entries:
            start, end = t.offsets
            bits = DTYPE_BITS.get(t.dtype)
            if bits is None:
                flag("dtype", f"dtype {t.dtype!r} is not a safetensors dtype", t.name)
            elif end - start != (math.prod(t.shape) * bits + 7) // 8:
                flag("size", f"a byte range that does not fit its dtype and shape (e.g. {t.name}: {end - start} "
                             f"bytes for {t.dtype} {list(t.shape)}, which needs {t.nbytes_expected}); corrupt "
                             "header", t.name)
            if start != pos:
                flag("gap", "byte ranges that overlap or leave gaps (safetensors refuses the file)", t.name)
            if end > pos:
                pos = end
            if end > data_size:
                flag("truncated", f"bytes past the end of the file ({shard.size} bytes): a truncated download "
                                  "or export", t.name)
        for kind, (detail, names) in bad.items():
            f.add_grouped("index-consistent", names, f"in {shard.file}: {detail}.", problem=kind)
        if pos < shard.data_size:
            f.add("index-consistent", f"{shard.file} has {shard.data_size - pos} bytes after its last tensor.",
                  severity="warning", problem="trailing")
