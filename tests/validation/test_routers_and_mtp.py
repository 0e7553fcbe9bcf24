"""Routers, shared-expert gates and MTP heads judged the way vLLM's model code builds them (issue 11).

vLLM builds MoE routers with ``quant_config=None`` (deepseek_v2.py DeepseekV2MoE via GateLinear, qwen3_moe.py
Qwen3MoeSparseMoeBlock, granitemoe.py GraniteMoeMoE, ...) and loads MTP layers only for speculative decoding
(deepseek_v2.py DeepseekV2ForCausalLM.load_weights and qwen3_next.py Qwen3NextModel.load_weights skip them).
So a 16-bit router without an ignore entry loads (a warning), a quantized router does not (an error), and an
MTP mismatch matters only with MTP speculative decoding (a warning). Header-only checkpoints with real names.
"""

from __future__ import annotations

import re
from pathlib import Path

import synthetic_checkpoints as S

from quantkit.planning.ignore import build_ignore, checkpoint_module_names
from quantkit.validation import validate


def _ignore(cfg, t):
    return build_ignore(checkpoint_module_names({k: v[1] for k, v in t.items()}), config=cfg)


# ------------------------------------------------------------------------------------------ DeepSeek-V3 FP8 release

def test_deepseek_v3_fp8_release_validates_without_errors(tmp_path: Path) -> None:
    """deepseek-ai/DeepSeek-V3: quant_method fp8, 128x128 blocks, routers BF16 with no ignore entry, MTP layer."""
    report = validate(S.deepseek_v3_fp8_release(tmp_path / "ds3"))
    assert report.ok, [str(f) for f in report.errors]
    [router] = report.by_rule("config-matches-disk")
    assert router.severity == "warning" and router.module == "model.layers.*.mlp.gate"
    assert "unquantized" in router.message
    # the MTP layer's eh_proj (nn.Linear in deepseek_mtp.py) and shared_head.head (ParallelLMHead) stay BF16
    assert not any("layers.3." in (f.module or "") for f in report.findings)


def test_deepseek_v3_fp8_router_stored_fp8_is_an_error(tmp_path: Path) -> None:
    report = validate(S.deepseek_v3_fp8_release(tmp_path / "ds3", fp8_routers=True))
    found = [f for f in report.by_rule("keep-16bit") if f.severity == "error"]
    assert found and found[0].module == "model.layers.*.mlp.gate" and "deepseek_v2.py" in found[0].message
    assert not report.ok


# ---------------------------------------------------------------------------------------------- Granite-4 routers

def granite4_hybrid_moe(layers: int = 4, experts: int = 4) -> tuple[dict, S.Tensors]:
    """Granite-4.0-H-Small style: Mamba-2 and attention layers (``layer_types``), 3-D experts, router.layer."""
    hidden = 4096
    cfg = {"architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid", "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 8,
           "layer_types": ["attention" if i % 4 == 3 else "mamba" for i in range(layers)],
           "num_local_experts": experts, "num_experts_per_tok": 2, "intermediate_size": 1024,
           "shared_intermediate_size": 8192, "mamba_n_heads": 128, "mamba_d_head": 64, "mamba_n_groups": 1,
           "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "vocab_size": 100352,
           "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
    t: S.Tensors = {"model.embed_tokens.weight": ("BF16", (100352, hidden))}
    inner = 2 * hidden
    for i, kind in enumerate(cfg["layer_types"]):
        p = f"model.layers.{i}"
        S._norm(t, f"{p}.input_layernorm", hidden)
        if kind == "mamba":
            t[f"{p}.mamba.in_proj.weight"] = ("BF16", (2 * inner + 2 * 128 + 128, hidden))
            t[f"{p}.mamba.conv1d.weight"] = ("BF16", (inner + 2 * 128, 1, 4))
            t[f"{p}.mamba.A_log"] = ("F32", (128,))
            S._norm(t, f"{p}.mamba.norm", inner)
            S._lin(t, f"{p}.mamba.out_proj", hidden, inner)
        else:
            S._lin(t, f"{p}.self_attn.q_proj", hidden, hidden)
            S._lin(t, f"{p}.self_attn.k_proj", 1024, hidden)
            S._lin(t, f"{p}.self_attn.v_proj", 1024, hidden)
            S._lin(t, f"{p}.self_attn.o_proj", hidden, hidden)
        S._lin(t, f"{p}.block_sparse_moe.router.layer", experts, hidden)
        t[f"{p}.block_sparse_moe.input_linear.weight"] = ("BF16", (experts, 2 * 1024, hidden))
        t[f"{p}.block_sparse_moe.output_linear.weight"] = ("BF16", (experts, hidden, 1024))
        S._lin(t, f"{p}.shared_mlp.input_linear", 2 * 8192, hidden)
        S._lin(t, f"{p}.shared_mlp.output_linear", hidden, 8192)
        S._norm(t, f"{p}.post_attention_layernorm", hidden)
    S._norm(t, "model.norm", hidden)
    return cfg, t


def test_granite4_plan_ignores_the_router() -> None:
    cfg, t = granite4_hybrid_moe()
    ignore = _ignore(cfg, t)
    assert r"re:.*\.router\.layer$" in ignore
    assert any(re.match(e[3:], "model.layers.0.block_sparse_moe.router.layer") for e in ignore if e.startswith("re:"))


def test_granite4_router_stored_fp8_is_an_error(tmp_path: Path) -> None:
    """vLLM's granitemoe.py GraniteMoeMoE builds the gate unquantized and loads router.layer.weight into it."""
    arch = granite4_hybrid_moe()
    ign = [e for e in _ignore(*arch) if "router" not in e]
    report = validate(S.ct_checkpoint(tmp_path / "g", arch, "ct-fp8-dynamic", ign))
    errors = [f for f in report.by_rule("keep-16bit") if f.severity == "error"]
    assert errors and errors[0].module == "model.layers.*.block_sparse_moe.router.layer"
    assert "granitemoe.py" in errors[0].message
    # one error per problem: config-matches-disk leaves the quantized router to keep-16bit
    assert not any("router" in (f.module or "") for f in report.by_rule("config-matches-disk"))


def test_granite4_with_quantkits_ignore_list_passes(tmp_path: Path) -> None:
    arch = granite4_hybrid_moe()
    report = validate(S.ct_checkpoint(tmp_path / "g", arch, "ct-fp8-dynamic", _ignore(*arch)))
    assert report.ok, [str(f) for f in report.errors]


# ------------------------------------------------------------------------------------------------- MTP heads

def test_qwen35_mtp_quantized_with_the_config_is_a_warning(tmp_path: Path) -> None:
    """qwen3_next_mtp.py / qwen3_5_mtp.py build the MTP layers with the model's quant_config: they load."""
    a = S.qwen35_hybrid()
    ign = [e for e in _ignore(*a) if "mtp" not in e]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign))
    mtp = [f for f in report.by_rule("keep-16bit") if (f.module or "").startswith("mtp.")]
    assert mtp and all(f.severity == "warning" for f in mtp)
    assert report.ok, [str(f) for f in report.errors]


def test_mtp_stored_16bit_but_quantized_by_the_config_is_a_warning(tmp_path: Path) -> None:
    a = S.qwen35_hybrid()
    ign = _ignore(*a)
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign,
                                      config_ignore=[e for e in ign if "mtp" not in e]))
    found = [f for f in report.by_rule("config-matches-disk") if (f.module or "").startswith("mtp.")]
    assert found and all(f.severity == "warning" and "speculative decoding" in f.message for f in found)
    assert report.ok, [str(f) for f in report.errors]


# ----------------------------------------------------------------------------------- no-op ModelOpt exclude entries

def test_deepseek_r1_fp4_exclude_entries_for_missing_q_proj_are_warnings(tmp_path: Path) -> None:
    """nvidia/DeepSeek-R1-FP4 lists self_attn.q_proj per layer; R1 has q_a_proj/q_b_proj. vLLM ignores them."""
    cfg, t = S.deepseek_v3(layers=3)
    layers = cfg["num_hidden_layers"]
    exclude = ["lm_head"] + [f"model.layers.{i}.self_attn.q_proj" for i in range(layers)]
    qt = S.quantize(t, lambda m: m == "lm_head" or m.endswith(".mlp.gate"), "mo-nvfp4")
    qc, side = S.mo_nvfp4_config(exclude)
    cfg = {**cfg, "quantization_config": qc}
    report = validate(S.write_checkpoint(tmp_path / "r1", cfg, qt, sidecar=side))
    found = report.by_rule("ignore-names-exist")
    assert len(found) == layers and all(f.severity == "warning" for f in found)
    assert report.ok, [str(f) for f in report.errors]
