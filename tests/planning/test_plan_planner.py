"""plan(): scheme per hardware class and workload, with reasons, alternatives, warnings and a memory fit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantkit
from quantkit import hardware
from quantkit.errors import CheckpointReadError, ModelNotFoundError, UnknownNameError
from quantkit.hardware import HARDWARE, parse_nvidia_smi, support
from quantkit.planning.planner import Plan, PlanOptionError, plan
from quantkit.planning.rules import SELECTION_RULES, WORKLOADS
from quantkit.schemes import SCHEMES, get_scheme

# ------------------------------------------------------------------------------------------- the embedded model


def test_embedded_cpu_and_h100_plans_differ_and_explain(embedded_path: Path) -> None:
    cpu = plan(embedded_path, "cpu")
    gpu = plan(embedded_path, "h100")
    assert cpu.scheme.name != gpu.scheme.name
    assert (cpu.scheme.name, cpu.rule, cpu.kv_cache_dtype) == ("w8a8-int8", "cpu-int8", "auto")
    assert (gpu.scheme.name, gpu.rule, gpu.kv_cache_dtype) == ("fp8-dynamic", "fp8gpu-dense", "fp8")
    for p in (cpu, gpu):
        assert p.backend == "llmcompressor"
        assert p.ignore == ("lm_head",)
        assert p.rule in p.reasons[0] and len(p.reasons) >= 5
        assert {s for s, _ in p.alternatives} == set(SCHEMES) - {p.scheme.name}
        assert all(why for _, why in p.alternatives)
        assert p.fit.scheme == p.scheme.name and p.fit.fits and p.tensor_parallel_size == 1
        assert p.memory[-1].scheme == "bf16"
    assert support(get_scheme(cpu.scheme.name), HARDWARE["cpu"]).runs
    # the CPU plan says why the 4-bit and FP8-static schemes are not used here
    why_not = dict(cpu.alternatives)
    assert "AVX-512" in why_not["w4a16"]
    assert "static_scaled_fp8_quant" in why_not["fp8-static"]
    assert gpu.vllm_args["kv_cache_dtype"] == "fp8" and "kv_cache_dtype" not in cpu.vllm_args


def test_lazy_export() -> None:
    assert quantkit.plan is plan


def test_default_hardware_is_detected(embedded_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan(embedded_path).hardware.name == "cpu"  # conftest: no GPU
    monkeypatch.setattr(hardware, "query_local_gpu", lambda: parse_nvidia_smi("NVIDIA L4, 8.9, 23034"))
    assert plan(embedded_path).hardware.name == "l4"
    assert plan("embedded", "h200").model == str(embedded_path)


# ------------------------------------------------------------------------------------------- hardware classes

DENSE = {"b200": "nvfp4", "b300": "nvfp4", "gb200": "nvfp4", "rtx5090": "fp8-dynamic", "h100": "fp8-dynamic",
         "h200": "fp8-dynamic", "l40s": "fp8-dynamic", "l4": "fp8-dynamic", "rtx4090": "fp8-dynamic",
         "a100": "w4a16", "a10g": "w4a16", "t4": "w8a8-int8", "mi300x": "fp8-dynamic", "cpu": "w8a8-int8",
         "rtxpro6000": "fp8-dynamic", "gb10": "fp8-dynamic", "h800": "fp8-dynamic", "h20": "fp8-dynamic",
         "l40": "fp8-dynamic", "a800": "w4a16", "rtxa6000": "w4a16"}
MOE = DENSE | {"rtx5090": "fp8-block", "h100": "fp8-block", "h200": "fp8-block", "l40s": "fp8-block",
               "l4": "fp8-block", "rtx4090": "fp8-block", "mi300x": "fp8-block", "rtxpro6000": "fp8-block",
               "gb10": "fp8-block", "h800": "fp8-block", "h20": "fp8-block", "l40": "fp8-block"}


@pytest.mark.parametrize("hw", sorted(HARDWARE))
def test_dense_model_per_hardware_class(hw: str, arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), hw)
    assert p.scheme.name == DENSE[hw]
    assert support(get_scheme(p.scheme.name), HARDWARE[hw]).runs


@pytest.mark.parametrize("hw", sorted(HARDWARE))
def test_moe_model_per_hardware_class(hw: str, arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("qwen3-moe"), hw)
    assert p.scheme.name == MOE[hw]
    assert "MoE (128 experts)" in " ".join(p.reasons)


@pytest.mark.parametrize("hw,workload,critical,scheme", [
    ("h100", "accuracy", False, "fp8-dynamic"),
    ("h100", "throughput", False, "fp8-dynamic"),
    ("h100", "memory", False, "w4a16"),
    ("h100", "memory", True, "w4a16-autoround"),
    ("b200", "accuracy", False, "fp8-dynamic"),
    ("b200", "throughput", False, "nvfp4"),
    ("b200", "balanced", True, "fp8-dynamic"),
    ("b200", "memory", True, "w4a16-autoround"),
    ("rtx5090", "memory", False, "w4a16"),
    ("a100", "throughput", False, "w8a8-int8"),
    ("a100", "accuracy", False, "w8a8-int8"),
    ("a100", "balanced", True, "w8a8-int8"),
    ("a100", "memory", False, "w4a16"),
    ("t4", "memory", False, "w4a16"),
    ("mi300x", "memory", False, "w4a16"),
    ("cpu", "memory", False, "w4a8-int"),
])
def test_workloads(hw: str, workload: str, critical: bool, scheme: str, arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), hw, workload=workload, accuracy_critical=critical)
    assert p.scheme.name == scheme
    assert p.workload == workload


def test_cpu_memory_workload_follows_avx512(embedded_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without = plan(embedded_path, "cpu", workload="memory")
    assert (without.scheme.name, without.rule) == ("w4a8-int", "cpu-memory")
    assert any("skipped rule cpu-memory-avx512 (w4a16)" in r for r in without.reasons)
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    with_avx = plan(embedded_path, "cpu", workload="memory")
    assert (with_avx.scheme.name, with_avx.rule) == ("w4a16", "cpu-memory-avx512")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=st.sampled_from(WORKLOADS), critical=st.booleans(), avx512=st.booleans(),
       arch=st.sampled_from(["llama3", "qwen3-moe", "gemma3"]))
def test_cpu_never_picks_what_vllm_cpu_cannot_run(workload: str, critical: bool, avx512: bool, arch: str,
                                                  arch_dir: Callable[[str], Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1" if avx512 else "0")
    p = plan(arch_dir(arch), "cpu", workload=workload, accuracy_critical=critical)
    assert support(get_scheme(p.scheme.name), HARDWARE["cpu"]).runs
    assert p.kv_cache_dtype == "auto"


def test_every_rule_names_a_known_scheme_and_is_reachable() -> None:
    assert {r.scheme for r in SELECTION_RULES} <= set(SCHEMES)
    assert len({r.id for r in SELECTION_RULES}) == len(SELECTION_RULES)


# ------------------------------------------------------------------------------------------- producers


def test_nvfp4_on_blackwell_prefers_modelopt_when_it_can(arch_dir: Callable[[str], Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # ModelOpt quantizes and packs NVFP4 on CPU too (measured with modelopt 0.47), so no GPU is needed here...
    assert plan(arch_dir("llama3"), "b200").backend == "modelopt"
    # ...but a ModelOpt config that does need CUDA falls back to llm-compressor where none is visible.
    from dataclasses import replace

    from quantkit import schemes

    nv = schemes.SCHEMES["nvfp4"]
    monkeypatch.setitem(schemes.SCHEMES, "nvfp4", replace(nv, modelopt=replace(nv.modelopt, needs_cuda=True)))
    no_gpu = plan(arch_dir("llama3"), "b200")
    assert no_gpu.backend == "llmcompressor"
    assert any("needs a CUDA GPU" in r for r in no_gpu.reasons)
    monkeypatch.setattr(hardware, "query_local_gpu", lambda: parse_nvidia_smi("NVIDIA B200, 10.0, 183359"))
    assert plan(arch_dir("llama3"), "b200").backend == "modelopt"
    tied = plan(arch_dir("gemma3"), "b200")  # ModelOpt exports of tied models fail in vLLM
    assert tied.backend == "llmcompressor" and any("vllm#45543" in r for r in tied.reasons)


# ------------------------------------------------------------------------------------------- warnings


def test_hybrid_fp4_warns_and_keeps_linear_attention(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("qwen3-next"), "b200")
    assert p.scheme.name == "nvfp4"
    assert r"re:.*\.linear_attn\..*" in p.ignore
    assert any(w.startswith("[hybrid-4bit]") and "vllm#40252" in w for w in p.warnings)
    assert p.architecture["hybrid"] and p.architecture["layers"] == {"linear": 36, "full": 12}


def test_deepseek_plans(arch_dir: Callable[[str], Path]) -> None:
    h100 = plan(arch_dir("deepseek-v3"), "h100")
    assert h100.scheme.name == "fp8-block" and h100.kv_cache_dtype == "auto"
    assert any(w.startswith("[memory]") and "more than one h100 node" in w for w in h100.warnings)
    h200 = plan(arch_dir("deepseek-v3"), "h200")
    assert h200.fit.fits and h200.tensor_parallel_size == 8
    fp8kv = plan(arch_dir("deepseek-v3"), "h200", kv_cache="fp8")
    assert fp8kv.kv_cache_dtype == "fp8"
    assert any("vllm#38652" in w for w in fp8kv.warnings)
    assert fp8kv.fit.max_concurrency > h200.fit.max_concurrency  # FP8 halves the latent cache


def test_marlin_shape_warning_for_the_embedded_model(embedded_path: Path) -> None:
    p = plan(embedded_path, "h100", workload="memory")
    assert p.scheme.name == "w4a16"
    assert any(w.startswith("[marlin-shape]") and "576" in w for w in p.warnings)


def test_already_quantized_source_warns(embedded_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "q"
    src.mkdir()
    cfg = json.loads((embedded_path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "compressed-tensors"}
    (src / "config.json").write_text(json.dumps(cfg))
    (src / "model.safetensors").symlink_to(embedded_path / "model.safetensors")
    p = plan(src, "h100")
    assert any(w.startswith("[already-quantized]") for w in p.warnings)


def test_requested_tp(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama4"), "h100", tensor_parallel_size=4)
    assert p.tensor_parallel_size == 4 and p.vllm_args["tensor_parallel_size"] == 4
    assert all(m.gpus == 4 for m in p.memory)


# ------------------------------------------------------------------------------------------- the Plan object


def test_plan_object(embedded_path: Path) -> None:
    p = plan(embedded_path, "h100", max_model_len=2048, concurrency=4)
    assert isinstance(p, Plan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.scheme = get_scheme("w4a16")  # type: ignore[misc]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["scheme"] == "fp8-dynamic" and d["alternatives"][0].keys() == {"scheme", "why"}
    assert d["memory"][0]["kv_cache_bytes"] == 4 * 2048 * 11520
    text = str(p)
    for section in ("scheme", "Why:", "Alternatives:", "Memory", "rule fp8gpu-dense"):
        assert section in text
    assert p.summary() == "fp8-dynamic via llmcompressor, KV fp8, TP 1 on h100 (fits; rule fp8gpu-dense)"


def test_bad_input(embedded_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="balanced"):
        plan(embedded_path, "h100", workload="fast")
    with pytest.raises(UnknownNameError, match="h100"):
        plan(embedded_path, "v100")
    with pytest.raises(PlanOptionError):
        plan(embedded_path, "h100", concurrency=0)
    with pytest.raises(ModelNotFoundError):
        plan(tmp_path / "missing", "h100")
    (tmp_path / "bin-only").mkdir()
    (tmp_path / "bin-only" / "config.json").write_text((embedded_path / "config.json").read_text())
    with pytest.raises(CheckpointReadError, match="safetensors"):
        plan(tmp_path / "bin-only", "h100")
