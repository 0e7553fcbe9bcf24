"""Every vLLM KV-cache dtype (facts table) and online FP8: acceptance/refusal per target, bytes per token,
warnings and the vLLM arguments, on header-only checkpoints of real architectures."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import plan_fixtures
import pytest

from quantkit import plan
from quantkit.errors import PlanOptionError, ServeError, UnknownNameError, UnsupportedSchemeError
from quantkit.planning.memory import kv_bytes_per_token
from quantkit.schemes import KV_CACHE_DTYPES, KvCacheDtype
from quantkit.serve.args import serve_args
from quantkit.serve.engine import serve_plan
from quantkit.vllm_facts import KV_CACHE_DTYPE_FACTS, ONLINE_QUANT


def _cfg(arch: str) -> dict:
    return plan_fixtures.ARCHITECTURES[arch]()[0]


def test_facts_cover_vllms_cache_dtype_literal() -> None:
    # vllm/config/cache.py CacheDType of vLLM 0.32.0, copied here on purpose: the table must not drift from it
    cache_dtype = {"auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
                   "nvfp4_ds_mla", "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc",
                   "turboquant_3bit_nc", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head",
                   "fp8_per_token_head", "nvfp4", "nvfp4_4over6"}
    assert set(KV_CACHE_DTYPE_FACTS) == cache_dtype
    assert set(typing.get_args(KvCacheDtype)) == set(KV_CACHE_DTYPES)
    assert {n for n, f in KV_CACHE_DTYPE_FACTS.items() if f.elem_bytes is None} == cache_dtype - set(KV_CACHE_DTYPES)


@pytest.mark.parametrize("dtype,per_layer", [
    ("auto", 2 * 8 * 128 * 2),
    ("fp8", 2 * 8 * 128),
    ("fp8_e5m2", 2 * 8 * 128),
    ("int8_per_token_head", 8 * (2 * 128 + 2 * 4)),       # data + one fp32 scale per head per K/V side
    ("fp8_per_token_head", 8 * (2 * 128 + 2 * 4)),
    ("int4_per_token_head", 8 * (2 * 64 + 2 * 4)),        # two int4 per byte
    ("nvfp4", 2 * 8 * (64 + 8)),                          # fp4 data + one fp8 scale per 16 values
])
def test_bytes_per_token_by_dtype(dtype: str, per_layer: int) -> None:
    assert kv_bytes_per_token(_cfg("llama3"), dtype) == 32 * per_layer


def test_mla_bytes_per_token_by_dtype() -> None:
    cfg = _cfg("deepseek-v3")
    assert kv_bytes_per_token(cfg, "fp8") == 61 * (512 + 64)
    assert kv_bytes_per_token(cfg, "fp8_ds_mla") == 61 * 656
    assert kv_bytes_per_token(cfg, "nvfp4_ds_mla") == 61 * 352


@pytest.mark.parametrize("dtype,hw,ok", [
    ("fp8_e5m2", "h100", True), ("fp8_e5m2", "a100", True), ("fp8_e5m2", "cpu", False),
    ("fp8_e4m3", "h100", True), ("fp8_inc", "h100", False), ("fp8_inc", "cpu", False),
    ("nvfp4", "a100", True), ("nvfp4", "b200", True), ("nvfp4", "cpu", False),
    ("nvfp4_4over6", "h100", False), ("nvfp4_4over6", "b200", True),
    ("fp8_per_token_head", "h100", True), ("fp8_per_token_head", "a100", False),
    ("int8_per_token_head", "a100", True), ("int4_per_token_head", "h100", True),
    ("fp8_ds_mla", "h100", False),                        # dense model: DeepSeek's sparse-MLA layout only
    ("bfloat16", "h100", True), ("bfloat16", "cpu", False),
])
def test_dtype_acceptance_per_hardware(arch_dir: Callable[[str], Path], dtype: str, hw: str, ok: bool) -> None:
    if ok:
        p = plan(arch_dir("llama3"), hw, kv_cache=dtype)
        assert p.kv_cache_dtype == dtype and p.vllm_args["kv_cache_dtype"] == dtype
        assert p.fit.kv_bytes_per_token == kv_bytes_per_token(_cfg("llama3"), dtype)
    else:
        with pytest.raises(UnsupportedSchemeError) as err:
            plan(arch_dir("llama3"), hw, kv_cache=dtype)
        assert err.value.rule == "QK015" and err.value.fix


def test_mla_refuses_dense_only_dtypes_and_warns_on_fp8(arch_dir: Callable[[str], Path]) -> None:
    for dtype in ("fp8_e5m2", "nvfp4", "int8_per_token_head"):
        with pytest.raises(UnsupportedSchemeError, match="MLA"):
            plan(arch_dir("deepseek-v3"), "h100", kv_cache=dtype, gpus=8)
    p = plan(arch_dir("deepseek-v3"), "h100", kv_cache="fp8", gpus=8)
    warning = next(w for w in p.warnings if w.startswith("[mla-fp8-kv]"))
    assert "vllm#38652" in warning and "vllm#33638" in warning


def test_kv_capacity_grows_with_smaller_dtypes(arch_dir: Callable[[str], Path]) -> None:
    conc = {d: plan(arch_dir("llama3"), "h100", kv_cache=d).fit.max_concurrency for d in ("auto", "fp8", "nvfp4")}
    assert conc["auto"] < conc["fp8"] < conc["nvfp4"]


def test_only_calibrated_dtypes_need_calibration(arch_dir: Callable[[str], Path]) -> None:
    assert plan(arch_dir("llama3"), "h100", scheme="fp8-dynamic", kv_cache="fp8").needs_calibration
    e5m2 = plan(arch_dir("llama3"), "h100", scheme="fp8-dynamic", kv_cache="fp8_e5m2")
    assert not e5m2.needs_calibration and e5m2.calibration_samples == 0


def test_unsized_and_unknown_dtypes_are_refused(arch_dir: Callable[[str], Path]) -> None:
    with pytest.raises(UnknownNameError) as err:
        plan(arch_dir("llama3"), "h100", kv_cache="turboquant_k8v4")
    assert err.value.rule == "QK015" and "vllm serve" in err.value.fix
    with pytest.raises(UnknownNameError):
        plan(arch_dir("llama3"), "h100", kv_cache="fp7")


def test_existing_fp8_behaviour_is_kept(arch_dir: Callable[[str], Path]) -> None:
    assert plan(arch_dir("llama3"), "h100").kv_cache_dtype == "fp8"
    assert plan(arch_dir("llama3"), "cpu").kv_cache_dtype == "auto"
    with pytest.raises(UnsupportedSchemeError):
        plan(arch_dir("llama3"), "cpu", kv_cache="fp8")  # pinned machine: no AVX-512


def test_serve_args_accept_and_refuse_kv_dtypes(arch_dir: Callable[[str], Path]) -> None:
    a = serve_args(arch_dir("llama3"), "h100", kv_cache_dtype="fp8_e5m2")
    assert a.engine_args["kv_cache_dtype"] == "fp8_e5m2"
    assert a.argv[a.argv.index("--kv-cache-dtype") + 1] == "fp8_e5m2"
    with pytest.raises(ServeError) as err:
        serve_plan(arch_dir("llama3"), "h100", kv_cache_dtype="nvfp4_4over6")
    assert err.value.rule == "QK015"


# ----------------------------------------------------------------------------------------------- online FP8

@pytest.fixture(scope="module")
def biased_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-3 with Qwen2-style q/k/v biases."""
    config, tensors = plan_fixtures.ARCHITECTURES["llama3"]()
    for name, (dtype, shape) in list(tensors.items()):
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            tensors[name[: -len("weight")] + "bias"] = (dtype, (shape[0],))
    return plan_fixtures.write_checkpoint(tmp_path_factory.mktemp("biased") / "m", config, tensors)


def test_online_plan_on_h100(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", online=True)
    assert p.online == "fp8_per_tensor" and p.vllm_args["quantization"] == "fp8_per_tensor"
    assert p.rule == "online" and not p.needs_calibration and p.calibration_samples == 0
    assert p.kv_cache_dtype == "auto"  # no producer to calibrate k/v scales
    assert "--quantization fp8_per_tensor" in p.vllm_serve_command("/m")
    assert p.to_dict()["online"] == "fp8_per_tensor"
    assert p.fit.weight_bytes < p.memory[-1].weight_bytes  # sized as FP8, not 16-bit


def test_online_is_offered_as_an_alternative(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100")
    assert "zero-step" in p.online_alternative and "every start" in p.online_alternative
    assert "fp8-online: zero-step" in str(p)
    assert "not offered" in plan(arch_dir("llama3"), "a100").online_alternative  # no FP8 compute
    assert "not offered" in plan(arch_dir("llama3"), "cpu").online_alternative


def test_online_refused_on_cpu_and_with_a_scheme(arch_dir: Callable[[str], Path]) -> None:
    with pytest.raises(UnsupportedSchemeError) as err:
        plan(arch_dir("llama3"), "cpu", online=True)
    assert err.value.rule == "QK016" and "stub" in str(err.value)
    with pytest.raises(PlanOptionError):
        plan(arch_dir("llama3"), "h100", online=True, scheme="w4a16")
    with pytest.raises(ServeError) as serr:
        serve_plan(arch_dir("llama3"), "cpu", quantization="fp8")
    assert serr.value.rule == "QK016"


def test_online_warnings_bias_and_moe(arch_dir: Callable[[str], Path], biased_dir: Path) -> None:
    p = plan(biased_dir, "h100", online=True)
    bias = next(w for w in p.warnings if w.startswith("[online-fp8-bias]"))
    assert "vllm#39663" in bias and ("q_proj" in bias or "k_proj" in bias)
    assert "Linear biases" in plan(biased_dir, "h100").online_alternative
    assert not any("online-fp8-bias" in w for w in plan(arch_dir("llama3"), "h100", online=True).warnings)
    moe = plan(arch_dir("qwen3-moe"), "h100", online=True)
    assert any(w.startswith("[online-fp8-moe]") and "vllm#30830" in w for w in moe.warnings)


def test_load_and_serve_args_match_the_plan(arch_dir: Callable[[str], Path]) -> None:
    sp = serve_plan(arch_dir("llama3"), "h100", quantization="fp8")
    assert sp.engine_args["quantization"] == "fp8_per_tensor" == sp.online
    assert any("deprecated spelling" in w for w in sp.warnings)
    a = serve_args(arch_dir("llama3"), "h100", quantization="fp8_per_block")
    assert a.argv[a.argv.index("--quantization") + 1] == "fp8_per_block"
    assert "at load" in a.reasons["--quantization"]
    assert plan(arch_dir("llama3"), "h100", online=True).vllm_args["quantization"] == \
        serve_args(arch_dir("llama3"), "h100", quantization="fp8").engine_args["quantization"]
    assert set(ONLINE_QUANT) == {"fp8_per_tensor", "fp8_per_block", "fp8_per_channel"}
