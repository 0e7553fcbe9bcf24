"""Ignore lists per architecture, from on-disk module names (no model code)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import plan_fixtures
import pytest

from quantkit.checkpoint.reader import CheckpointView
from quantkit.planning.ignore import (
    IGNORE_RULES,
    build_ignore,
    check_ignore,
    checkpoint_module_names,
    explain_ignore,
)

VISION = r"re:^(model\.)?(visual|vision_tower|vision_model|multi_modal_projector|audio_tower)\..*"
EXPECTED = {
    "llama3": ["lm_head"],
    "qwen3": ["lm_head"],
    "qwen3-moe": ["lm_head", r"re:.*\.mlp\.gate$"],
    "qwen3-next": ["lm_head", r"re:.*\.mlp\.gate$", r"re:.*\.shared_expert_gate$", r"re:.*\.linear_attn\..*",
                   r"re:^(model\.)?mtp\..*"],
    "gemma3": ["lm_head", VISION],
    "llama4": ["language_model.lm_head", r"re:.*\.(router|gate\.wg)$", VISION],
    "deepseek-v3": ["lm_head", r"re:.*\.mlp\.gate$", r"re:^(model\.)?layers\.61\..*"],
}


def _names(path: Path) -> tuple[list[str], dict]:
    view = CheckpointView(path)
    return checkpoint_module_names(view.tensors), view.config


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_exact_ignore_entries(arch: str, arch_dir: Callable[[str], Path]) -> None:
    names, config = _names(arch_dir(arch))
    assert build_ignore(names, config=config) == EXPECTED[arch]


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_every_entry_matches_an_on_disk_module(arch: str, arch_dir: Callable[[str], Path]) -> None:
    names, config = _names(arch_dir(arch))
    ignore = build_ignore(names, config=config)
    for entry in ignore:
        if entry.startswith("re:"):
            assert any(re.match(entry[3:], n) for n in names), entry
        elif arch != "gemma3":  # Gemma-3 ties lm_head to the embedding: no tensor on disk
            assert entry in names
    assert check_ignore(ignore, names) == []


def test_what_the_entries_cover(arch_dir: Callable[[str], Path]) -> None:
    names, config = _names(arch_dir("qwen3-next"))
    ignore = build_ignore(names, config=config)
    ignored = [n for n in names if any(re.match(e[3:], n) if e.startswith("re:") else e == n for e in ignore)]
    # every Gated-DeltaNet projection of the 36 linear-attention layers, all 49 routers, all shared-expert gates
    assert sum(".linear_attn." in n for n in ignored) == 36 * 3
    assert sum(n.endswith(".mlp.gate") for n in ignored) == 49
    assert sum(n.endswith(".shared_expert_gate") for n in ignored) == 49
    # experts, shared experts and the full-attention projections stay quantized
    assert not any(".experts." in n or ".shared_expert." in n or ".self_attn." in n
                   for n in ignored if not n.startswith("mtp."))


def test_deepseek_keeps_mla_quantized_and_skips_the_mtp_layer(arch_dir: Callable[[str], Path]) -> None:
    names, config = _names(arch_dir("deepseek-v3"))
    entries = {e.rule: e for e in explain_ignore(names, config=config)}
    assert entries["mtp-layer"].matches > 256 * 3  # the whole layer 61, experts included
    ignore = build_ignore(names, config=config)
    for n in ("model.layers.5.self_attn.q_a_proj", "model.layers.5.self_attn.kv_a_proj_with_mqa",
              "model.layers.5.self_attn.kv_b_proj", "model.layers.5.mlp.experts.0.up_proj"):
        assert n in names
        assert not any(re.match(e[3:], n) for e in ignore if e.startswith("re:"))


def test_llama4_vision_and_router(arch_dir: Callable[[str], Path]) -> None:
    names, config = _names(arch_dir("llama4"))
    assert "language_model.model.layers.0.feed_forward.experts.gate_up_proj" in names  # fused 3-D experts
    rx = re.compile(VISION[3:])
    assert rx.match("vision_model.model.layers.0.self_attn.q_proj")
    assert rx.match("multi_modal_projector.linear_1")
    assert rx.match("vision_model.patch_embedding.linear")
    assert not rx.match("language_model.model.layers.0.self_attn.q_proj")


def test_tied_embeddings_still_ignore_lm_head(embedded_path: Path) -> None:
    names, config = _names(embedded_path)
    assert not any("lm_head" in n for n in names)  # tied: stored once as embed_tokens
    entries = explain_ignore(names, config=config)
    assert [e.entry for e in entries] == ["lm_head"]
    assert "tied" in entries[0].why


def test_in_memory_names_keep_working() -> None:
    # what the pipeline passes today: linear_module_names(model) of a loaded Llama
    names = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    assert build_ignore([*names, "lm_head"]) == ["lm_head"]
    moe = [*names, "model.layers.0.mlp.gate", "model.layers.0.mlp.experts.0.gate_proj", "lm_head"]
    assert build_ignore(moe) == ["lm_head", r"re:.*\.mlp\.gate$"]


@pytest.mark.parametrize("names,rule", [
    (["model.layers.0.block_sparse_moe.gate", "model.layers.0.block_sparse_moe.experts.0.w1"], "moe-router-mixtral"),
    # Mamba-2: only conv1d stays 16-bit; in_proj/out_proj are quantized (vLLM mamba_mixer2.py)
    (["backbone.layers.0.mixer.in_proj", "backbone.layers.0.mixer.out_proj", "backbone.layers.0.mixer.conv1d",
      "backbone.layers.1.mixer.q_proj"], "mamba-mixer"),
    (["model.visual.blocks.0.attn.qkv", "model.language_model.layers.0.self_attn.q_proj"], "vision-tower"),
    (["model.layers.0.mlp.router", "model.layers.0.mlp.experts.gate_up_proj"], "moe-router-named"),
    # on-disk names of the MoE families transformers ships (their modeling files), each a router vLLM builds with
    # quant_config=None (the rule's `vllm` field names the file and class)
    (["model.layers.0.block_sparse_moe.router.layer", "model.layers.0.shared_mlp.input_linear"], "moe-router-layer"),
    (["transformer.blocks.0.ffn.router.layer", "transformer.blocks.0.norm_attn_norm.attn.Wqkv"], "moe-router-layer"),
    (["model.layers.1.feed_forward.router", "model.layers.1.feed_forward.experts.0.gate_proj"], "moe-router-named"),
    (["model.layers.0.mlp.gate.wg", "model.layers.0.mlp.experts.0.gate_proj"], "moe-router-named"),
    (["backbone.layers.1.mixer.gate", "backbone.layers.1.mixer.experts.0.up_proj"], "moe-router-mixer"),
    (["model.layers.0.block_sparse_moe.gate", "model.layers.0.block_sparse_moe.experts.0.w2"], "moe-router-mixtral"),
    (["model.layers.1.mlp.gate", "model.layers.1.mlp.experts.0.up_proj"], "moe-router"),
])
def test_other_families(names: list[str], rule: str) -> None:
    entries = explain_ignore(names)
    assert [e.rule for e in entries][1:] == [rule]
    pattern = entries[1].entry[3:]
    assert any(re.match(pattern, n) for n in names)


def test_nemotron_attention_mixers_are_not_ignored() -> None:
    pattern = next(r.pattern for r in IGNORE_RULES if r.id == "mamba-mixer")
    assert not re.match(pattern, "backbone.layers.1.mixer.q_proj")
    assert not re.match(pattern, "backbone.layers.2.mixer.up_proj")


def test_rules_that_match_nothing_are_left_out() -> None:
    assert build_ignore(["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "lm_head"]) == ["lm_head"]


def test_check_ignore_flags_foreign_names_and_split_fused_layers() -> None:
    # vllm#40252: an ignore list written for split Qwen3.5 names on a checkpoint that stores fused ones
    names = ["model.layers.0.linear_attn.in_proj_qkvz", "model.layers.0.linear_attn.in_proj_ba", "lm_head"]
    problems = check_ignore(["lm_head", "model.layers.0.linear_attn.in_proj_qkv"], names)
    assert len(problems) == 1 and "matches no module" in problems[0]
    # DeepSeek: q_a_proj and kv_a_proj_with_mqa become vLLM's fused_qkv_a_proj; one precision for both
    mla = ["model.layers.0.self_attn.q_a_proj", "model.layers.0.self_attn.kv_a_proj_with_mqa"]
    problems = check_ignore([r"re:.*q_a_proj$"], mla)
    assert len(problems) == 1 and "fused_qkv_a_proj" in problems[0]
    assert check_ignore([r"re:.*self_attn\..*"], mla) == []


def test_fixture_shapes_mirror_the_published_parameter_counts() -> None:
    # a cheap guard that the fixtures are the real models (billions of parameters, as published)
    expected = {"llama3": 8.03, "qwen3": 8.19, "qwen3-moe": 30.5, "qwen3-next": 81.3, "gemma3": 4.3,
                "llama4": 108.6, "deepseek-v3": 684.5}
    for arch, billions in expected.items():
        _, tensors = plan_fixtures.ARCHITECTURES[arch]()
        total = sum(_numel(shape) for _, shape in tensors.values())
        assert total / 1e9 == pytest.approx(billions, rel=0.02), arch


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_qwen35_split_names_are_covered_consistently() -> None:
    # Qwen3.5 stores the Gated-DeltaNet projections split; vLLM fuses them (in_proj_qkvz, in_proj_ba)
    p = "model.language_model.layers.0"
    names = [f"{p}.linear_attn.{n}" for n in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")]
    names += [f"{p}.mlp.gate", f"{p}.mlp.shared_expert_gate", f"{p}.mlp.experts.0.up_proj",
              "model.visual.blocks.0.attn.qkv", "model.visual.merger.linear_fc1", "lm_head", "mtp.fc"]
    ignore = build_ignore(names)
    assert ignore == ["lm_head", r"re:.*\.mlp\.gate$", r"re:.*\.shared_expert_gate$", r"re:.*\.linear_attn\..*",
                      VISION, r"re:^(model\.)?mtp\..*"]
    assert check_ignore(ignore, names) == []


def test_router_rules_cite_vllm_and_name_their_families() -> None:
    routers = [r for r in IGNORE_RULES if r.id.startswith(("moe-router", "shared-expert"))]
    assert len(routers) == 6
    for r in routers:
        assert r.vllm.startswith("vllm/model_executor/models/"), r.id
        assert any(k in r.vllm for k in ("quant_config=None", "torch.nn.Linear", "GateLinear")), r.id
        assert r.families, r.id


@pytest.mark.produce
@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "deepseek_v3", "olmoe",
                                        "jamba", "phimoe", "gpt_oss", "llama4_text", "ernie4_5_moe", "minimax",
                                        "granitemoe", "granitemoeshared", "glm4_moe", "nemotron_h"])
def test_transformers_moe_routers_are_ignored(model_type: str) -> None:
    """Tiny real transformers models (meta device): every 2-D router/gate weight is covered by build_ignore.

    transformers 5 renames some on-disk names in memory (Mixtral's block_sparse_moe.gate is mlp.gate, PhiMoE's
    is mlp.router, Granite's router.layer is router); the table covers both namings.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    kw = dict(hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
              vocab_size=64)
    if model_type == "deepseek_v3":
        kw.update(n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=0, n_group=1, topk_group=1,
                  q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    cfg = transformers.AutoConfig.for_model(model_type, **kw)
    for key in ("num_local_experts", "num_experts", "moe_num_experts", "n_routed_experts"):
        if isinstance(getattr(cfg, key, None), int) and getattr(cfg, key) > 4:
            setattr(cfg, key, 4)
    for key in ("moe_intermediate_size", "shared_expert_intermediate_size", "moe_shared_expert_intermediate_size"):
        if isinstance(getattr(cfg, key, None), int) and getattr(cfg, key) > 16:
            setattr(cfg, key, 16)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    names = checkpoint_module_names(shapes)
    routers = [n for n in names if re.search(r"\.(gate|router|router\.layer|gate\.wg|shared_expert_gate)$", n)]
    assert routers, sorted(names)[:20]
    ignore = build_ignore(names)
    regexes = [re.compile(e[3:]) for e in ignore if e.startswith("re:")]
    assert all(any(rx.match(n) for rx in regexes) for n in routers), (routers, ignore)
