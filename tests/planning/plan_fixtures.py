"""Module names and shapes of real checkpoints, generated from their published ``config.json``.

Each builder returns ``(config, tensors)`` where ``tensors`` maps the on-disk tensor name to
``(dtype, shape)`` exactly as the Hugging Face repository's safetensors headers list them (BF16 releases;
DeepSeek-V3 as its BF16 conversion, i.e. without the FP8 ``weight_scale_inv`` tensors). The configs are the
published ones, trimmed to the keys planning reads, and keep their omissions (Gemma-3's ``text_config`` has
no head counts; the config class fills them in).

:func:`write_checkpoint` writes a header-only checkpoint: ``config.json`` plus a safetensors file whose
header lists every tensor with its real dtype, shape and offsets, followed by a sparse (all-zero, unallocated)
payload of the real size. ``CheckpointView`` reads headers only, so ``plan()`` runs on a 671B model in about a
second.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

Tensors = dict[str, tuple[str, tuple[int, ...]]]
BF16 = "BF16"
_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "I32": 4, "U8": 1}


def _lin(t: Tensors, name: str, out_f: int, in_f: int, bias: bool = False) -> None:
    t[f"{name}.weight"] = (BF16, (out_f, in_f))
    if bias:
        t[f"{name}.bias"] = (BF16, (out_f,))


def _norm(t: Tensors, name: str, dim: int, bias: bool = False) -> None:
    t[f"{name}.weight"] = (BF16, (dim,))
    if bias:
        t[f"{name}.bias"] = (BF16, (dim,))


def _gqa(t: Tensors, p: str, hidden: int, heads: int, kv: int, hd: int, qk_norm: bool = False,
         q_gate: bool = False) -> None:
    _lin(t, f"{p}.self_attn.q_proj", heads * hd * (2 if q_gate else 1), hidden)
    _lin(t, f"{p}.self_attn.k_proj", kv * hd, hidden)
    _lin(t, f"{p}.self_attn.v_proj", kv * hd, hidden)
    _lin(t, f"{p}.self_attn.o_proj", hidden, heads * hd)
    if qk_norm:
        _norm(t, f"{p}.self_attn.q_norm", hd)
        _norm(t, f"{p}.self_attn.k_norm", hd)


def _mlp(t: Tensors, p: str, hidden: int, inter: int) -> None:
    _lin(t, f"{p}.gate_proj", inter, hidden)
    _lin(t, f"{p}.up_proj", inter, hidden)
    _lin(t, f"{p}.down_proj", hidden, inter)


# --------------------------------------------------------------------------------------------- Llama-3.1-8B

LLAMA3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05,
}


def llama3_8b() -> tuple[dict, Tensors]:
    c = LLAMA3_8B_CONFIG
    h, t = c["hidden_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (c["vocab_size"], h))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", h)
        _gqa(t, p, h, 32, 8, 128)
        _norm(t, f"{p}.post_attention_layernorm", h)
        _mlp(t, f"{p}.mlp", h, c["intermediate_size"])
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", c["vocab_size"], h)
    return dict(c), t


def _llama3_shaped(config: dict, heads: int, kv: int) -> tuple[dict, Tensors]:
    """A Llama-3-family checkpoint of ``config``'s width and depth (Llama-3.1-70B/405B: published configs)."""
    c = {**LLAMA3_8B_CONFIG, **config}
    h, t = c["hidden_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (c["vocab_size"], h))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", h)
        _gqa(t, p, h, heads, kv, 128)
        _norm(t, f"{p}.post_attention_layernorm", h)
        _mlp(t, f"{p}.mlp", h, c["intermediate_size"])
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", c["vocab_size"], h)
    return c, t


def llama3_70b() -> tuple[dict, Tensors]:
    return _llama3_shaped({"hidden_size": 8192, "intermediate_size": 28672, "num_attention_heads": 64,
                           "num_hidden_layers": 80, "num_key_value_heads": 8}, 64, 8)


def llama3_405b() -> tuple[dict, Tensors]:
    return _llama3_shaped({"hidden_size": 16384, "intermediate_size": 53248, "num_attention_heads": 128,
                           "num_hidden_layers": 126, "num_key_value_heads": 8}, 128, 8)


# --------------------------------------------------------------------------------------------- Qwen3-8B

QWEN3_8B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "sliding_window": None, "use_sliding_window": False,
}


def qwen3_8b() -> tuple[dict, Tensors]:
    c = QWEN3_8B_CONFIG
    h, t = c["hidden_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (c["vocab_size"], h))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", h)
        _gqa(t, p, h, 32, 8, 128, qk_norm=True)
        _norm(t, f"{p}.post_attention_layernorm", h)
        _mlp(t, f"{p}.mlp", h, c["intermediate_size"])
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", c["vocab_size"], h)
    return dict(c), t


# --------------------------------------------------------------------------------------------- Qwen3-30B-A3B

QWEN3_MOE_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "num_attention_heads": 32, "num_hidden_layers": 48,
    "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "norm_topk_prob": True,
}


def _qwen_moe(t: Tensors, p: str, h: int, experts: int, inter: int, shared: int = 0) -> None:
    _lin(t, f"{p}.mlp.gate", experts, h)
    for e in range(experts):
        _mlp(t, f"{p}.mlp.experts.{e}", h, inter)
    if shared:
        _mlp(t, f"{p}.mlp.shared_expert", h, shared)
        _lin(t, f"{p}.mlp.shared_expert_gate", 1, h)


def _qwen3_moe_model(c: dict) -> tuple[dict, Tensors]:
    """A Qwen3-MoE checkpoint of config ``c``: GQA with q/k norms, routed experts, no shared expert."""
    h, t = c["hidden_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (c["vocab_size"], h))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", h)
        _gqa(t, p, h, c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], qk_norm=True)
        _norm(t, f"{p}.post_attention_layernorm", h)
        _qwen_moe(t, p, h, c["num_experts"], c["moe_intermediate_size"])
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", c["vocab_size"], h)
    return dict(c), t


def qwen3_30b_a3b() -> tuple[dict, Tensors]:
    return _qwen3_moe_model(QWEN3_MOE_CONFIG)


# --------------------------------------------------------------------------------------------- Qwen3-Next-80B-A3B

QWEN3_NEXT_CONFIG = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 2048,
    "intermediate_size": 5120, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
    "num_experts": 512, "num_experts_per_tok": 10, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "full_attention_interval": 4, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
    "num_hidden_layers": 48, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
    "linear_num_value_heads": 32, "linear_value_head_dim": 128, "partial_rotary_factor": 0.25,
    "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
}


def _qwen_next_layer(t: Tensors, p: str, c: dict, full: bool) -> None:
    h = c["hidden_size"]
    _norm(t, f"{p}.input_layernorm", h)
    if full:
        _gqa(t, p, h, c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], qk_norm=True, q_gate=True)
    else:
        kd = c["linear_num_key_heads"] * c["linear_key_head_dim"]
        vd = c["linear_num_value_heads"] * c["linear_value_head_dim"]
        nv = c["linear_num_value_heads"]
        _lin(t, f"{p}.linear_attn.in_proj_qkvz", 2 * kd + 2 * vd, h)
        _lin(t, f"{p}.linear_attn.in_proj_ba", 2 * nv, h)
        t[f"{p}.linear_attn.conv1d.weight"] = (BF16, (2 * kd + vd, 1, c["linear_conv_kernel_dim"]))
        t[f"{p}.linear_attn.dt_bias"] = (BF16, (nv,))
        t[f"{p}.linear_attn.A_log"] = ("F32", (nv,))
        _norm(t, f"{p}.linear_attn.norm", c["linear_value_head_dim"])
        _lin(t, f"{p}.linear_attn.out_proj", h, vd)
    _norm(t, f"{p}.post_attention_layernorm", h)
    _qwen_moe(t, p, h, c["num_experts"], c["moe_intermediate_size"], c["shared_expert_intermediate_size"])


def qwen3_next_80b() -> tuple[dict, Tensors]:
    c = QWEN3_NEXT_CONFIG
    h, t = c["hidden_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (c["vocab_size"], h))
    for i in range(c["num_hidden_layers"]):
        _qwen_next_layer(t, f"model.layers.{i}", c, full=(i + 1) % c["full_attention_interval"] == 0)
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", c["vocab_size"], h)
    # one multi-token-prediction layer (full attention + MoE), stored under mtp.*
    _lin(t, "mtp.fc", h, 2 * h)
    _norm(t, "mtp.pre_fc_norm_embedding", h)
    _norm(t, "mtp.pre_fc_norm_hidden", h)
    _qwen_next_layer(t, "mtp.layers.0", c, full=True)
    _norm(t, "mtp.norm", h)
    return dict(c), t


# --------------------------------------------------------------------------------------------- Gemma-3-4B-it

GEMMA3_4B_CONFIG = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
    "image_token_index": 262144,
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
    "torch_dtype": "bfloat16",
}


def gemma3_4b() -> tuple[dict, Tensors]:
    c = GEMMA3_4B_CONFIG
    tc = c["text_config"]
    h, vocab, t = tc["hidden_size"], 262208, {}
    t["language_model.model.embed_tokens.weight"] = (BF16, (vocab, h))
    for i in range(tc["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}"
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            _norm(t, f"{p}.{n}", h)
        _gqa(t, p, h, 8, 4, 256, qk_norm=True)
        _mlp(t, f"{p}.mlp", h, tc["intermediate_size"])
    _norm(t, "language_model.model.norm", h)
    vc = c["vision_config"]
    vh, v = vc["hidden_size"], "vision_tower.vision_model"
    t[f"{v}.embeddings.patch_embedding.weight"] = (BF16, (vh, 3, 14, 14))
    t[f"{v}.embeddings.patch_embedding.bias"] = (BF16, (vh,))
    t[f"{v}.embeddings.position_embedding.weight"] = (BF16, ((896 // 14) ** 2, vh))
    for i in range(vc["num_hidden_layers"]):
        p = f"{v}.encoder.layers.{i}"
        _norm(t, f"{p}.layer_norm1", vh, bias=True)
        _norm(t, f"{p}.layer_norm2", vh, bias=True)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _lin(t, f"{p}.self_attn.{n}", vh, vh, bias=True)
        _lin(t, f"{p}.mlp.fc1", vc["intermediate_size"], vh, bias=True)
        _lin(t, f"{p}.mlp.fc2", vh, vc["intermediate_size"], bias=True)
    _norm(t, f"{v}.post_layernorm", vh, bias=True)
    t["multi_modal_projector.mm_input_projection_weight"] = (BF16, (vh, h))
    _norm(t, "multi_modal_projector.mm_soft_emb_norm", vh)
    return json.loads(json.dumps(c)), t


# --------------------------------------------------------------------------------------------- Llama-4-Scout

LLAMA4_SCOUT_CONFIG = {
    "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "image_token_index": 200092,
    "text_config": {"attention_chunk_size": 8192, "head_dim": 128, "hidden_size": 5120,
                    "interleave_moe_layer_step": 1, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
                    "model_type": "llama4_text", "no_rope_layers": [], "num_attention_heads": 40,
                    "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8,
                    "num_local_experts": 16, "use_qk_norm": True, "vocab_size": 202048, "torch_dtype": "bfloat16"},
    "vision_config": {"hidden_size": 1408, "image_size": 336, "intermediate_size": 5632,
                      "model_type": "llama4_vision_model", "num_attention_heads": 16, "num_hidden_layers": 34,
                      "patch_size": 14, "pixel_shuffle_ratio": 0.5, "projector_input_dim": 4096,
                      "projector_output_dim": 4096, "vision_output_dim": 4096},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


def llama4_scout() -> tuple[dict, Tensors]:
    c = LLAMA4_SCOUT_CONFIG
    tc = c["text_config"]
    h, vocab, t = tc["hidden_size"], tc["vocab_size"], {}
    n_exp, inter = tc["num_local_experts"], tc["intermediate_size"]
    t["language_model.model.embed_tokens.weight"] = (BF16, (vocab, h))
    for i in range(tc["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", h)
        _gqa(t, p, h, 40, 8, 128)
        _norm(t, f"{p}.post_attention_layernorm", h)
        _lin(t, f"{p}.feed_forward.router", n_exp, h)
        t[f"{p}.feed_forward.experts.gate_up_proj"] = (BF16, (n_exp, h, 2 * inter))
        t[f"{p}.feed_forward.experts.down_proj"] = (BF16, (n_exp, inter, h))
        _mlp(t, f"{p}.feed_forward.shared_expert", h, inter)
    _norm(t, "language_model.model.norm", h)
    _lin(t, "language_model.lm_head", vocab, h)
    vc = c["vision_config"]
    vh, vi = vc["hidden_size"], vc["intermediate_size"]
    _lin(t, "vision_model.patch_embedding.linear", vh, 3 * 14 * 14)
    t["vision_model.class_embedding"] = (BF16, (vh,))
    t["vision_model.positional_embedding_vlm"] = (BF16, ((336 // 14) ** 2 + 1, vh))
    _norm(t, "vision_model.layernorm_pre", vh, bias=True)
    _norm(t, "vision_model.layernorm_post", vh, bias=True)
    for i in range(vc["num_hidden_layers"]):
        p = f"vision_model.model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", vh, bias=True)
        _norm(t, f"{p}.post_attention_layernorm", vh, bias=True)
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _lin(t, f"{p}.self_attn.{n}", vh, vh, bias=True)
        _lin(t, f"{p}.mlp.fc1", vi, vh, bias=True)
        _lin(t, f"{p}.mlp.fc2", vh, vi, bias=True)
    _lin(t, "vision_model.vision_adapter.mlp.fc1", vc["projector_input_dim"], vi)
    _lin(t, "vision_model.vision_adapter.mlp.fc2", vc["projector_output_dim"], vc["projector_output_dim"])
    _lin(t, "multi_modal_projector.linear_1", h, vc["vision_output_dim"])
    return json.loads(json.dumps(c)), t


# --------------------------------------------------------------------------------------------- DeepSeek-V3

DEEPSEEK_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "first_k_dense_replace": 3, "moe_layer_freq": 1,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
    "num_attention_heads": 128, "num_key_value_heads": 128, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
}


def _deepseek_layer(t: Tensors, i: int, c: dict) -> None:
    h, p = c["hidden_size"], f"model.layers.{i}"
    heads = c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    _norm(t, f"{p}.input_layernorm", h)
    _lin(t, f"{p}.self_attn.q_a_proj", c["q_lora_rank"], h)
    _norm(t, f"{p}.self_attn.q_a_layernorm", c["q_lora_rank"])
    _lin(t, f"{p}.self_attn.q_b_proj", heads * qk, c["q_lora_rank"])
    _lin(t, f"{p}.self_attn.kv_a_proj_with_mqa", c["kv_lora_rank"] + c["qk_rope_head_dim"], h)
    _norm(t, f"{p}.self_attn.kv_a_layernorm", c["kv_lora_rank"])
    _lin(t, f"{p}.self_attn.kv_b_proj", heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
    _lin(t, f"{p}.self_attn.o_proj", h, heads * c["v_head_dim"])
    _norm(t, f"{p}.post_attention_layernorm", h)
    if i < c["first_k_dense_replace"]:
        _mlp(t, f"{p}.mlp", h, c["intermediate_size"])
        return
    _lin(t, f"{p}.mlp.gate", c["n_routed_experts"], h)
    t[f"{p}.mlp.gate.e_score_correction_bias"] = ("F32", (c["n_routed_experts"],))
    for e in range(c["n_routed_experts"]):
        _mlp(t, f"{p}.mlp.experts.{e}", h, c["moe_intermediate_size"])
    _mlp(t, f"{p}.mlp.shared_experts", h, c["moe_intermediate_size"] * c["n_shared_experts"])


def deepseek_v3() -> tuple[dict, Tensors]:
    c = DEEPSEEK_V3_CONFIG
    h, vocab, t = c["hidden_size"], c["vocab_size"], {}
    t["model.embed_tokens.weight"] = (BF16, (vocab, h))
    n = c["num_hidden_layers"]
    for i in range(n + c["num_nextn_predict_layers"]):
        _deepseek_layer(t, i, c)
    # the MTP layer (index num_hidden_layers) carries its own embedding, projections and head
    p = f"model.layers.{n}"
    t[f"{p}.embed_tokens.weight"] = (BF16, (vocab, h))
    _norm(t, f"{p}.enorm", h)
    _norm(t, f"{p}.hnorm", h)
    _lin(t, f"{p}.eh_proj", h, 2 * h)
    _norm(t, f"{p}.shared_head.norm", h)
    _lin(t, f"{p}.shared_head.head", vocab, h)
    _norm(t, "model.norm", h)
    _lin(t, "lm_head", vocab, h)
    return dict(c), t


# --------------------------------------------------------------------------------------------- Qwen3-235B-A22B

QWEN3_235B_CONFIG = dict(QWEN3_MOE_CONFIG, hidden_size=4096, intermediate_size=12288, moe_intermediate_size=1536,
                         num_attention_heads=64, num_key_value_heads=4, num_hidden_layers=94,
                         max_position_embeddings=40960)


def qwen3_235b_a22b() -> tuple[dict, Tensors]:
    """Qwen3-235B-A22B: 94 layers, 64 heads / 4 KV heads, 128 experts of 1536 (published config.json)."""
    return _qwen3_moe_model(QWEN3_235B_CONFIG)


#: the frontier sizes of the parallelism matrix (not in ARCHITECTURES: every-architecture tests stay fast)
AT_SCALE = {"llama3-8b": llama3_8b, "llama3-70b": llama3_70b, "llama3-405b": llama3_405b,
            "qwen3-235b": qwen3_235b_a22b, "deepseek-v3": deepseek_v3}


ARCHITECTURES = {
    "llama3": llama3_8b,
    "qwen3": qwen3_8b,
    "qwen3-moe": qwen3_30b_a3b,
    "qwen3-next": qwen3_next_80b,
    "gemma3": gemma3_4b,
    "llama4": llama4_scout,
    "deepseek-v3": deepseek_v3,
}


def write_checkpoint(directory: Path, config: dict, tensors: Tensors, max_shard_bytes: int | None = None) -> Path:
    """Write ``config.json`` and a header-only ``model.safetensors`` (real offsets, no tensor data).

    With ``max_shard_bytes``, tensors go into ``model-0000i-of-0000n.safetensors`` shards of at most that many
    bytes (one bigger tensor gets a shard of its own), with a ``model.safetensors.index.json``, the way
    transformers' ``save_pretrained(max_shard_size=...)`` splits a checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    groups: list[list[tuple[str, str, tuple[int, ...], int]]] = [[]]
    used = 0
    for name, (dtype, shape) in tensors.items():
        n = _BYTES[dtype]
        for d in shape:
            n *= d
        if max_shard_bytes is not None and groups[-1] and used + n > max_shard_bytes:
            groups.append([])
            used = 0
        groups[-1].append((name, dtype, shape, n))
        used += n
    if max_shard_bytes is None:
        _write_shard(directory / "model.safetensors", groups[0])
        return directory
    weight_map = {}
    for i, group in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        _write_shard(directory / file, group)
        weight_map.update({name: file for name, *_ in group})
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    return directory


def _write_shard(path: Path, group: list[tuple[str, str, tuple[int, ...], int]]) -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, n in group:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)  # a sparse payload: the real file size, no bytes on disk


def lazy_checkpoints(root: Path, table: Mapping[str, Callable[[], tuple[dict, Tensors]]]) -> Callable[[str], Path]:
    """``get(name)`` -> a header-only checkpoint of ``table[name]`` under ``root``, written on first use."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            config, tensors = table[name]()
            built[name] = write_checkpoint(root / name, config, tensors)
        return built[name]

    return get
