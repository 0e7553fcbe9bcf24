"""Hybrid state-space families: layer kinds, KV bytes per token, hybrid detection and the Mamba ignore rules.

Configs follow the transformers config classes (configuration_nemotron_h.py, configuration_granitemoehybrid.py,
configuration_jamba.py, configuration_falcon_h1.py) at tiny sizes; module names follow their modeling files and
vLLM's model files (nemotron_h.py, granitemoehybrid.py, jamba.py, falcon_h1.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantkit.checkpoint.reader import CheckpointView
from quantkit.planning.architectures import describe
from quantkit.planning.ignore import build_ignore, checkpoint_module_names, ignore_matcher
from quantkit.planning.memory import kv_bytes_per_token, state_bytes_per_sequence

from plan_fixtures import Tensors, _lin, _norm, write_checkpoint

H, HEADS, KV, HD = 64, 4, 2, 16
KV_PER_LAYER = 2 * KV * HD * 2  # k and v, bf16


def _attn(t: Tensors, p: str) -> None:
    _lin(t, f"{p}.q_proj", HEADS * HD, H)
    _lin(t, f"{p}.k_proj", KV * HD, H)
    _lin(t, f"{p}.v_proj", KV * HD, H)
    _lin(t, f"{p}.o_proj", H, HEADS * HD)


def _mamba2(t: Tensors, p: str, heads: int, hdim: int, groups: int, state: int) -> None:
    inner = heads * hdim
    _lin(t, f"{p}.in_proj", 2 * inner + 2 * groups * state + heads, H)
    t[f"{p}.conv1d.weight"] = ("BF16", (inner + 2 * groups * state, 1, 4))
    t[f"{p}.A_log"] = ("F32", (heads,))
    _norm(t, f"{p}.norm", inner)
    _lin(t, f"{p}.out_proj", H, inner)


def nemotron_h() -> tuple[dict, Tensors]:
    """Nemotron-H: hybrid_override_pattern only, no num_hidden_layers."""
    pattern = "M-M*-ME"
    cfg = {"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "hidden_size": H,
           "hybrid_override_pattern": pattern, "num_attention_heads": HEADS, "num_key_value_heads": KV,
           "head_dim": HD, "mamba_num_heads": 8, "mamba_head_dim": 16, "n_groups": 2, "ssm_state_size": 16,
           "conv_kernel": 4, "intermediate_size": 128, "n_routed_experts": 4, "moe_intermediate_size": 32,
           "vocab_size": 256, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t: Tensors = {"backbone.embeddings.weight": ("BF16", (256, H))}
    for i, ch in enumerate(pattern):
        p = f"backbone.layers.{i}"
        _norm(t, f"{p}.norm", H)
        if ch == "M":
            _mamba2(t, f"{p}.mixer", 8, 16, 2, 16)
        elif ch == "*":
            _attn(t, f"{p}.mixer")
        elif ch == "-":
            _lin(t, f"{p}.mixer.up_proj", 128, H)
            _lin(t, f"{p}.mixer.down_proj", H, 128)
        else:
            _lin(t, f"{p}.mixer.gate", 4, H)
            for e in range(4):
                _lin(t, f"{p}.mixer.experts.{e}.up_proj", 32, H)
                _lin(t, f"{p}.mixer.experts.{e}.down_proj", H, 32)
    _norm(t, "backbone.norm_f", H)
    _lin(t, "lm_head", 256, H)
    return cfg, t


def granite4_hybrid() -> tuple[dict, Tensors]:
    """Granite-4.0-H: layer_types with "mamba"/"attention" (as published)."""
    types = ["mamba", "mamba", "mamba", "attention"]
    cfg = {"architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "hidden_size": H,
           "num_hidden_layers": 4, "num_attention_heads": HEADS, "num_key_value_heads": KV, "layer_types": types,
           "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 16, "mamba_d_conv": 4,
           "mamba_expand": 2, "num_local_experts": 0, "shared_intermediate_size": 128, "vocab_size": 256,
           "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (256, H))}
    for i, kind in enumerate(types):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", H)
        if kind == "mamba":
            _mamba2(t, f"{p}.mamba", 8, 16, 1, 16)
        else:
            _attn(t, f"{p}.self_attn")
        _lin(t, f"{p}.shared_mlp.input_linear", 256, H)
        _lin(t, f"{p}.shared_mlp.output_linear", H, 128)
        _norm(t, f"{p}.post_attention_layernorm", H)
    _norm(t, "model.norm", H)
    return cfg, t


def jamba() -> tuple[dict, Tensors]:
    """Jamba: attention at layer i where i % attn_layer_period == attn_layer_offset, Mamba-1 elsewhere."""
    cfg = {"architectures": ["JambaForCausalLM"], "model_type": "jamba", "hidden_size": H, "num_hidden_layers": 8,
           "num_attention_heads": HEADS, "num_key_value_heads": KV, "attn_layer_period": 8, "attn_layer_offset": 4,
           "expert_layer_period": 2, "expert_layer_offset": 1, "num_experts": 2, "intermediate_size": 128,
           "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": 4, "vocab_size": 256,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    inner = 2 * H
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (256, H))}
    for i in range(8):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", H)
        if i % 8 == 4:
            _lin(t, f"{p}.self_attn.q_proj", H, H)
            _lin(t, f"{p}.self_attn.k_proj", KV * HD, H)
            _lin(t, f"{p}.self_attn.v_proj", KV * HD, H)
            _lin(t, f"{p}.self_attn.o_proj", H, H)
        else:
            m = f"{p}.mamba"
            _lin(t, f"{m}.in_proj", 2 * inner, H)
            t[f"{m}.conv1d.weight"] = ("BF16", (inner, 1, 4))
            _lin(t, f"{m}.x_proj", 4 + 2 * 16, inner)
            _lin(t, f"{m}.dt_proj", inner, 4, bias=True)
            _lin(t, f"{m}.out_proj", H, inner)
        if i % 2 == 1:
            _lin(t, f"{p}.feed_forward.router", 2, H)
            for e in range(2):
                _lin(t, f"{p}.feed_forward.experts.{e}.gate_proj", 128, H)
        else:
            _lin(t, f"{p}.feed_forward.gate_proj", 128, H)
    _norm(t, "model.final_layernorm", H)
    _lin(t, "lm_head", 256, H)
    return cfg, t


def falcon_h1() -> tuple[dict, Tensors]:
    """Falcon-H1: self_attn and a Mamba-2 mixer in parallel in every layer."""
    cfg = {"architectures": ["FalconH1ForCausalLM"], "model_type": "falcon_h1", "hidden_size": H,
           "num_hidden_layers": 3, "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD,
           "mamba_d_ssm": 128, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_n_groups": 1, "mamba_d_state": 16,
           "mamba_d_conv": 4, "mamba_expand": 2, "intermediate_size": 128, "vocab_size": 256,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t: Tensors = {"model.embed_tokens.weight": ("BF16", (256, H))}
    for i in range(3):
        p = f"model.layers.{i}"
        _norm(t, f"{p}.input_layernorm", H)
        _attn(t, f"{p}.self_attn")
        _mamba2(t, f"{p}.mamba", 8, 16, 1, 16)
        _lin(t, f"{p}.feed_forward.gate_proj", 128, H)
        _lin(t, f"{p}.feed_forward.up_proj", 128, H)
        _lin(t, f"{p}.feed_forward.down_proj", H, 128)
        _norm(t, f"{p}.pre_ff_layernorm", H)
    _norm(t, "model.final_layernorm", H)
    _lin(t, "lm_head", 256, H)
    return cfg, t


# (builder, family, layer kinds, attention layers, Mamba-state layers, Mamba-2?)
CASES = {
    "nemotron_h": (nemotron_h, "nemotron-h", ("mamba", "none", "mamba", "full", "none", "mamba", "none"), 1, 3),
    "granitemoehybrid": (granite4_hybrid, "granite-4-hybrid", ("mamba", "mamba", "mamba", "full"), 1, 3),
    "jamba": (jamba, "jamba", ("mamba",) * 4 + ("full",) + ("mamba",) * 3, 1, 7),
    "falcon_h1": (falcon_h1, "falcon-h1", ("full", "full", "full"), 3, 3),
}
MAMBA2_STATE = (4 - 1) * (128 + 2 * 1 * 16) + 8 * 16 * 16  # conv + ssm elements (vLLM mamba2_state_shape)


@pytest.mark.parametrize("arch", list(CASES))
def test_layer_kinds_kv_and_hybrid(arch: str) -> None:
    build, family, kinds, n_attn, n_state = CASES[arch]
    cfg, _ = build()
    traits = describe(cfg)
    assert traits.family == family
    assert tuple(s.kind for s in traits.layers) == kinds
    assert sum(s.has_state for s in traits.layers) == n_state
    assert traits.hybrid
    # only attention layers hold a per-token KV cache
    assert kv_bytes_per_token(cfg) == n_attn * KV_PER_LAYER
    assert state_bytes_per_sequence(cfg) > 0


def test_state_sizes_follow_vllm() -> None:
    cfg, _ = granite4_hybrid()
    assert state_bytes_per_sequence(cfg) == 3 * MAMBA2_STATE * 2
    cfg, _ = falcon_h1()
    assert state_bytes_per_sequence(cfg) == 3 * MAMBA2_STATE * 2
    cfg, _ = nemotron_h()
    assert state_bytes_per_sequence(cfg) == 3 * ((4 - 1) * (128 + 2 * 2 * 16) + 8 * 16 * 16) * 2
    cfg, _ = jamba()  # Mamba-1: conv (d_conv - 1) x inner, ssm inner x d_state (vLLM mamba1_state_shape)
    assert state_bytes_per_sequence(cfg) == 7 * (3 * 128 + 128 * 16) * 2


def test_jamba_kv_is_one_layer_in_eight() -> None:
    cfg, _ = jamba()
    dense = {k: v for k, v in cfg.items() if not k.startswith("attn_layer")}
    dense["model_type"] = "llama"
    assert kv_bytes_per_token(dense) == 8 * kv_bytes_per_token(cfg)


def test_new_transformers_layer_names_mean_mamba_in_mamba_families() -> None:
    # transformers remaps "mamba" -> "linear_attention" (remap_legacy_layer_types); in these families that is Mamba
    cfg, _ = granite4_hybrid()
    cfg["layer_types"] = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    assert [s.kind for s in describe(cfg).layers] == ["mamba", "mamba", "mamba", "full"]
    cfg, _ = nemotron_h()
    del cfg["hybrid_override_pattern"]
    cfg["layers_block_type"] = ["linear_attention", "mlp", "full_attention", "moe"]
    assert [s.kind for s in describe(cfg).layers] == ["mamba", "none", "full", "none"]
    # Qwen3-Next keeps Gated DeltaNet
    assert describe({"model_type": "qwen3_next", "num_hidden_layers": 4}).layers[0].kind == "linear"


@pytest.mark.parametrize("arch", ["nemotron_h", "granitemoehybrid", "falcon_h1"])
def test_mamba2_in_out_proj_quantized_conv1d_ignored(arch: str, tmp_path: Path) -> None:
    cfg, tensors = CASES[arch][0]()
    view = CheckpointView(write_checkpoint(tmp_path, cfg, tensors))
    names = checkpoint_module_names(view.tensors)
    mixer = "mixer" if arch == "nemotron_h" else "mamba"
    layer = "backbone.layers.0" if arch == "nemotron_h" else "model.layers.0"
    ignore = build_ignore([*names, f"{layer}.{mixer}.conv1d"], config=cfg)
    ignored = ignore_matcher(ignore)
    assert ignored(f"{layer}.{mixer}.conv1d")
    assert not ignored(f"{layer}.{mixer}.in_proj")
    assert not ignored(f"{layer}.{mixer}.out_proj")
    # the plan's ignore list, from the checkpoint's linear modules, quantizes the Mamba projections too
    assert not any(ignore_matcher(build_ignore(names, config=cfg))(n) for n in names
                   if n.endswith((".in_proj", ".out_proj")))


def test_jamba_mamba1_mixers_stay_16bit() -> None:
    # vLLM's MambaMixer (mamba_mixer.py, used by jamba.py) takes no quant config: every projection loads 16-bit
    cfg, tensors = jamba()
    names = checkpoint_module_names({k: v[1] for k, v in tensors.items()})
    ignored = ignore_matcher(build_ignore(names, config=cfg))
    for leaf in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        assert ignored(f"model.layers.0.mamba.{leaf}")
    assert ignored("model.layers.1.feed_forward.router")
    assert not ignored("model.layers.4.self_attn.q_proj")
    assert not ignored("model.layers.0.feed_forward.gate_proj")
