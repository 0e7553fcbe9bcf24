"""Rule 20 `config-schema-known`: a config written by a newer compressed-tensors / ModelOpt than the target vLLM reads.

The checkpoints start from real producer outputs (llm-compressor 0.14 with compressed-tensors 0.19, ModelOpt
0.47). What compressed-tensors 0.19 writes, the serve environment's 0.17 reads (their QuantizationArgs have the
same fields), so the rejected cases are: the real 0.19 output read by vLLM 0.13.0's pinned compressed-tensors
0.12.2 (which predates `scale_dtype`/`zp_dtype`: llm-compressor#2057, #2234), and the real 0.19 output edited to
carry what compressed-tensors 0.20 writes and 0.17 does not know (`moe_sparsity_config`, the
`mxfp6-pack-quantized` format). The slow test runs vLLM's own parser in the serve environment on the same
configs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import checkpoint_mutations as mutate
import pytest

from quantkit.validation import validate
from quantkit.validation.ct_schema import (
    bundled_schema,
    reader_schema,
    serve_env_schema,
    serve_env_source_schema,
)
from quantkit.vllm_facts import COMPRESSED_TENSORS_SCHEMAS

RULE = "config-schema-known"

#: what compressed-tensors 0.20's ExpertSparsityConfig writes for a REAP-pruned MoE (its docstring's example)
MOE_SPARSITY_0_20 = {"method": "prune", "num_experts": [None, 129, 253, 128]}


def _skew(report):
    return [f for f in report.findings if f.rule == RULE]


def _errors(report):
    return [f for f in _skew(report) if f.severity == "error"]


def _mxfp6(q: dict) -> None:
    # compressed-tensors 0.20's MXFP6A16 preset, as its QuantizationArgs serialise it
    q["config_groups"]["group_0"] = {
        "targets": ["Linear"], "format": "mxfp6-pack-quantized", "input_activations": None,
        "output_activations": None,
        "weights": {"num_bits": 6, "type": "float", "symmetric": True, "group_size": 32, "strategy": "group",
                    "dynamic": False, "scale_dtype": "torch.uint8", "zp_dtype": "torch.uint8"}}
    q["format"] = "mxfp6-pack-quantized"


# ------------------------------------------------------------------------------------------- the table itself

def test_bundled_table_picks_the_pin_of_the_release_or_the_nearest_older_one():
    assert bundled_schema("0.32.0").version == "0.17.0"
    assert bundled_schema("0.13.0").version == "0.12.2"
    between = bundled_schema("0.20.1")
    assert between.version == "0.12.2" and "assumed like vLLM 0.13.0" in between.source
    assert bundled_schema("9.0.0").version == "0.17.0"
    assert "scale_dtype" not in COMPRESSED_TENSORS_SCHEMAS["0.12.2"].models["QuantizationArgs"].fields
    assert "scale_dtype" in COMPRESSED_TENSORS_SCHEMAS["0.17.0"].models["QuantizationArgs"].fields


def test_registry_off_uses_the_table(monkeypatch):
    monkeypatch.setenv("QUANTKIT_VLLM_REGISTRY", "off")
    assert reader_schema("0.32.0", "newest known").source.startswith("quantkit's table")


@pytest.mark.serve
def test_source_reading_equals_the_models_and_the_table_on_the_serve_environment(monkeypatch):
    """ast reading of the serve environment's compressed-tensors == what its imported pydantic models say (the
    probe) == quantkit's table for that version; and by default the validator uses the serve environment's."""
    from quantkit.serve.remote import serve_python

    try:
        py = serve_python()
    except Exception as exc:  # noqa: BLE001 - no serve environment: nothing to compare against
        pytest.skip(f"no serve environment: {exc}")
    from_source = serve_env_source_schema(py)
    from_models = serve_env_schema(py)
    assert from_source is not None and from_models is not None
    assert from_source.version == from_models.version and from_source.vllm_version == from_models.vllm_version
    assert from_source.formats == from_models.formats and dict(from_source.models) == dict(from_models.models)
    table = COMPRESSED_TENSORS_SCHEMAS[from_models.version]
    assert from_models.formats == table.formats and dict(from_models.models) == dict(table.models)
    # what vLLM's parse path depends on: args forbid unknown keys, the top level drops them
    assert from_models.models["QuantizationArgs"].extra == "forbid"
    assert from_models.models["QuantizationConfig"].extra == "ignore"
    monkeypatch.setenv("QUANTKIT_VLLM_REGISTRY", "source")
    assert "serve environment" in reader_schema(from_source.vllm_version, "newest known").source
    # --vllm-version naming another release: the table for that release, not the serve environment
    assert reader_schema("0.13.0", "option").version == "0.12.2"


# ------------------------------------------------------------------------------- real producer outputs, edited


@pytest.mark.produce
@pytest.mark.parametrize("name", ["lc-fp8-dynamic", "lc-w4a16-asym", "lc-nvfp4", "lc-fp8-kv", "mo-fp8-kv", "mo-nvfp4"])
def test_real_producer_output_is_read_by_the_target_vllm(real, name):
    """Both sides accept it: compressed-tensors 0.19 output against vLLM 0.32's pinned 0.17 (and ModelOpt 0.47)."""
    report = validate(real(name))
    assert _skew(report) == [], [f.message for f in _skew(report)]


@pytest.mark.produce
def test_real_019_output_is_rejected_by_vllm_013s_compressed_tensors(real):
    """The upstream report, for real: 0.19 writes scale_dtype/zp_dtype (null), 0.12.2's QuantizationArgs forbids
    them (checked against the compressed-tensors 0.12.2 wheel: `scale_dtype  Extra inputs are not permitted`)."""
    report = validate(real("lc-fp8-dynamic"), vllm_version="0.13.0")
    errors = _errors(report)
    assert {e.message.split("`")[1] for e in errors} == {"scale_dtype", "zp_dtype"}
    assert all("written by compressed-tensors 0.19.0" in e.message and "0.12.2" in e.message for e in errors)
    assert "vLLM 0.24.0 or newer" in errors[0].fix and "compressed-tensors 0.12.2" in errors[0].fix
    assert not report.ok


@pytest.mark.produce
def test_a_field_newer_compressed_tensors_writes_and_the_reader_drops_is_an_error(clone):
    ckpt = mutate.edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(
        moe_sparsity_config=MOE_SPARSITY_0_20, version="0.20.0"))
    errors = _errors(validate(ckpt))
    assert len(errors) == 1 and "`moe_sparsity_config`" in errors[0].message
    assert "written by compressed-tensors 0.20.0" in errors[0].message


@pytest.mark.produce
def test_a_format_the_reader_does_not_know_is_an_error(clone):
    ckpt = mutate.edit_quant_config(clone("lc-fp8-dynamic"), _mxfp6)
    errors = _errors(validate(ckpt))
    assert errors and all("mxfp6-pack-quantized" in e.message for e in errors)


@pytest.mark.produce
def test_unknown_args_field_and_enum_value_are_errors(clone):
    def edit(q: dict) -> None:
        q["config_groups"]["group_0"]["weights"]["rounding"] = "stochastic"
        q["config_groups"]["group_0"]["input_activations"]["strategy"] = "row"

    report = validate(mutate.edit_quant_config(clone("lc-fp8-dynamic"), edit))
    messages = [e.message for e in _errors(report)]
    assert any("`rounding`" in m and "Extra inputs are not permitted" in m for m in messages)
    assert any("strategy='row'" in m for m in messages)


@pytest.mark.produce
def test_keys_vllm_reads_by_key_and_ignores_are_warnings(clone):
    def edit(q: dict) -> None:
        q["producer_note"] = "informational"
        q["config_groups"]["group_0"]["comment"] = "x"

    found = _skew(validate(mutate.edit_quant_config(clone("lc-fp8-dynamic"), edit)))
    assert {f.severity for f in found} == {"warning"} and len(found) == 2


@pytest.mark.produce
def test_upper_case_enum_values_are_accepted_like_compressed_tensors_does(clone):
    ckpt = mutate.edit_quant_config(clone("lc-fp8-dynamic"),
                                    lambda q: q["config_groups"]["group_0"]["weights"].update(strategy="CHANNEL"))
    assert _skew(validate(ckpt)) == []


@pytest.mark.produce
def test_modelopt_kv_algorithm_vllm_does_not_map_is_a_warning(clone):
    ckpt = clone("mo-fp8-kv")
    mutate.edit_json(ckpt, "hf_quant_config.json", lambda d: d["quantization"].update(kv_cache_quant_algo="INT8"))
    mutate.edit_json(ckpt, "config.json", lambda c: c["quantization_config"]["kv_cache_scheme"].update(
        type="int"))
    found = _skew(validate(ckpt))
    assert len(found) == 1 and found[0].severity == "warning"
    assert "ModelOpt 0.47.0" in found[0].message and "16-bit KV cache" in found[0].message


# --------------------------------------------------------------------------- vLLM's own parser agrees (slow)

PARSE = r"""
import json, sys
from vllm.model_executor.layers.quantization.compressed_tensors.compressed_tensors import CompressedTensorsConfig
out = {}
for name, path in json.loads(sys.argv[1]).items():
    cfg = json.load(open(path))["quantization_config"]
    try:
        c = CompressedTensorsConfig.from_config(cfg)
        out[name] = {"ok": True}
        if name == "mxfp6":
            args = c.target_scheme_map["Linear"]
            try:
                c._get_scheme_from_parts(args["weights"], args["input_activations"], None, args["format"], "x")
            except Exception as e:
                out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    except Exception as e:
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.produce
def test_vllms_parser_in_the_serve_environment_agrees(clone, tmp_path: Path):
    from quantkit.serve.remote import serve_python

    try:
        py = serve_python()
    except Exception as exc:  # noqa: BLE001 - no serve environment: nothing to compare against
        pytest.skip(f"no serve environment: {exc}")
    cases = {
        "real": clone("lc-fp8-dynamic"),
        "unknown-field": mutate.edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q["config_groups"]["group_0"][
            "weights"].update(rounding="stochastic")),
        "mxfp6": mutate.edit_quant_config(clone("lc-fp8-dynamic"), _mxfp6),
        "moe-sparsity": mutate.edit_quant_config(clone("lc-fp8-dynamic"),
                                                 lambda q: q.update(moe_sparsity_config=MOE_SPARSITY_0_20)),
    }
    arg = json.dumps({k: str(v / "config.json") for k, v in cases.items()})
    proc = subprocess.run([str(py), "-c", PARSE, arg], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed["real"] == {"ok": True}
    assert not parsed["unknown-field"]["ok"] and "Extra inputs are not permitted" in parsed["unknown-field"]["error"]
    assert "No compressed-tensors compatible scheme was found" in parsed["mxfp6"].get("error", ""), parsed["mxfp6"]
    # vLLM accepts the pruned-MoE config and nothing in it reads moe_sparsity_config: the counts are dropped
    assert parsed["moe-sparsity"] == {"ok": True}
    find = "import importlib.util as u; print(u.find_spec('vllm').submodule_search_locations[0])"
    vllm_pkg = Path(subprocess.run([str(py), "-c", find], capture_output=True, text=True, check=True).stdout.strip())
    assert not any("moe_sparsity_config" in p.read_text(errors="ignore") for p in vllm_pkg.rglob("*.py"))
    # and the header-only validator says the same
    for name, ckpt in cases.items():
        assert bool(_errors(validate(ckpt))) == (name != "real"), name


@pytest.mark.produce
def test_modelopt_mixed_precision_layer_algorithm_vllm_does_not_load_is_an_error(clone):
    def edit(q: dict) -> None:
        q["quant_algo"] = "MIXED_PRECISION"
        q["quantized_layers"] = {"model.layers.0.self_attn.q_proj": {"quant_algo": "FP8"},
                                 "model.layers.0.mlp.down_proj": {"quant_algo": "W4A16_AWQ", "group_size": 128},
                                 "model.layers.1.mlp.down_proj": {"quant_algo": "W4A16_AWQ", "group_size": 128}}

    found = _skew(validate(mutate.edit_quant_config(clone("mo-fp8"), edit)))
    assert len(found) == 1 and found[0].severity == "error"
    assert "'W4A16_AWQ'" in found[0].message and "UnquantizedLinearMethod" in found[0].message
    assert "2 modules" in found[0].message


@pytest.mark.produce
def test_gptq_static_actorder_on_channel_weights_is_refused_by_vllm_013_only(clone):
    """llm-compressor 0.14's GPTQModifier writes actorder "static" for channel weights (a real quantkit W8A8
    smoothquant+gptq run wrote exactly this); compressed-tensors 0.12.2 refuses it, 0.17.0 accepts it."""
    ckpt = mutate.edit_quant_config(clone("lc-w8a8"), lambda q: q["config_groups"]["group_0"]["weights"].update(
        actorder="static"))
    assert _skew(validate(ckpt)) == []
    old = [e for e in _errors(validate(ckpt, vllm_version="0.13.0")) if "actorder" in e.message]
    assert len(old) == 1 and "Must use group quantization strategy" in old[0].message
    assert "vLLM 0.24.0 or newer" in old[0].fix


@pytest.mark.produce
def test_an_unknown_global_format_counts_only_for_groups_without_their_own(clone):
    def global_only(q: dict) -> None:
        q["config_groups"]["group_0"].pop("format")
        q["format"] = "mxfp6-pack-quantized"

    assert any("mxfp6-pack-quantized" in e.message
               for e in _errors(validate(mutate.edit_quant_config(clone("lc-fp8-dynamic"), global_only))))
    ckpt = mutate.edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(format="mxfp6-pack-quantized"))
    assert _skew(validate(ckpt)) == []
