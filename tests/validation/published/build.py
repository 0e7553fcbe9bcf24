"""Rebuild published checkpoints as header-only safetensors from the records in ``records/``.

Each record (``records/<id>.json``) holds what was published -- the ``config.json`` fields that shape the model,
its ``quantization_config`` and/or ``hf_quant_config.json`` as the producer wrote them -- plus how the producer
stored each layer (``layout``), the source it was read from and the verdict vLLM gives it. This module turns a
record into a checkpoint directory: the tensor names, dtypes and shapes the published index holds, at a reduced
layer/expert count, with sparse data regions (``synthetic_checkpoints.write_checkpoint``), so a 671B checkpoint
costs a few hundred KB of headers.

Command line::

    python tests/validation/published/build.py OUT_DIR [ID ...]     # writes OUT_DIR/<id>/ for each record
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import synthetic_checkpoints as S  # noqa: E402

RECORDS = HERE / "records"
Tensors = S.Tensors
Arch = Callable[[Mapping[str, Any], Mapping[str, Any]], Tensors]


def records() -> dict[str, dict[str, Any]]:
    """Every record by id, in file-name order."""
    out = {}
    for path in sorted(RECORDS.glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["id"] != path.stem:
            raise ValueError(f"{path.name}: id {rec['id']!r} does not match the file name")
        out[rec["id"]] = rec
    return out


# ------------------------------------------------------------------------------------------- architectures
# Each takes the (depth-reduced) config.json and the record's layout and returns the 16-bit tensors the
# published model has before quantization: real names, per-layer shapes from the config.

def _text(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.get("text_config") or cfg


def _head_dim(c: Mapping[str, Any]) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def _attention(t: Tensors, p: str, c: Mapping[str, Any], *, qk_norm: bool = False, bias: bool = False) -> None:
    h, hd = c["hidden_size"], _head_dim(c)
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    for name, out_f in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
        S._lin(t, f"{p}.{name}", out_f, h)
        if bias:
            t[f"{p}.{name}.bias"] = ("BF16", (out_f,))
    S._lin(t, f"{p}.o_proj", h, q)
    if qk_norm:
        S._norm(t, f"{p}.q_norm", hd)
        S._norm(t, f"{p}.k_norm", hd)


def _embed_and_head(t: Tensors, c: Mapping[str, Any], prefix: str = "model.", head: str = "lm_head") -> None:
    t[f"{prefix}embed_tokens.weight"] = ("BF16", (c["vocab_size"], c["hidden_size"]))
    S._norm(t, f"{prefix}norm", c["hidden_size"])
    if not c.get("tie_word_embeddings", False):
        S._lin(t, head, c["vocab_size"], c["hidden_size"])


def dense(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """Llama / Mistral / Qwen2 (q/k/v bias) / Qwen3 (q/k norms): attention + gated MLP per layer."""
    c = _text(cfg)
    qwen3 = c.get("model_type") == "qwen3"
    t: Tensors = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        S._norm(t, f"{p}.input_layernorm", c["hidden_size"])
        _attention(t, f"{p}.self_attn", c, qk_norm=qwen3, bias=c.get("model_type") == "qwen2")
        S._mlp(t, f"{p}.mlp", c["hidden_size"], c["intermediate_size"])
        S._norm(t, f"{p}.post_attention_layernorm", c["hidden_size"])
    _embed_and_head(t, c)
    return t


def mixtral(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """Mixtral: router ``block_sparse_moe.gate``, experts ``block_sparse_moe.experts.N.w1/w2/w3``."""
    c, h = cfg, cfg["hidden_size"]
    t: Tensors = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        S._norm(t, f"{p}.input_layernorm", h)
        _attention(t, f"{p}.self_attn", c)
        S._lin(t, f"{p}.block_sparse_moe.gate", c["num_local_experts"], h)
        for e in range(c["num_local_experts"]):
            x = f"{p}.block_sparse_moe.experts.{e}"
            S._lin(t, f"{x}.w1", c["intermediate_size"], h)
            S._lin(t, f"{x}.w2", h, c["intermediate_size"])
            S._lin(t, f"{x}.w3", c["intermediate_size"], h)
        S._norm(t, f"{p}.post_attention_layernorm", h)
    _embed_and_head(t, c)
    return t


def qwen3_moe(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    return S.qwen3_moe(layers=cfg["num_hidden_layers"], experts=cfg["num_experts"])[1]


def qwen3_next(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    return S.qwen3_next(layers=cfg["num_hidden_layers"], experts=cfg["num_experts"])[1]


def qwen35(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    return S.qwen35_hybrid(layers=cfg["text_config"]["num_hidden_layers"])[1]


def deepseek_v3(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """DeepSeek-V3/R1: MLA, ``first_k_dense_replace`` dense layers, then MoE; the MTP layer is stored as
    ``model.layers.<num_hidden_layers>`` with its own embed_tokens, enorm/hnorm, eh_proj and shared head."""
    layers, mtp = cfg["num_hidden_layers"], cfg.get("num_nextn_predict_layers", 0)
    _, t = S.deepseek_v3(layers=layers + mtp, experts=cfg["n_routed_experts"])
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    for m in range(layers, layers + mtp):
        p = f"model.layers.{m}"
        t[f"{p}.embed_tokens.weight"] = ("BF16", (v, h))
        S._norm(t, f"{p}.enorm", h)
        S._norm(t, f"{p}.hnorm", h)
        S._lin(t, f"{p}.eh_proj", h, 2 * h)
        S._norm(t, f"{p}.shared_head.norm", h)
        S._lin(t, f"{p}.shared_head.head", v, h)
    return t


def gpt_oss(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """gpt-oss as openai publishes it: attention (with biases and sinks) and the router ``mlp.router`` in BF16;
    experts stored as MXFP4 ``*_blocks`` (U8, 16 bytes = 32 values per block) + ``*_scales`` (U8 E8M0, one per
    block) with BF16 biases -- the names in the published model.safetensors.index.json."""
    c, h = cfg, cfg["hidden_size"]
    e, inter = c["num_local_experts"], c["intermediate_size"]
    t: Tensors = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        S._norm(t, f"{p}.input_layernorm", h)
        _attention(t, f"{p}.self_attn", c, bias=True)
        t[f"{p}.self_attn.o_proj.bias"] = ("BF16", (h,))
        t[f"{p}.self_attn.sinks"] = ("BF16", (c["num_attention_heads"],))
        S._lin(t, f"{p}.mlp.router", e, h)
        t[f"{p}.mlp.router.bias"] = ("BF16", (e,))
        x = f"{p}.mlp.experts"
        t[f"{x}.gate_up_proj_blocks"] = ("U8", (e, 2 * inter, h // 32, 16))
        t[f"{x}.gate_up_proj_scales"] = ("U8", (e, 2 * inter, h // 32))
        t[f"{x}.gate_up_proj_bias"] = ("BF16", (e, 2 * inter))
        t[f"{x}.down_proj_blocks"] = ("U8", (e, h, inter // 32, 16))
        t[f"{x}.down_proj_scales"] = ("U8", (e, h, inter // 32))
        t[f"{x}.down_proj_bias"] = ("BF16", (e, h))
        S._norm(t, f"{p}.post_attention_layernorm", h)
    _embed_and_head(t, c)
    return t


def gemma3_vlm(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """Gemma3ForConditionalGeneration as saved by transformers 4.50: ``language_model.model.layers.N``,
    SigLIP ``vision_tower.vision_model.encoder.layers.N`` and ``multi_modal_projector``."""
    c, v = cfg["text_config"], cfg["vision_config"]
    t: Tensors = {}
    for i in range(c["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}"
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            S._norm(t, f"{p}.{n}", c["hidden_size"])
        _attention(t, f"{p}.self_attn", c, qk_norm=True)
        S._mlp(t, f"{p}.mlp", c["hidden_size"], c["intermediate_size"])
    t["language_model.model.embed_tokens.weight"] = ("BF16", (c["vocab_size"], c["hidden_size"]))
    S._norm(t, "language_model.model.norm", c["hidden_size"])
    vh, vi = v["hidden_size"], v["intermediate_size"]
    for i in range(v["num_hidden_layers"]):
        p = f"vision_tower.vision_model.encoder.layers.{i}"
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            S._lin(t, f"{p}.self_attn.{n}", vh, vh)
            t[f"{p}.self_attn.{n}.bias"] = ("BF16", (vh,))
        S._lin(t, f"{p}.mlp.fc1", vi, vh)
        S._lin(t, f"{p}.mlp.fc2", vh, vi)
        for n in ("layer_norm1", "layer_norm2"):
            S._norm(t, f"{p}.{n}", vh)
    t["multi_modal_projector.mm_input_projection_weight"] = ("BF16", (vh, c["hidden_size"]))
    S._norm(t, "multi_modal_projector.mm_soft_emb_norm", vh)
    return t


def _mamba2(t: Tensors, m: str, h: int, heads: int, dh: int, groups: int, state: int, conv: int,
            scalar_dtype: str) -> None:
    """A Mamba-2 mixer at ``m``: in_proj (x, z, B, C, dt), depthwise conv1d, A_log/D/dt_bias stored as
    ``scalar_dtype`` (BF16 in Granite-4's release, F32 in Nemotron-H's), gated norm, out_proj."""
    inner = heads * dh
    S._lin(t, f"{m}.in_proj", 2 * inner + 2 * groups * state + heads, h)
    t[f"{m}.conv1d.weight"] = ("BF16", (inner + 2 * groups * state, 1, conv))
    t[f"{m}.conv1d.bias"] = ("BF16", (inner + 2 * groups * state,))
    for n in ("A_log", "D", "dt_bias"):
        t[f"{m}.{n}"] = (scalar_dtype, (heads,))
    S._norm(t, f"{m}.norm", inner)
    S._lin(t, f"{m}.out_proj", h, inner)


def granite4_hybrid(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """GraniteMoeHybrid (Granite-4.0-H): Mamba-2 ``mamba.*`` or attention ``self_attn.*`` per ``layer_types``;
    MoE experts as 3-D ``block_sparse_moe.input_linear/output_linear``, router ``block_sparse_moe.router.layer``,
    ``shared_mlp``. Embeddings are tied."""
    c, h = cfg, cfg["hidden_size"]
    heads, dh, groups, state = c["mamba_n_heads"], c["mamba_d_head"], c["mamba_n_groups"], c["mamba_d_state"]
    e, inter, shared = c["num_local_experts"], c["intermediate_size"], c["shared_intermediate_size"]
    t: Tensors = {}
    for i, kind in enumerate(c["layer_types"][: c["num_hidden_layers"]]):
        p = f"model.layers.{i}"
        S._norm(t, f"{p}.input_layernorm", h)
        if kind == "mamba":
            _mamba2(t, f"{p}.mamba", h, heads, dh, groups, state, c["mamba_d_conv"], "BF16")
        else:
            _attention(t, f"{p}.self_attn", c)
        S._lin(t, f"{p}.block_sparse_moe.router.layer", e, h)
        t[f"{p}.block_sparse_moe.input_linear.weight"] = ("BF16", (e, 2 * inter, h))
        t[f"{p}.block_sparse_moe.output_linear.weight"] = ("BF16", (e, h, inter))
        S._lin(t, f"{p}.shared_mlp.input_linear", 2 * shared, h)
        S._lin(t, f"{p}.shared_mlp.output_linear", h, shared)
        S._norm(t, f"{p}.post_attention_layernorm", h)
    _embed_and_head(t, c)
    return t


def nemotron_h(cfg: Mapping[str, Any], layout: Mapping[str, Any]) -> Tensors:
    """NemotronHForCausalLM: ``backbone.layers.N.mixer`` is Mamba-2 (M), attention (*) or a squared-ReLU MLP
    (-) by ``hybrid_override_pattern``; ``backbone.embeddings``, ``backbone.norm_f``, ``lm_head``."""
    c, h = cfg, cfg["hidden_size"]
    heads, dh, groups, state = c["mamba_num_heads"], c["mamba_head_dim"], c["n_groups"], c["ssm_state_size"]
    t: Tensors = {"backbone.embeddings.weight": ("BF16", (c["vocab_size"], h))}
    for i, kind in enumerate(c["hybrid_override_pattern"]):
        p = f"backbone.layers.{i}"
        S._norm(t, f"{p}.norm", h)
        m = f"{p}.mixer"
        if kind == "M":
            _mamba2(t, m, h, heads, dh, groups, state, c["conv_kernel"], "F32")
        elif kind == "*":
            hd = c["head_dim"]
            S._lin(t, f"{m}.q_proj", c["num_attention_heads"] * hd, h)
            S._lin(t, f"{m}.k_proj", c["num_key_value_heads"] * hd, h)
            S._lin(t, f"{m}.v_proj", c["num_key_value_heads"] * hd, h)
            S._lin(t, f"{m}.o_proj", h, c["num_attention_heads"] * hd)
        else:
            S._lin(t, f"{m}.up_proj", c["intermediate_size"], h)
            S._lin(t, f"{m}.down_proj", h, c["intermediate_size"])
    S._norm(t, "backbone.norm_f", h)
    S._lin(t, "lm_head", c["vocab_size"], h)
    return t


ARCHS: dict[str, Arch] = {"dense": dense, "mixtral": mixtral, "qwen3_moe": qwen3_moe, "qwen3_next": qwen3_next,
                          "qwen35": qwen35, "deepseek_v3": deepseek_v3, "gpt_oss": gpt_oss,
                          "gemma3_vlm": gemma3_vlm, "granite4_hybrid": granite4_hybrid, "nemotron_h": nemotron_h}


# ------------------------------------------------------------------------------------------------- formats
# How each producer stores one quantized Linear of shape (out, in): {suffix: (dtype, shape)}.

def _ceil(a: int, b: int) -> int:
    return -(-a // b)


FORMATS: dict[str, Callable[[int, int], dict[str, tuple[str, tuple[int, ...]]]]] = {
    # vLLM `fp8` method, DeepSeek / Qwen FP8 releases: 128x128 blocks, F32 inverse scales
    "fp8-block128": lambda o, i: {"weight": ("F8_E4M3", (o, i)),
                                  "weight_scale_inv": ("F32", (_ceil(o, 128), _ceil(i, 128)))},
    # vLLM `fp8` method with static activation scales (AutoFP8, neuralmagic 2024 releases): per-tensor scalars
    "fp8-static": lambda o, i: {"weight": ("F8_E4M3", (o, i)), "weight_scale": ("F32", ()),
                                "input_scale": ("F32", ())},
    # compressed-tensors float-quantized, per-tensor weights and static per-tensor activations
    "ct-fp8-static-tensor": lambda o, i: {"weight": ("F8_E4M3", (o, i)), "weight_scale": ("F32", (1,)),
                                          "input_scale": ("F32", (1,))},
    # compressed-tensors float-quantized, per-channel weights, dynamic per-token activations (FP8_DYNAMIC)
    "ct-fp8-dynamic": lambda o, i: {"weight": ("F8_E4M3", (o, i)), "weight_scale": ("BF16", (o, 1))},
    # compressed-tensors int-quantized W8A8 (per-channel weights, dynamic per-token activations)
    "ct-int8-w8a8": lambda o, i: {"weight": ("I8", (o, i)), "weight_scale": ("BF16", (o, 1))},
    # compressed-tensors pack-quantized W4A16, symmetric, group 128
    "ct-w4a16-g128": lambda o, i: {"weight_packed": ("I32", (o, i // 8)),
                                   "weight_scale": ("BF16", (o, _ceil(i, 128))), "weight_shape": ("I64", (2,))},
    # ModelOpt FP8 (per-tensor weight and input scales)
    "mo-fp8": lambda o, i: {"weight": ("F8_E4M3", (o, i)), "weight_scale": ("F32", ()), "input_scale": ("F32", ())},
    # ModelOpt NVFP4 (packed E2M1, FP8 block scales of 16, per-tensor global scale)
    "mo-nvfp4": lambda o, i: {"weight": ("U8", (o, i // 2)), "weight_scale": ("F8_E4M3", (o, i // 16)),
                              "weight_scale_2": ("F32", ()), "input_scale": ("F32", ())},
    # AutoGPTQ 4-bit, group 128, symmetric, no act-order
    "gptq-g128": lambda o, i: {"qweight": ("I32", (i // 8, o)), "qzeros": ("I32", (_ceil(i, 128), o // 8)),
                               "scales": ("F16", (_ceil(i, 128), o)), "g_idx": ("I32", (i,))},
}


def _quantize(t: Tensors, fmt: str | None, keep: list[str]) -> Tensors:
    """Store every 2-D Linear ``weight`` in ``fmt`` except modules matching a ``keep`` regex (re.search)."""
    if fmt is None:
        return dict(t)
    rx = [re.compile(k) for k in keep]
    out: Tensors = {}
    for name, (dtype, shape) in t.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module is None or len(shape) != 2 or "embed" in module or any(r.search(module) for r in rx):
            out[name] = (dtype, shape)
            continue
        for suffix, spec in FORMATS[fmt](*shape).items():
            out[f"{module}.{suffix}"] = spec
    return out


def _kv_scales(t: Tensors, style: str | None) -> None:
    """ModelOpt FP8 KV cache: ``k_proj.k_scale`` / ``v_proj.v_scale`` scalars on every attention layer."""
    if style is None:
        return
    if style != "mo-kv":
        raise ValueError(f"unknown kv_scales style {style!r}")
    modules = {name.rsplit(".", 1)[0] for name in t}
    for module in modules:
        for proj, scale in (("k_proj", "k_scale"), ("v_proj", "v_scale")):
            if module.endswith(f".self_attn.{proj}"):
                t[f"{module}.{scale}"] = ("F32", ())


_LAYER_INDEX = re.compile(r"(?<![^.])(layers\.)(\d+)(?=[.*]|$)")
_LISTS = ("modules_to_not_convert", "ignore", "ignored_layers", "exclude_modules")


def _cut_names(names: list[str], full: int, depth: int) -> list[str]:
    """A published per-layer name list at the reduced depth: entries for layers below ``depth`` kept, those of
    the MTP layers (index ``full`` and up, e.g. DeepSeek's ``model.layers.61*``) renumbered to follow the kept
    layers, the rest dropped. Names without a layer index are kept as published."""
    out = []
    for name in names:
        m = _LAYER_INDEX.search(name)
        if m is None:
            out.append(name)
            continue
        i = int(m.group(2))
        if i >= full:
            out.append(f"{name[: m.start(2)]}{depth + i - full}{name[m.end(2):]}")
        elif i < depth:
            out.append(name)
    return out


def _cut_lists(qc: dict[str, Any] | None, full: int, depth: int) -> None:
    """Apply ``_cut_names`` in place to the ignore/exclude lists of a quantization config or hf_quant_config."""
    if not qc:
        return
    for key in _LISTS:
        if isinstance(qc.get(key), list):
            qc[key] = _cut_names(qc[key], full, depth)
    if isinstance(qc.get("quantization"), dict):
        _cut_lists(qc["quantization"], full, depth)


def build(rec: Mapping[str, Any], out: Path) -> Path:
    """Write the checkpoint of one record to ``out`` (config.json, hf_quant_config.json, shards, index)."""
    layout = rec["layout"]
    cfg = copy.deepcopy(rec["config"])
    depth = layout.get("num_hidden_layers")
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    full = text["num_hidden_layers"]
    if depth is not None:
        text["num_hidden_layers"] = depth
    for key, value in layout.get("config_overrides", {}).items():
        text[key] = value
    t = ARCHS[layout["arch"]](cfg, layout)
    q = _quantize(t, layout.get("format"), layout.get("keep_16bit", []))
    _kv_scales(q, layout.get("kv_scales"))
    qc, sidecar = copy.deepcopy(rec.get("quantization_config")), copy.deepcopy(rec.get("hf_quant_config"))
    if layout.get("cut_lists") and depth is not None:
        # the record holds the published list whole; the checkpoint has ``depth`` layers
        _cut_lists(qc, full, depth)
        _cut_lists(sidecar, full, depth)
    if qc is not None:
        cfg["quantization_config"] = qc
    return S.write_checkpoint(out, cfg, q, shards=layout.get("shards", 2), sidecar=sidecar)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out, ids = Path(argv[0]), argv[1:]
    recs = records()
    for rid in ids or list(recs):
        path = build(recs[rid], out / rid)
        print(f"{rid}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
