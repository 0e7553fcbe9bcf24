"""Rules 5, 6, 7, 12 and 18: patterns, ignore names, fused shards, layers kept 16-bit, config vs disk.

Dense cases mutate real llm-compressor / ModelOpt outputs; MoE and hybrid cases use header-only
checkpoints that mirror Qwen3-MoE, Qwen3-Next and a Qwen3.5-style hybrid (``synthetic_checkpoints.py``).
"""

from __future__ import annotations

import pytest
import synthetic_checkpoints as S
from checkpoint_mutations import edit_json, edit_quant_config

from quantkit.planning.ignore import build_ignore, checkpoint_module_names
from quantkit.validation import validate


def errors(report):
    return [f.rule for f in report.errors]


def quant_ignore(arch):
    cfg, t = arch
    return build_ignore(checkpoint_module_names({k: v[1] for k, v in t.items()}), config=cfg)


# ------------------------------------------------------------------------------------------ correct synthetic

@pytest.mark.parametrize("arch", ["qwen3_moe", "qwen3_next", "qwen35_hybrid", "deepseek_v3"])
@pytest.mark.parametrize("scheme", ["ct-fp8-dynamic", "ct-nvfp4"])
def test_synthetic_architectures_quantized_with_quantkits_ignore_list_pass(tmp_path, arch, scheme):
    a = getattr(S, arch)()
    report = validate(S.ct_checkpoint(tmp_path / "c", a, scheme, quant_ignore(a)))
    assert report.ok, [str(f) for f in report.errors]
    assert not report.by_rule("validator-internal")


# ---------------------------------------------------------------------------------------------- 5 pattern-valid

@pytest.mark.produce
def test_pattern_that_does_not_compile(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q["ignore"].append("re:model.layers.(0"))
    [f] = validate(ckpt).by_rule("pattern-valid")
    assert f.severity == "error" and "not a valid regular expression" in f.message


def test_pattern_with_catastrophic_backtracking_is_reported_not_run(tmp_path):
    """`(.*)*z` takes hours with re.match on a 40-character name; the validator must not run it."""
    import signal

    a = S.qwen3_moe(layers=1, experts=2)
    ign = ["lm_head", r"re:.*\.mlp\.gate$", r"re:(.*)*z", r"re:(\w+\.?)+zz"]
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"], config_ignore=ign)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("validate() hung on a pathological pattern"))
    signal.alarm(20)
    try:
        report = validate(ckpt)
    finally:
        signal.alarm(0)
    found = report.by_rule("pattern-valid")
    assert len(found) == 2 and all("backtracks exponentially" in f.message for f in found)


def test_router_pattern_without_leading_wildcard_matches_nothing(tmp_path):
    a = S.qwen3_moe()
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ["lm_head", "re:mlp.gate$"])
    report = validate(ckpt)
    [f] = report.by_rule("pattern-valid")
    assert f.severity == "error" and "re:.*mlp.gate$" in f.fix
    assert "keep-16bit" in errors(report)  # the router got quantized: what the pattern was meant to prevent


def test_pattern_matching_nothing_is_a_warning(tmp_path):
    a = S.qwen3_moe()
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", quant_ignore(a) + [r"re:.*\.vision_tower\..*"])
    report = validate(ckpt)
    [f] = report.by_rule("pattern-valid")
    assert f.severity == "warning" and report.ok


def test_pattern_anchored_at_the_start_that_misses_some_layers_warns(tmp_path):
    a = S.qwen3_moe()
    ign = ["lm_head", r"re:.*\.mlp\.gate$", r"re:model\.layers\.0\.mlp\.experts\.0\..*", r"re:experts\.1\..*"]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"],
                                      config_ignore=ign))
    msgs = [f.message for f in report.by_rule("pattern-valid")]
    assert any("'re:experts" in m for m in msgs)  # anchored, so matches nothing; '.*experts\.1' would
    assert not any("'re:model" in m for m in msgs)  # a deliberate full-path pattern is fine


# ------------------------------------------------------------------------------------------ 6 ignore-names-exist

def test_split_linear_attn_names_against_fused_on_disk_modules(tmp_path):
    """vllm#40252: an ignore list written with Qwen3.5's split names, applied to Qwen3-Next's fused modules."""
    a = S.qwen3_next()
    ign = ["lm_head", r"re:.*\.mlp\.gate$", r"re:.*\.shared_expert_gate$"]
    split = [f"model.layers.{i}.linear_attn.{leaf}" for i in range(3) for leaf in ("in_proj_a", "in_proj_b")]
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign, config_ignore=ign + split)
    report = validate(ckpt)
    found = report.by_rule("ignore-names-exist")
    # the entries do nothing (a warning); the harm, the fused gate projection stored quantized, is keep-16bit's error
    assert found and all(f.severity == "warning" for f in found)
    assert "in_proj_ba" in found[0].message and "vllm#40252" in found[0].message
    assert any(f.severity == "error" and (f.module or "").endswith("in_proj_ba") for f in report.by_rule("keep-16bit"))


def test_parent_module_name_ignores_nothing_in_compressed_tensors(tmp_path):
    a = S.qwen35_hybrid()
    ign = quant_ignore(a)
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign, config_ignore=ign + ["model.visual"])
    [f] = validate(ckpt).by_rule("ignore-names-exist")
    assert "parent module" in f.message and r"re:model\.visual\..*" in f.fix


def test_ignore_entry_for_a_module_that_does_not_exist(tmp_path):
    a = S.qwen3_moe()
    ign = quant_ignore(a)
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign, config_ignore=ign + ["model.layers.7.mlp.gate"])
    [f] = validate(ckpt).by_rule("ignore-names-exist")
    assert f.module == "model.layers.7.mlp.gate"


def test_vllm_names_of_multimodal_modules_count_as_existing(tmp_path):
    a = S.qwen35_hybrid()
    ign = quant_ignore(a)
    extra = ["language_model.model.layers.3.mlp.down_proj", "model.language_model.layers.3.mlp.down_proj"]
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign + extra[1:], config_ignore=ign + extra)
    report = validate(ckpt)
    assert not report.by_rule("ignore-names-exist")
    assert report.ok, [str(f) for f in report.errors]


@pytest.mark.produce
def test_tied_lm_head_and_embeddings_count_as_existing(real):
    assert not validate(real("lc-fp8-dynamic")).by_rule("ignore-names-exist")  # ignore: ["lm_head"], tied
    assert not validate(real("mo-fp8")).by_rule("ignore-names-exist")  # exclude: lm_head, model.embed_tokens


@pytest.mark.produce
def test_modelopt_exclude_entry_that_matches_nothing(clone):
    ckpt = clone("mo-fp8")
    edit_quant_config(ckpt, lambda q: q["ignore"].append("model.layers.*.mlp.router*"))
    edit_json(ckpt, "hf_quant_config.json",
              lambda s: s["quantization"]["exclude_modules"].append("model.layers.*.mlp.router*"))
    [f] = validate(ckpt).by_rule("ignore-names-exist")
    assert "router" in f.message


@pytest.mark.produce
def test_modelopt_empty_exclude_entry_excludes_everything(clone):
    ckpt = clone("mo-fp8")
    edit_quant_config(ckpt, lambda q: q["ignore"].append(""))
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"]["exclude_modules"].append(""))
    report = validate(ckpt)
    assert any("empty entry" in f.message for f in report.by_rule("ignore-names-exist"))
    assert report.by_rule("config-matches-disk")


@pytest.mark.produce
def test_modelopt_wildcards_that_match_pass(clone):
    ckpt = clone("mo-fp8")
    edit_quant_config(ckpt, lambda q: q["ignore"].append("model.embed*"))
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"]["exclude_modules"].append("model.embed*"))
    report = validate(ckpt)
    assert not report.by_rule("ignore-names-exist") and report.ok


# -------------------------------------------------------------------------------------- 7 fused-shards-consistent

@pytest.mark.produce
def test_ignoring_one_shard_of_qkv(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q["ignore"].append("model.layers.2.self_attn.k_proj"))
    report = validate(ckpt)
    [f] = report.by_rule("fused-shards-consistent")
    assert f.module == "model.layers.2.self_attn.qkv_proj" and "k_proj" in f.message
    assert "Found different quantization schemes" in f.message


@pytest.mark.produce
def test_shards_of_one_fused_layer_in_different_groups(clone):
    def split(q):
        g = q["config_groups"]["group_0"]
        other = {**g, "targets": [r"re:.*\.up_proj$"],
                 "weights": {**g["weights"], "strategy": "tensor"}}
        q["config_groups"]["group_1"] = other
    report = validate(edit_quant_config(clone("lc-fp8-dynamic"), split))
    found = report.by_rule("fused-shards-consistent")
    assert found and "different config groups" in found[0].message
    assert found[0].module == "model.layers.*.mlp.gate_up_proj"


def test_split_qwen35_ba_shards_must_be_ignored_together(tmp_path):
    a = S.qwen35_hybrid()
    ign = ["lm_head", r"re:.*\.linear_attn\.(in_proj_b|conv1d)$", r"re:^(model\.)?(visual)\..*", r"re:^mtp\..*"]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign))
    found = report.by_rule("fused-shards-consistent")
    assert found and "in_proj_ba" in (found[0].module or "")


def test_experts_of_one_layer_must_share_a_scheme(tmp_path):
    a = S.qwen3_moe()
    ign = quant_ignore(a) + ["model.layers.1.mlp.experts.3.down_proj"]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign))
    found = report.by_rule("fused-shards-consistent")
    assert {f.module for f in found} == {"model.layers.1.mlp.experts"}
    assert any("one scheme" in f.message for f in found) and any("formats" in f.message for f in found)


@pytest.mark.produce
def test_real_fused_layers_are_consistent(real):
    for name in ("lc-fp8-dynamic", "lc-nvfp4", "mo-nvfp4"):
        assert not validate(real(name)).by_rule("fused-shards-consistent")


# --------------------------------------------------------------------------------------------------- 12 keep-16bit

def test_quantized_moe_router(tmp_path):
    report = validate(S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-fp8-dynamic", ["lm_head"]))
    [f] = report.by_rule("keep-16bit")
    assert f.severity == "error" and f.module == "model.layers.*.mlp.gate" and "llm-compressor#2163" in f.message


def test_quantized_vision_tower_and_mtp(tmp_path):
    a = S.qwen35_hybrid()
    ign = ["lm_head", r"re:.*\.linear_attn\..*"]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign))
    modules = " ".join(f.module or "" for f in report.by_rule("keep-16bit"))
    assert "model.visual" in modules and "mtp." in modules
    assert "llm-compressor#2714" in " ".join(f.message for f in report.by_rule("keep-16bit"))


def test_quantized_linear_attn_gates_are_errors_and_other_projections_warnings(tmp_path):
    a = S.qwen3_next()
    ign = ["lm_head", r"re:.*\.mlp\.gate$", r"re:.*\.shared_expert_gate$"]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign))
    by_sev = {(f.severity, (f.module or "").rsplit(".", 1)[-1]) for f in report.by_rule("keep-16bit")}
    assert ("error", "in_proj_ba") in by_sev
    assert ("warning", "in_proj_qkvz") in by_sev and ("warning", "out_proj") in by_sev


@pytest.mark.produce
def test_quantized_lm_head(clone):
    from checkpoint_mutations import rewrite_header

    def quantize_head(h):
        h["lm_head.weight"] = {"dtype": "F8_E4M3", "shape": [49152, 576], "data_offsets": [0, 0]}
        h["lm_head.weight_scale"] = {"dtype": "BF16", "shape": [49152, 1], "data_offsets": [0, 0]}

    ckpt = rewrite_header(clone("lc-fp8-kv"), quantize_head)
    edit_json(ckpt, "config.json", lambda c: c.update(tie_word_embeddings=False))
    report = validate(ckpt)
    [f] = report.by_rule("keep-16bit")
    assert f.module == "lm_head" and f.severity == "error"


# ---------------------------------------------------------------------------------------- 18 config-matches-disk

@pytest.mark.produce
def test_config_ignores_a_layer_stored_quantized(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q["ignore"].append("model.layers.3.mlp.down_proj"))
    [f] = validate(ckpt).by_rule("config-matches-disk")
    assert f.module == "model.layers.3.mlp.down_proj" and "stored quantized" in f.message


def test_config_quantizes_a_router_stored_16bit(tmp_path):
    """vLLM builds Qwen3-MoE's router with quant_config=None (qwen3_moe.py Qwen3MoeSparseMoeBlock): it loads."""
    a = S.qwen3_moe()
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", quant_ignore(a), config_ignore=["lm_head"])
    report = validate(ckpt)
    [f] = report.by_rule("config-matches-disk")
    assert f.module == "model.layers.*.mlp.gate" and "stored 16-bit" in f.message
    assert f.severity == "warning" and "unquantized" in f.message and report.ok


def test_shared_expert_gate_is_never_quantized_by_vllm(tmp_path):
    a = S.qwen3_next()
    ign = quant_ignore(a)
    cfg_ign = [e for e in ign if "shared_expert_gate" not in e]
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign, config_ignore=cfg_ign))
    found = report.by_rule("config-matches-disk")
    assert report.ok and [f.severity for f in found] == ["warning"]
    assert found[0].module == "model.layers.*.mlp.shared_expert_gate"


@pytest.mark.produce
def test_real_outputs_agree_with_their_configs(real):
    for name in ("lc-fp8-dynamic", "lc-w4a16-g64", "mo-fp8", "mo-nvfp4"):
        assert not validate(real(name)).by_rule("config-matches-disk")
