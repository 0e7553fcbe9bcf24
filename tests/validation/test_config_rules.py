"""Rules 1-4, 8 and 17: method, ModelOpt algorithm, NVFP4 sidecar, config sources, schemes, tied embeddings."""

from __future__ import annotations

import json

import pytest
from checkpoint_mutations import edit_json, edit_quant_config

from quantkit.errors import UnknownNameError
from quantkit.validation import validate

pytestmark = pytest.mark.produce


def rules(report, severity="error"):
    return [f.rule for f in report.findings if f.severity == severity]


# ---------------------------------------------------------------------------------------- 1 quant-method-known

def test_unknown_quant_method_is_an_error_listing_the_known_ones(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(quant_method="compressed-tensorz"))
    report = validate(ckpt)
    [f] = report.by_rule("quant-method-known")
    assert f.severity == "error"
    assert "'compressed-tensorz'" in f.message and "compressed-tensors" in f.message and "modelopt_fp4" in f.message


def test_deprecated_method_is_a_warning(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(quant_method="fbgemm_fp8"))
    [f] = validate(ckpt).by_rule("quant-method-known")
    assert f.severity == "warning" and "deprecated" in f.message


def test_missing_quant_method_is_an_error(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.pop("quant_method"))
    [f] = validate(ckpt).by_rule("quant-method-known")
    assert f.severity == "error" and "no quant_method" in f.message


def test_underscore_spelling_is_normalised_like_vllm(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(quant_method="compressed_tensors"))
    report = validate(ckpt)
    assert report.ok and report.vllm_method == "compressed-tensors"


# ------------------------------------------------------------------------------------ 2 modelopt-algo-loadable

def _set_algo(ckpt, algo):
    edit_quant_config(ckpt, lambda q: q.update(quant_algo=algo))
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"].update(quant_algo=algo))
    return ckpt


@pytest.mark.parametrize("algo,hint", [("W4A16_AWQ", "INT4_AWQ_CFG"), ("W4A8_AWQ", ""), ("NVFP4_AWQ", ""),
                                       ("W8A8_SQ_PER_CHANNEL", "INT8_SMOOTHQUANT_CFG")])
def test_modelopt_exports_vllm_rejects(clone, algo, hint):
    report = validate(_set_algo(clone("mo-fp8"), algo))
    found = report.by_rule("modelopt-algo-loadable")
    assert found and found[0].severity == "error"
    assert algo in found[0].message and hint in found[0].message


def test_legacy_sidecar_only_checkpoint_with_an_algo_the_legacy_reader_refuses(clone):
    ckpt = clone("mo-nvfp4")
    edit_json(ckpt, "config.json", lambda c: c.pop("quantization_config"))
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"].update(quant_algo="W4A16_NVFP4"))
    msgs = [f.message for f in validate(ckpt).by_rule("modelopt-algo-loadable")]
    assert any("Unknown ModelOpt quant algo" in m for m in msgs)


def test_nvfp4_config_class_refuses_an_fp8_algo(clone):
    ckpt = clone("mo-fp8")
    edit_quant_config(ckpt, lambda q: q.update(quant_method="modelopt_fp4", quant_algo="FP8_PER_CHANNEL_PER_TOKEN"))
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"].update(quant_algo="FP8_PER_CHANNEL_PER_TOKEN"))
    [f] = validate(ckpt).by_rule("modelopt-algo-loadable")
    assert "belongs to modelopt" in f.message


def test_loadable_modelopt_algorithms_pass(real):
    for name in ("mo-fp8", "mo-nvfp4", "mo-fp8-kv"):
        assert not validate(real(name)).by_rule("modelopt-algo-loadable")


# -------------------------------------------------------------------------------------- 3 nvfp4-sidecar-fields

@pytest.mark.parametrize("field", ["group_size", "kv_cache_quant_algo", "exclude_modules"])
def test_nvfp4_sidecar_missing_a_field_vllm_requires(clone, field):
    ckpt = clone("mo-nvfp4")
    edit_json(ckpt, "config.json", lambda c: c.pop("quantization_config"))  # vLLM now reads the sidecar
    edit_json(ckpt, "hf_quant_config.json", lambda s: s["quantization"].pop(field))
    [f] = validate(ckpt).by_rule("nvfp4-sidecar-fields")
    assert f.severity == "error" and field in f.message


def test_nvfp4_sidecar_gap_is_a_warning_when_vllm_reads_config_json(clone):
    ckpt = edit_json(clone("mo-nvfp4"), "hf_quant_config.json", lambda s: s["quantization"].pop("group_size"))
    [f] = validate(ckpt).by_rule("nvfp4-sidecar-fields")
    assert f.severity == "warning"


def test_complete_nvfp4_sidecar_passes(clone):
    ckpt = edit_json(clone("mo-nvfp4"), "config.json", lambda c: c.pop("quantization_config"))
    report = validate(ckpt)
    assert not report.by_rule("nvfp4-sidecar-fields")
    assert report.ok, [str(f) for f in report.errors]


# ---------------------------------------------------------------------------------------- 4 quant-config-source

def test_no_config_with_quantized_tensors(clone):
    ckpt = edit_json(clone("lc-fp8-dynamic"), "config.json", lambda c: c.pop("quantization_config"))
    [f] = validate(ckpt).by_rule("quant-config-source")
    assert f.severity == "error" and "stored quantized" in f.message


def test_plain_16bit_checkpoint_is_not_a_quantized_one():
    from quantkit.models.embedded import embedded_model_path

    report = validate(embedded_model_path())
    assert rules(report) == ["quant-config-source"]


def test_two_sources_that_disagree(clone):
    ckpt = edit_json(clone("mo-fp8"), "hf_quant_config.json",
                     lambda s: s["quantization"].update(exclude_modules=["lm_head"]))
    [f] = validate(ckpt).by_rule("quant-config-source")
    assert f.severity == "error" and "disagree" in f.message and "exclude" in f.message


def test_compressed_tensors_config_with_a_modelopt_sidecar(clone, real):
    ckpt = clone("lc-fp8-dynamic")
    (ckpt / "hf_quant_config.json").write_text((real("mo-fp8") / "hf_quant_config.json").read_text())
    [f] = validate(ckpt).by_rule("quant-config-source")
    assert "ModelOpt" in f.message


def test_non_object_quantization_config(clone):
    ckpt = edit_json(clone("lc-fp8-dynamic"), "config.json", lambda c: c.update(quantization_config="fp8"))
    report = validate(ckpt)
    assert any("not an object" in f.message for f in report.by_rule("quant-config-source"))
    assert not report.by_rule("validator-internal")


def test_modelopt_writes_two_sources_that_agree(real):
    assert not validate(real("mo-fp8")).by_rule("quant-config-source")


# ------------------------------------------------------------------------------------------- 8 scheme-resolves

def _group(ckpt, fn):
    return edit_quant_config(ckpt, lambda q: fn(q["config_groups"]["group_0"]))


def test_static_token_weights_do_not_validate(clone):
    ckpt = _group(clone("lc-fp8-dynamic"), lambda g: g["weights"].update(strategy="token"))
    [f] = validate(ckpt).by_rule("scheme-resolves")
    assert "token" in f.message


def test_nvfp4_weights_with_fp8_activations(clone):
    ckpt = _group(clone("lc-nvfp4"), lambda g: g.update(input_activations={
        "num_bits": 8, "type": "float", "strategy": "token", "dynamic": True, "symmetric": True}))
    [f] = validate(ckpt).by_rule("scheme-resolves")
    assert "NVFP4 input activations" in f.message


def test_group_activation_ordering_is_refused(clone):
    ckpt = _group(clone("lc-w4a16-g64"), lambda g: g["weights"].update(actorder="group"))
    [f] = validate(ckpt).by_rule("scheme-resolves")
    assert "actorder" in f.message


def test_no_scheme_for_int4_weights_with_fp8_format(clone):
    ckpt = _group(clone("lc-w4a16-g64"), lambda g: g.update(format="float-quantized"))
    edit_quant_config(ckpt, lambda q: q.update(format="float-quantized"))
    [f] = validate(ckpt).by_rule("scheme-resolves")
    assert "int" in f.message


def test_unsupported_kv_cache_scheme(clone):
    ckpt = edit_quant_config(clone("lc-fp8-kv"), lambda q: q["kv_cache_scheme"].update(num_bits=4, symmetric=False))
    [f] = validate(ckpt).by_rule("scheme-resolves")
    assert "num_bits=8" in f.message and "symmetric" in f.message


@pytest.mark.parametrize("name", ["lc-fp8-dynamic", "lc-w4a16-g64", "lc-nvfp4a16", "lc-nvfp4", "lc-fp8-kv"])
def test_real_groups_resolve(real, name):
    assert not validate(real(name)).by_rule("scheme-resolves")


# --------------------------------------------------------------------------------- 17 tied-embeddings-modelopt

def test_tied_modelopt_checkpoint_fails_on_vllm_024(real):
    report = validate(real("mo-fp8"), vllm_version="0.24.0")
    [f] = report.by_rule("tied-embeddings-modelopt")
    assert f.severity == "error" and "NotImplementedError" in f.message and "0.24.0" in f.message
    assert "tie_word_embeddings: false" in f.fix and "lm_head.weight" in f.fix


def test_tied_modelopt_checkpoint_is_fine_after_the_fix(real):
    assert not validate(real("mo-fp8"), vllm_version="0.25.0").by_rule("tied-embeddings-modelopt")


def test_untied_modelopt_checkpoint_passes_on_024(clone):
    ckpt = edit_json(clone("mo-fp8"), "config.json", lambda c: c.update(tie_word_embeddings=False))
    assert not validate(ckpt, vllm_version="0.24.0").by_rule("tied-embeddings-modelopt")


def test_tied_compressed_tensors_checkpoint_is_not_affected(real):
    assert not validate(real("lc-fp8-dynamic"), vllm_version="0.24.0").by_rule("tied-embeddings-modelopt")


def test_default_version_warns_about_older_vllm(real):
    report = validate(real("mo-fp8"))
    if report.vllm_version_source == "newest known":
        [f] = report.by_rule("tied-embeddings-modelopt")
        assert f.severity == "warning"


def test_bad_vllm_version_is_refused(real):
    with pytest.raises(UnknownNameError):
        validate(real("mo-fp8"), vllm_version="latest")


def test_report_json_shape(real):
    doc = validate(real("mo-int8-sq")).to_dict()
    assert set(doc) == {"ok", "quant_method", "findings"}
    assert doc["ok"] is False and doc["quant_method"] == "modelopt"
    assert set(doc["findings"][0]) == {"rule", "severity", "module", "message", "fix"}
    json.dumps(doc)


@pytest.mark.parametrize(("order", "severity"), [("group", "error"), ("dynamic", "error"), ("static", None),
                                                 ("weight", None)])
def test_runtime_activation_ordering_is_refused_by_current_vllm(tmp_path, order, severity):
    """vLLM 0.32 refuses compressed-tensors actorder group/dynamic (vllm#54809); static/weight need nothing at
    run time. A real W4A16 layout (Qwen3-MoE, routers 16-bit), only actorder changed."""
    import synthetic_checkpoints as S

    ckpt = S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-w4a16-g128", ["lm_head", r"re:.*\.mlp\.gate$"])
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"] = order
    (ckpt / "config.json").write_text(json.dumps(cfg))
    found = [f for f in validate(ckpt).by_rule("scheme-resolves") if "actorder" in f.message]
    if severity is None:
        assert not found
    else:
        assert [f.severity for f in found] == [severity] and "vllm#54809" in found[0].message
        assert "actorder='static'" in found[0].message
