"""Header-only checkpoints that mirror real architectures, written without tensor data.

A safetensors file is an 8-byte header length, a JSON header (name -> dtype, shape, byte offsets) and the
data region. :func:`write_safetensors` writes the header with real offsets and leaves the data region as a
hole (``truncate`` makes the file sparse), optionally writing a few real values (NVFP4 global scales). The
validator reads headers only, so these behave like the real thing at any size: a 400B checkpoint costs a few
MB of headers and no disk.

The architectures follow the published Hugging Face layouts (tensor names, shapes, config keys):
Qwen3-MoE (``Qwen3-30B-A3B``), Qwen3-Next (fused ``in_proj_qkvz``/``in_proj_ba`` on disk), a Qwen3.5-style
hybrid (split ``in_proj_qkv``/``in_proj_z``/``in_proj_b``/``in_proj_a`` that vLLM fuses, vision tower, MTP)
and DeepSeek-V3 (MLA). Layer and expert counts are cut down; names and per-layer shapes are not.
Quantizers turn 16-bit linear entries into what llm-compressor (compressed-tensors) and ModelOpt write.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Tensors = dict[str, tuple[str, tuple[int, ...]]]
_BITS = {"BF16": 16, "F16": 16, "F32": 32, "F8_E4M3": 8, "U8": 8, "I8": 8, "I32": 32, "I64": 64}


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return (math.prod(shape) * _BITS[dtype] + 7) // 8


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...]]], *,
                      data: Mapping[str, bytes] | None = None) -> int:
    """Write a safetensors file whose data region is a sparse hole except for ``data``; returns its size."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, (dtype, shape) in tensors.items():
        n = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, value in (data or {}).items():
            fh.seek(start + header[name]["data_offsets"][0])
            fh.write(value)
        fh.truncate(start + pos)
    return start + pos


def write_checkpoint(out: Path, config: Mapping[str, Any], tensors: Tensors, *, shards: int = 1,
                     sidecar: Mapping[str, Any] | None = None, data: Mapping[str, bytes] | None = None) -> Path:
    """A checkpoint directory: config.json, optional hf_quant_config.json, ``shards`` safetensors files and an
    index when there is more than one shard."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if sidecar is not None:
        (out / "hf_quant_config.json").write_text(json.dumps(sidecar, indent=2))
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    total = 0
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        file = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {n: tensors[n] for n in part}
        total += write_safetensors(out / file, chunk, data={n: v for n, v in (data or {}).items() if n in chunk})
        weight_map.update({n: file for n in part})
    if shards > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return out


def f32(value: float) -> bytes:
    return struct.pack("<f", value)


# ------------------------------------------------------------------------------------------- architectures

def _lin(t: Tensors, name: str, out_f: int, in_f: int) -> None:
    t[f"{name}.weight"] = ("BF16", (out_f, in_f))


def _norm(t: Tensors, name: str, dim: int) -> None:
    t[f"{name}.weight"] = ("BF16", (dim,))


def _attn(t: Tensors, p: str, hidden: int, heads: int, kv: int, hd: int, *, gate: bool = False) -> None:
    _lin(t, f"{p}.q_proj", heads * hd * (2 if gate else 1), hidden)
    _lin(t, f"{p}.k_proj", kv * hd, hidden)
    _lin(t, f"{p}.v_proj", kv * hd, hidden)
    _lin(t, f"{p}.o_proj", hidden, heads * hd)
    _norm(t, f"{p}.q_norm", hd)
    _norm(t, f"{p}.k_norm", hd)


def _mlp(t: Tensors, p: str, hidden: int, inter: int) -> None:
    _lin(t, f"{p}.gate_proj", inter, hidden)
    _lin(t, f"{p}.up_proj", inter, hidden)
    _lin(t, f"{p}.down_proj", hidden, inter)


def qwen3_moe(layers: int = 2, experts: int = 8) -> tuple[dict[str, Any], Tensors]:
    """Qwen3-30B-A3B: GQA attention with q/k norms, 128 experts of 768 (cut to ``experts``), router mlp.gate."""
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
           "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
           "num_experts": experts, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
           "intermediate_size": 6144, "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t: Tensors = {}
    t["model.embed_tokens.weight"] = ("BF16", (151936, 2048))
    for i in range(layers):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", 2048)
        _attn(t, f"{p}.self_attn", 2048, 32, 4, 128)
        _lin(t, f"{p}.mlp.gate", experts, 2048)
        for e in range(experts):
            _mlp(t, f"{p}.mlp.experts.{e}", 2048, 768)
        _norm(t, f"{p}.post_attention_layernorm", 2048)
    _norm(t, "model.norm", 2048)
    _lin(t, "lm_head", 151936, 2048)
    return cfg, t


def _gated_deltanet_rest(t: Tensors, la: str, hidden: int, nk: int, dk: int, nv: int, dv: int) -> None:
    """The Gated DeltaNet tensors after the input projections, the same in every Qwen3-Next/3.5 layout."""
    t[f"{la}.conv1d.weight"] = ("BF16", (2 * nk * dk + nv * dv, 1, 4))
    t[f"{la}.A_log"] = ("F32", (nv,))
    t[f"{la}.dt_bias"] = ("BF16", (nv,))
    _norm(t, f"{la}.norm", dv)
    _lin(t, f"{la}.out_proj", hidden, nv * dv)


def qwen3_next(layers: int = 4, experts: int = 4) -> tuple[dict[str, Any], Tensors]:
    """Qwen3-Next-80B-A3B: Gated DeltaNet blocks store fused in_proj_qkvz / in_proj_ba; full attention every 4th."""
    hidden, nk, dk, nv, dv = 2048, 16, 128, 32, 128
    cfg = {"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
           "full_attention_interval": 4, "linear_num_key_heads": nk, "linear_key_head_dim": dk,
           "linear_num_value_heads": nv, "linear_value_head_dim": dv, "linear_conv_kernel_dim": 4,
           "num_experts": experts, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
           "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (151936, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", hidden)
        if (i + 1) % 4 == 0:
            _attn(t, f"{p}.self_attn", hidden, 16, 2, 256, gate=True)
        else:
            la = f"{p}.linear_attn"
            _lin(t, f"{la}.in_proj_qkvz", 2 * nk * dk + 2 * nv * dv, hidden)
            _lin(t, f"{la}.in_proj_ba", 2 * nv, hidden)
            _gated_deltanet_rest(t, la, hidden, nk, dk, nv, dv)
        _lin(t, f"{p}.mlp.gate", experts, hidden)
        for e in range(experts):
            _mlp(t, f"{p}.mlp.experts.{e}", hidden, 512)
        _mlp(t, f"{p}.mlp.shared_expert", hidden, 512)
        _lin(t, f"{p}.mlp.shared_expert_gate", 1, hidden)
        _norm(t, f"{p}.post_attention_layernorm", hidden)
    _norm(t, "model.norm", hidden)
    _lin(t, "lm_head", 151936, hidden)
    return cfg, t


def qwen35_hybrid(layers: int = 4) -> tuple[dict[str, Any], Tensors]:
    """Qwen3.5-style: split in_proj_qkv/z/b/a on disk (vLLM fuses them), vision tower, MTP head."""
    hidden, nk, dk, nv, dv = 2048, 16, 128, 32, 128
    text = {"model_type": "qwen3_5_text", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "intermediate_size": 6144,
            "layer_types": ["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(layers)],
            "linear_num_key_heads": nk, "linear_key_head_dim": dk, "linear_num_value_heads": nv,
            "linear_value_head_dim": dv, "linear_conv_kernel_dim": 4, "mtp_num_hidden_layers": 1,
            "vocab_size": 248320, "tie_word_embeddings": False}
    cfg = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5", "text_config": text,
           "vision_config": {"depth": 1, "hidden_size": 1024}, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16"}
    t: Tensors = {"model.language_model.embed_tokens.weight": ("BF16", (248320, hidden))}
    for i in range(layers):
        p = f"model.language_model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", hidden)
        if (i + 1) % 4 == 0:
            _attn(t, f"{p}.self_attn", hidden, 16, 2, 256, gate=True)
        else:
            la = f"{p}.linear_attn"
            _lin(t, f"{la}.in_proj_qkv", 2 * nk * dk + nv * dv, hidden)
            _lin(t, f"{la}.in_proj_z", nv * dv, hidden)
            _lin(t, f"{la}.in_proj_b", nv, hidden)
            _lin(t, f"{la}.in_proj_a", nv, hidden)
            _gated_deltanet_rest(t, la, hidden, nk, dk, nv, dv)
        _mlp(t, f"{p}.mlp", hidden, 6144)
        _norm(t, f"{p}.post_attention_layernorm", hidden)
    _norm(t, "model.language_model.norm", hidden)
    v = "model.visual.blocks.0"
    _lin(t, f"{v}.attn.qkv", 3 * 1024, 1024)
    _lin(t, f"{v}.attn.proj", 1024, 1024)
    _lin(t, f"{v}.mlp.linear_fc1", 4096, 1024)
    _lin(t, f"{v}.mlp.linear_fc2", 1024, 4096)
    _lin(t, "model.visual.merger.linear_fc1", 4096, 4096)
    _lin(t, "model.visual.merger.linear_fc2", hidden, 4096)
    _lin(t, "mtp.fc", hidden, 2 * hidden)
    _attn(t, "mtp.layers.0.self_attn", hidden, 16, 2, 256, gate=True)
    _mlp(t, "mtp.layers.0.mlp", hidden, 6144)
    _lin(t, "lm_head", 248320, hidden)
    return cfg, t


def deepseek_v3(layers: int = 2, experts: int = 4) -> tuple[dict[str, Any], Tensors]:
    """DeepSeek-V3: MLA attention (q_a/q_b, kv_a_proj_with_mqa, kv_b), first layer dense, then MoE."""
    hidden = 7168
    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": 128, "num_key_value_heads": 128,
           "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
           "v_head_dim": 128, "n_routed_experts": experts, "n_shared_experts": 1, "first_k_dense_replace": 1,
           "moe_intermediate_size": 2048, "intermediate_size": 18432, "vocab_size": 129280,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (129280, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        _norm(t, f"{p}.input_layernorm", hidden)
        _lin(t, f"{a}.q_a_proj", 1536, hidden)
        _norm(t, f"{a}.q_a_layernorm", 1536)
        _lin(t, f"{a}.q_b_proj", 128 * 192, 1536)
        _lin(t, f"{a}.kv_a_proj_with_mqa", 512 + 64, hidden)
        _norm(t, f"{a}.kv_a_layernorm", 512)
        _lin(t, f"{a}.kv_b_proj", 128 * 256, 512)
        _lin(t, f"{a}.o_proj", hidden, 128 * 128)
        if i == 0:
            _mlp(t, f"{p}.mlp", hidden, 18432)
        else:
            _lin(t, f"{p}.mlp.gate", experts, hidden)
            t[f"{p}.mlp.gate.e_score_correction_bias"] = ("F32", (experts,))
            for e in range(experts):
                _mlp(t, f"{p}.mlp.experts.{e}", hidden, 2048)
            _mlp(t, f"{p}.mlp.shared_experts", hidden, 2048)
        _norm(t, f"{p}.post_attention_layernorm", hidden)
    _norm(t, "model.norm", hidden)
    _lin(t, "lm_head", 129280, hidden)
    return cfg, t


def deepseek_v3_fp8_release(out: Path, layers: int = 3, experts: int = 4, *, fp8_routers: bool = False) -> Path:
    """DeepSeek-V3 as deepseek-ai publishes it (``deepseek-ai/DeepSeek-V3``, cut to ``layers`` + 1 MTP layer).

    config.json's ``quantization_config`` is vLLM's ``fp8`` method with 128x128 weight blocks and no
    ``ignored_layers``; every Linear is ``F8_E4M3`` + ``weight_scale_inv`` (F32, one per 128x128 block) except
    the routers ``mlp.gate`` (BF16, with an F32 ``e_score_correction_bias``) and the MTP layer's ``eh_proj`` and
    ``shared_head.head``. The MTP layer is stored as ``model.layers.<num_hidden_layers>`` (num_nextn_predict_layers
    = 1) with its own embed_tokens, enorm, hnorm and shared head, as in the published index. ``fp8_routers``
    stores the routers FP8 too (what vLLM cannot load: it builds them unquantized).
    """
    cfg, t = deepseek_v3(layers=layers + 1, experts=experts)
    hidden = cfg["hidden_size"]
    cfg.update(num_hidden_layers=layers, num_nextn_predict_layers=1, topk_method="noaux_tc",
               quantization_config={"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "weight_block_size": [128, 128]})
    m = f"model.layers.{layers}"
    t[f"{m}.embed_tokens.weight"] = ("BF16", (129280, hidden))
    _norm(t, f"{m}.enorm", hidden)
    _norm(t, f"{m}.hnorm", hidden)
    _lin(t, f"{m}.eh_proj", hidden, 2 * hidden)
    _norm(t, f"{m}.shared_head.norm", hidden)
    _lin(t, f"{m}.shared_head.head", 129280, hidden)
    keep = ("eh_proj", "shared_head.head", "lm_head", "embed_tokens") + (() if fp8_routers else ("mlp.gate",))
    q: Tensors = {}
    for name, (dtype, shape) in t.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module is None or len(shape) != 2 or module.endswith(keep):
            q[name] = (dtype, shape)
            continue
        q[name] = ("F8_E4M3", shape)
        q[f"{module}.weight_scale_inv"] = ("F32", (-(-shape[0] // 128), -(-shape[1] // 128)))
    return write_checkpoint(out, cfg, q, shards=2)


def llama_405b(layers: int = 126) -> tuple[dict[str, Any], Tensors]:
    """Llama-3.1-405B: 126 layers, hidden 16384, FFN 53248, 128 heads / 8 KV heads, vocab 128256."""
    hidden, inter = 16384, 53248
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_attention_heads": 128, "num_key_value_heads": 8,
           "num_hidden_layers": layers, "vocab_size": 128256, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05, "rope_theta": 500000.0}
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (128256, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", hidden)
        _lin(t, f"{p}.self_attn.q_proj", hidden, hidden)
        _lin(t, f"{p}.self_attn.k_proj", 8 * 128, hidden)
        _lin(t, f"{p}.self_attn.v_proj", 8 * 128, hidden)
        _lin(t, f"{p}.self_attn.o_proj", hidden, hidden)
        _mlp(t, f"{p}.mlp", hidden, inter)
        _norm(t, f"{p}.post_attention_layernorm", hidden)
    _norm(t, "model.norm", hidden)
    _lin(t, "lm_head", 128256, hidden)
    return cfg, t


# ------------------------------------------------------------------------------------------------ quantizers

#: the compressed-tensors groups llm-compressor 0.14 writes (copied from real outputs of the embedded model)
_ARGS = {"actorder": None, "block_structure": None, "group_size": None, "observer": None, "observer_kwargs": {},
         "scale_dtype": None, "symmetric": True, "zp_dtype": None}
CT_FP8_DYNAMIC = {"format": "float-quantized", "output_activations": None, "targets": ["Linear"],
                  "input_activations": {**_ARGS, "dynamic": True, "num_bits": 8, "strategy": "token", "type": "float"},
                  "weights": {**_ARGS, "dynamic": False, "num_bits": 8, "observer": "memoryless_minmax",
                              "strategy": "channel", "type": "float"}}
CT_NVFP4 = {"format": "nvfp4-pack-quantized", "output_activations": None, "targets": ["Linear"],
            "input_activations": {**_ARGS, "dynamic": "local", "group_size": 16, "num_bits": 4,
                                  "observer": "static_minmax", "scale_dtype": "torch.float8_e4m3fn",
                                  "strategy": "tensor_group", "type": "float"},
            "weights": {**_ARGS, "dynamic": False, "group_size": 16, "num_bits": 4, "observer": "memoryless_minmax",
                        "scale_dtype": "torch.float8_e4m3fn", "strategy": "tensor_group", "type": "float"}}
CT_W4A16 = {"format": "pack-quantized", "input_activations": None, "output_activations": None, "targets": ["Linear"],
            "weights": {**_ARGS, "dynamic": False, "group_size": 128, "num_bits": 4, "observer": "memoryless_minmax",
                        "strategy": "group", "type": "int"}}


def ct_config(group: Mapping[str, Any], ignore: Iterable[str], *, kv: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"config_groups": {"group_0": copy.deepcopy(dict(group))}, "format": group["format"],
            "global_compression_ratio": None, "ignore": list(ignore), "kv_cache_scheme": kv,
            "quant_method": "compressed-tensors", "quantization_status": "compressed", "sparsity_config": {},
            "transform_config": {}, "version": "0.19.0"}


def mo_nvfp4_config(ignore: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json quantization_config, hf_quant_config.json) as ModelOpt 0.47 writes them for NVFP4."""
    ignore = list(ignore)
    qc = {"config_groups": {"group_0": {"input_activations": {"dynamic": False, "num_bits": 4, "type": "float",
                                                              "group_size": 16},
                                        "weights": {"dynamic": False, "num_bits": 4, "type": "float",
                                                    "group_size": 16}, "targets": ["Linear"]}},
          "ignore": ignore, "quant_algo": "NVFP4", "producer": {"name": "modelopt", "version": "0.47.0"},
          "quant_method": "modelopt"}
    side = {"producer": {"name": "modelopt", "version": "0.47.0"},
            "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                             "exclude_modules": ignore}}
    return qc, side


def _linear_entries(t: Tensors) -> list[tuple[str, int, int]]:
    out = []
    for name, (dtype, shape) in t.items():
        if name.endswith(".weight") and len(shape) == 2 and "embed_tokens" not in name:
            out.append((name[: -len(".weight")], shape[0], shape[1]))
    return out


def quantize(t: Tensors, skip: Callable[[str], bool], scheme: str) -> Tensors:
    """Replace the 16-bit linear entries not ``skip``-ped by what a producer writes for ``scheme``.

    Schemes: ``ct-fp8-dynamic``, ``ct-nvfp4``, ``ct-nvfp4a16``, ``ct-w4a16-g128``, ``mo-nvfp4``, ``gptq``,
    ``awq``.
    """
    out: Tensors = {}
    linear = {m: (o, i) for m, o, i in _linear_entries(t)}
    for name, spec in t.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module not in linear or skip(module):
            out[name] = spec
            continue
        o, i = linear[module]
        m = module
        if scheme == "ct-fp8-dynamic":
            out[f"{m}.weight"] = ("F8_E4M3", (o, i))
            out[f"{m}.weight_scale"] = ("BF16", (o, 1))
        elif scheme in ("ct-nvfp4", "ct-nvfp4a16"):
            if scheme == "ct-nvfp4":
                out[f"{m}.input_global_scale"] = ("F32", (1,))
            out[f"{m}.weight_global_scale"] = ("F32", (1,))
            out[f"{m}.weight_packed"] = ("U8", (o, i // 2))
            out[f"{m}.weight_scale"] = ("F8_E4M3", (o, i // 16))
        elif scheme == "ct-w4a16-g128":
            out[f"{m}.weight_packed"] = ("I32", (o, i // 8))
            out[f"{m}.weight_scale"] = ("BF16", (o, -(-i // 128)))
            out[f"{m}.weight_shape"] = ("I64", (2,))
        elif scheme in ("gptq", "awq"):  # AutoGPTQ / AutoAWQ layouts, 4 bits, group 128
            g = -(-i // 128)
            out[f"{m}.qweight"] = ("I32", (i // 8, o) if scheme == "gptq" else (i, o // 8))
            out[f"{m}.qzeros"] = ("I32", (g, o // 8))
            out[f"{m}.scales"] = ("F16", (g, o))
            if scheme == "gptq":
                out[f"{m}.g_idx"] = ("I32", (i,))
        elif scheme == "mo-nvfp4":
            out[f"{m}.input_scale"] = ("F32", ())
            out[f"{m}.weight"] = ("U8", (o, i // 2))
            out[f"{m}.weight_scale"] = ("F8_E4M3", (o, i // 16))
            out[f"{m}.weight_scale_2"] = ("F32", ())
        else:
            raise ValueError(scheme)
    return out


def matcher(ignore: Iterable[str]) -> Callable[[str], bool]:
    """compressed-tensors semantics: exact names, or ``re:`` + ``re.match``."""
    import re

    plain = {e for e in ignore if not e.startswith("re:")}
    rx = [re.compile(e[3:]) for e in ignore if e.startswith("re:")]
    return lambda name: name in plain or any(r.match(name) for r in rx)


_GROUPS = {"ct-fp8-dynamic": CT_FP8_DYNAMIC, "ct-nvfp4": CT_NVFP4, "ct-w4a16-g128": CT_W4A16}


def ct_checkpoint(out: Path, arch: tuple[dict[str, Any], Tensors], scheme: str, ignore: Iterable[str], *,
                  config_ignore: Iterable[str] | None = None, kv: Mapping[str, Any] | None = None,
                  shards: int = 1, data: Mapping[str, bytes] | None = None) -> Path:
    """A compressed-tensors checkpoint of ``arch``: layers matching ``ignore`` stay 16-bit on disk, the config
    lists ``config_ignore`` (default: the same list)."""
    cfg, t = copy.deepcopy(arch[0]), arch[1]
    ignore = list(ignore)
    qt = quantize(t, matcher(ignore), scheme)
    if kv is not None:
        for name in t:
            for leaf in (".self_attn.q_proj.weight", ".self_attn.q_a_proj.weight"):
                if name.endswith(leaf) and not name.startswith("mtp."):
                    attn = name[: -len(leaf)] + ".self_attn"
                    qt[f"{attn}.k_scale"] = ("BF16", (1,))
                    qt[f"{attn}.v_scale"] = ("BF16", (1,))
    cfg["quantization_config"] = ct_config(_GROUPS[scheme], ignore if config_ignore is None else config_ignore,
                                           kv=kv)
    return write_checkpoint(out, cfg, qt, shards=shards, data=data)
