"""Rules 9-11: compute capability of the target, Marlin eligibility, group sizes per tensor-parallel shard."""

from __future__ import annotations

import pytest
import synthetic_checkpoints as S
from checkpoint_mutations import edit_quant_config, rewrite_header

from quantkit.errors import UnknownNameError
from quantkit.validation import validate


def only(report, rule):
    return [f for f in report.findings if f.rule == rule]


# -------------------------------------------------------------------------------------- 9 hardware-capability

@pytest.mark.produce
def test_nvfp4_w4a4_on_hopper_falls_back_and_says_which_kernel(real):
    [f] = validate(real("lc-nvfp4"), hardware="h100").by_rule("hardware-capability")
    assert f.severity == "warning" and "Marlin NVFP4" in f.message and "100" in f.message


@pytest.mark.produce
def test_nvfp4_w4a4_on_blackwell_is_native(real):
    assert not validate(real("lc-nvfp4"), hardware="b200").by_rule("hardware-capability")


@pytest.mark.produce
def test_fp8_w8a8_below_sm89_falls_back_to_marlin(real):
    [f] = validate(real("lc-fp8-dynamic"), hardware="a100").by_rule("hardware-capability")
    assert f.severity == "warning" and "89" in f.message and "W8A16" in f.message


@pytest.mark.produce
def test_modelopt_fp8_below_the_methods_minimum_is_an_error(real):
    found = validate(real("mo-fp8"), hardware="t4").by_rule("hardware-capability")
    errors = [f for f in found if f.severity == "error"]
    assert errors and "needs compute capability 80" in errors[0].message and "t4 has 75" in errors[0].message


@pytest.mark.produce
def test_scheme_the_cpu_cannot_run(real, monkeypatch):
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "0")
    found = validate(real("lc-w4a16-g64"), hardware="cpu").by_rule("hardware-capability")
    assert found and found[0].severity == "error" and "AVX-512" in found[0].message


@pytest.mark.produce
def test_kv_scheme_on_a_cpu_without_avx512(real, monkeypatch):
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "0")
    msgs = [f.message for f in validate(real("lc-fp8-kv"), hardware="cpu").errors]
    assert any("KV-cache scheme" in m for m in msgs)
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    assert validate(real("lc-fp8-kv"), hardware="cpu").ok


def test_unknown_hardware_lists_the_valid_names(tmp_path):
    ckpt = S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"])
    with pytest.raises(UnknownNameError) as exc:
        validate(ckpt, hardware="h1000")
    assert "h100" in str(exc.value) and "b200" in str(exc.value)


def test_no_hardware_no_capability_findings(tmp_path):
    ckpt = S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-nvfp4", ["lm_head", r"re:.*\.mlp\.gate$"])
    assert not validate(ckpt).by_rule("hardware-capability")


# ------------------------------------------------------------------------------------------- 10 marlin-eligible

def _w4a16(tmp_path, group=128, arch=None):
    a = arch or S.qwen3_moe()
    ckpt = S.ct_checkpoint(tmp_path / f"g{group}", a, "ct-w4a16-g128", ["lm_head", r"re:.*\.mlp\.gate$"])
    if group != 128:
        edit_quant_config(ckpt, lambda q: q["config_groups"]["group_0"]["weights"].update(group_size=group))

        def regroup(h):
            for name, spec in h.items():
                if name.endswith(".weight_scale"):
                    rows = spec["shape"][0]
                    packed = h[name.replace("weight_scale", "weight_packed")]["shape"][1] * 8
                    spec["shape"] = [rows, -(-packed // group)]
        rewrite_header(ckpt, regroup)
    return ckpt


def test_w4a16_g128_on_aligned_shapes_is_marlin_eligible(tmp_path):
    report = validate(_w4a16(tmp_path), hardware="a100")
    assert report.ok and not report.by_rule("marlin-eligible")


def test_group_size_marlin_does_not_support(tmp_path):
    report = validate(_w4a16(tmp_path, group=256), hardware="a100")
    [f] = report.by_rule("marlin-eligible")
    assert f.severity == "warning" and "group size 256" in f.message and "Exllama" in f.message
    assert not report.by_rule("scale-tensors")


@pytest.mark.produce
def test_576_wide_layers_are_padded_for_marlin(real):
    """The embedded model's hidden size 576 is not a multiple of 128 (real llm-compressor W4A16 g64)."""
    [f] = validate(real("lc-w4a16-g64"), hardware="h100").by_rule("marlin-eligible")
    assert f.severity == "warning" and "in 576" in f.message and "Machete" in f.message


@pytest.mark.produce
def test_marlin_rule_skips_cpu_targets(real, monkeypatch):
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    assert not validate(real("lc-w4a16-g64"), hardware="cpu").by_rule("marlin-eligible")


def test_tensor_parallel_split_breaks_the_group(tmp_path):
    report = validate(_w4a16(tmp_path), hardware="h100", tensor_parallel_size=8)
    # down_proj in_features 768 / 8 = 96: group 128 straddles shards
    msgs = [f.message for f in report.by_rule("marlin-eligible")]
    assert any("does not divide" in m and "96" in m for m in msgs)


# ---------------------------------------------------------------------------------------- 11 group-size-divides

@pytest.mark.produce
def test_group_64_does_not_divide_o_proj_shards_at_tp2(real):
    """Real W4A16 g64 output: o_proj in_features 576 / 2 = 288, not a multiple of 64."""
    report = validate(real("lc-w4a16-g64"), tensor_parallel_size=2)
    found = report.by_rule("group-size-divides")
    assert [f.module for f in found] == ["model.layers.*.self_attn.o_proj"]
    assert "288" in found[0].message and found[0].severity == "error"
    assert validate(real("lc-w4a16-g64")).ok  # one GPU: fine


@pytest.mark.produce
def test_group_that_does_not_divide_in_features(clone):
    def to_g128(q):
        q["config_groups"]["group_0"]["weights"]["group_size"] = 128

    ckpt = edit_quant_config(clone("lc-w4a16-g64"), to_g128)
    found = validate(ckpt).by_rule("group-size-divides")
    assert found and "group size 128 does not divide in_features 576" in found[0].message


def test_in_features_that_cannot_be_split(tmp_path):
    a = S.qwen3_moe()
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-nvfp4", ["lm_head", r"re:.*\.mlp\.gate$"]),
                      tensor_parallel_size=3)
    assert any("cannot be split" in f.message for f in report.by_rule("group-size-divides"))


@pytest.mark.produce
def test_nvfp4_group_16_divides_576(real):
    assert not validate(real("mo-nvfp4"), tensor_parallel_size=2).by_rule("group-size-divides")


@pytest.mark.parametrize("method,extra", [("gptq", {"sym": True, "desc_act": False}),
                                          ("awq", {"zero_point": True, "version": "gemm"})])
def test_autogptq_and_autoawq_layouts(tmp_path, method, extra):
    cfg, t = S.qwen3_moe(layers=1, experts=2)
    keep = S.matcher(["lm_head", r"re:.*\.mlp\.gate$"])
    cfg = {**cfg, "quantization_config": {"quant_method": method, "bits": 4, "group_size": 128,
                                          "modules_to_not_convert": ["mlp.gate"], **extra}}
    ckpt = S.write_checkpoint(tmp_path / method, cfg, S.quantize(t, keep, method))
    report = validate(ckpt, hardware="a100")
    assert report.ok, [str(f) for f in report.errors]
    assert not report.by_rule("marlin-eligible") and not report.by_rule("scale-tensors")


def test_awq_skip_list_entries_are_substrings(tmp_path):
    """AutoAWQ's modules_to_not_convert matches substrings: "gate" also skips every expert's gate_proj."""
    cfg, t = S.qwen3_moe(layers=1, experts=2)
    cfg = {**cfg, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
                                          "zero_point": True, "modules_to_not_convert": ["gate"]}}
    keep = S.matcher(["lm_head", r"re:.*\.mlp\.gate$"])
    report = validate(S.write_checkpoint(tmp_path / "a", cfg, S.quantize(t, keep, "awq")))
    [f] = report.by_rule("config-matches-disk")
    assert f.module == "model.layers.*.mlp.experts.*.gate_proj" and "'gate'" in f.message


def test_asymmetric_gptq_is_not_marlin_eligible(tmp_path):
    cfg, t = S.qwen3_moe(layers=1, experts=2)
    cfg = {**cfg, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": False,
                                          "modules_to_not_convert": ["mlp.gate"]}}
    keep = S.matcher(["lm_head", r"re:.*\.mlp\.gate$"])
    report = validate(S.write_checkpoint(tmp_path / "g", cfg, S.quantize(t, keep, "gptq")), hardware="a100")
    [f] = report.by_rule("marlin-eligible")
    assert "asymmetric GPTQ" in f.message
