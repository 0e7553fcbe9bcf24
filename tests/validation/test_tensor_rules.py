"""Rules 13-16: NVFP4 global scales, scale tensors, KV-cache scales, safetensors index consistency."""

from __future__ import annotations

import json

import pytest
import synthetic_checkpoints as S
from checkpoint_mutations import edit_json, edit_quant_config, read_header, rewrite_header, truncate, write_value

from quantkit.errors import CheckpointReadError
from quantkit.validation import validate


# ------------------------------------------------------------------------------------- 13 nvfp4-global-scales

@pytest.mark.produce
@pytest.mark.parametrize("name,suffix", [("lc-nvfp4", "weight_global_scale"), ("mo-nvfp4", "weight_scale_2")])
def test_qkv_global_scales_that_differ(clone, name, suffix):
    ckpt = write_value(clone(name), f"model.layers.1.self_attn.k_proj.{suffix}", S.f32(1234.5))
    report = validate(ckpt)
    [f] = report.by_rule("nvfp4-global-scales")
    assert f.severity == "warning" and f.module == "model.layers.1.self_attn.qkv_proj"
    assert "k_proj=1234.5" in f.message
    assert report.ok  # a warning: vLLM loads it, with the other shards off
    assert 0 < report.stats["tensor_bytes_read"] <= 4 * 5 * 4


def test_expert_w1_w3_global_scales_that_differ(tmp_path):
    a = S.qwen3_moe(layers=1, experts=4)
    ign = ["lm_head", r"re:.*\.mlp\.gate$"]
    data = {f"model.layers.0.mlp.experts.{e}.{p}.weight_global_scale": S.f32(448.0)
            for e in range(4) for p in ("gate_proj", "up_proj")}
    data["model.layers.0.mlp.experts.2.up_proj.weight_global_scale"] = S.f32(96.0)
    ckpt = S.ct_checkpoint(tmp_path / "c", a, "ct-nvfp4", ign, data=data)
    [f] = validate(ckpt).by_rule("nvfp4-global-scales")
    assert f.module == "model.layers.0.mlp.experts.2" and "w1/w3" in f.message


@pytest.mark.produce
def test_equal_global_scales_pass_and_fp8_reads_no_tensor_bytes(real):
    assert not validate(real("lc-nvfp4")).by_rule("nvfp4-global-scales")
    assert not validate(real("mo-nvfp4")).by_rule("nvfp4-global-scales")
    assert validate(real("mo-fp8")).stats["tensor_bytes_read"] == 0


# -------------------------------------------------------------------------------------------- 14 scale-tensors

@pytest.mark.produce
def test_missing_weight_scale(clone):
    ckpt = rewrite_header(clone("lc-fp8-kv"), lambda h: h.pop("model.layers.0.self_attn.q_proj.weight_scale"))
    [f] = validate(ckpt).by_rule("scale-tensors")
    assert f.module == "model.layers.0.self_attn.q_proj" and "'weight_scale'" in f.message


@pytest.mark.produce
def test_scale_of_the_wrong_shape(clone):
    def per_tensor(h):
        h["model.layers.1.mlp.down_proj.weight_scale"]["shape"] = [1]

    [f] = validate(rewrite_header(clone("lc-fp8-kv"), per_tensor)).by_rule("scale-tensors")
    assert "[1]" in f.message and "[576, 1]" in f.message


@pytest.mark.produce
def test_nvfp4_scale_of_the_wrong_dtype(clone):
    def widen(h):
        h["model.layers.2.mlp.up_proj.weight_scale"]["dtype"] = "BF16"

    [f] = validate(rewrite_header(clone("mo-nvfp4"), widen)).by_rule("scale-tensors")
    assert "BF16" in f.message and "F8_E4M3" in f.message


@pytest.mark.produce
def test_missing_nvfp4_input_global_scale(clone):
    ckpt = rewrite_header(clone("lc-nvfp4"), lambda h: h.pop("model.layers.3.mlp.gate_proj.input_global_scale"))
    [f] = validate(ckpt).by_rule("scale-tensors")
    assert "input_global_scale" in f.message


@pytest.mark.produce
@pytest.mark.parametrize("leak", ["model.layers.0.self_attn.q_proj.weight_quantizer._amax",
                                  "model.layers.0.mlp.up_proj.input_amax",
                                  "model.layers.0.mlp.up_proj.weight_double_scale"])
def test_leaked_producer_internals(clone, leak):
    ckpt = rewrite_header(clone("mo-fp8-kv"), lambda h: h.update({leak: {"dtype": "F32", "shape": [],
                                                                       "data_offsets": [0, 0]}}))
    [f] = validate(ckpt).by_rule("scale-tensors")
    assert f.module == leak and "KeyError" in f.message


@pytest.mark.produce
@pytest.mark.parametrize("name", ["lc-fp8-dynamic", "lc-w4a16-g64", "lc-nvfp4a16", "lc-nvfp4", "lc-fp8-kv", "mo-fp8",
                                  "mo-fp8-kv", "mo-nvfp4"])
def test_real_scales_are_plausible(real, name):
    assert not validate(real(name)).by_rule("scale-tensors")


# ------------------------------------------------------------------------------------------ 15 kv-cache-scales

@pytest.mark.produce
@pytest.mark.parametrize("name,tensor", [("lc-fp8-kv", "model.layers.2.self_attn.v_scale"),
                                         ("mo-fp8-kv", "model.layers.2.self_attn.v_proj.v_scale")])
def test_attention_layer_without_v_scale(clone, name, tensor):
    ckpt = rewrite_header(clone(name), lambda h: h.pop(tensor))
    [f] = validate(ckpt).by_rule("kv-cache-scales")
    assert f.severity == "error" and f.module == "model.layers.2.self_attn" and "v_scale" in f.message
    assert "vllm#54623" in f.message


@pytest.mark.produce
def test_kv_scheme_declared_without_any_scale(clone):
    ckpt = edit_quant_config(clone("lc-fp8-dynamic"), lambda q: q.update(kv_cache_scheme={
        "num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}))
    [f] = validate(ckpt).by_rule("kv-cache-scales")
    assert f.module == "model.layers.*.self_attn" and "30 modules" in f.message


@pytest.mark.produce
def test_real_kv_checkpoints_have_every_scale(real):
    assert not validate(real("lc-fp8-kv")).by_rule("kv-cache-scales")
    assert not validate(real("mo-fp8-kv")).by_rule("kv-cache-scales")


def test_fp8_kv_on_mla_warns_about_multi_turn(tmp_path):
    kv = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
    a = S.deepseek_v3()
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"], kv=kv))
    [f] = report.by_rule("kv-cache-scales")
    assert f.severity == "warning" and "vllm#38652" in f.message and report.ok


def test_kv_scales_on_hybrid_full_attention_layers_only(tmp_path):
    kv = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}
    a = S.qwen3_next()
    ign = ["lm_head", r"re:.*\.mlp\.gate$", r"re:.*\.shared_expert_gate$", r"re:.*\.linear_attn\..*"]
    assert not validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ign, kv=kv)).by_rule("kv-cache-scales")


# ------------------------------------------------------------------------------------------ 16 index-consistent

def _sharded(tmp_path, name="c"):
    a = S.qwen3_moe()
    return S.ct_checkpoint(tmp_path / name, a, "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"], shards=4)


def test_sharded_checkpoint_passes(tmp_path):
    report = validate(_sharded(tmp_path))
    assert report.ok and report.stats["shards"] == 4


def test_missing_shard(tmp_path):
    ckpt = _sharded(tmp_path)
    (ckpt / "model-00003-of-00004.safetensors").unlink()
    found = validate(ckpt).by_rule("index-consistent")
    assert any("missing" in f.message and "00003" in f.message for f in found)


def test_index_lists_a_tensor_its_shard_lacks(tmp_path):
    ckpt = _sharded(tmp_path)
    edit_json(ckpt, "model.safetensors.index.json",
              lambda i: i["weight_map"].update({"model.layers.0.mlp.experts.0.up_proj.weight_scale_2":
                                                "model-00001-of-00004.safetensors"}))
    [f] = validate(ckpt).by_rule("index-consistent")
    assert f.module == "model.layers.0.mlp.experts.0.up_proj.weight_scale_2" and f.severity == "error"


def test_tensor_stored_twice(tmp_path):
    ckpt = _sharded(tmp_path)
    shard = "model-00002-of-00004.safetensors"
    rewrite_header(ckpt, lambda h: h.update({"model.norm.weight": {"dtype": "BF16", "shape": [2048],
                                                                  "data_offsets": [0, 0]}}), shard=shard)
    assert any("stored in 2 shards" in f.message for f in validate(ckpt).by_rule("index-consistent"))


@pytest.mark.produce
def test_truncated_data_region(clone):
    ckpt = truncate(clone("lc-w4a16-g64"), 1000)
    [f] = validate(ckpt).by_rule("index-consistent")
    assert f.severity == "error" and "past the end" in f.message


@pytest.mark.produce
def test_offsets_that_do_not_fit_dtype_and_shape(clone):
    def lie(h):
        h["model.layers.0.mlp.down_proj.weight_scale"]["shape"] = [576, 2]
        h["__keep_offsets__"] = True

    ckpt = rewrite_header(clone("lc-fp8-kv"), lie)
    found = validate(ckpt).by_rule("index-consistent")
    assert any("corrupt header" in f.message for f in found)


def test_index_pointing_outside_the_checkpoint(tmp_path):
    ckpt = _sharded(tmp_path)
    edit_json(ckpt, "model.safetensors.index.json",
              lambda i: i["weight_map"].update({"model.norm.weight": "../../etc/passwd"}))
    found = validate(ckpt).by_rule("index-consistent")
    assert any("outside the checkpoint" in f.message for f in found)


def test_checkpoint_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert any("no weight files" in f.message for f in validate(tmp_path).by_rule("index-consistent"))


def test_corrupt_header_is_unreadable_not_a_finding(tmp_path):
    ckpt = _sharded(tmp_path)
    path = ckpt / "model-00002-of-00004.safetensors"
    header, start = read_header(path)
    with path.open("r+b") as fh:
        fh.seek(12)
        fh.write(b"\xff\xfe")
    with pytest.raises(CheckpointReadError):
        validate(ckpt)
