"""Weight estimates and memory fits against N GPUs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from quantkit.checkpoint.reader import CheckpointView
from quantkit.planning.ignore import build_ignore, checkpoint_module_names
from quantkit.planning.memory import (
    GIB,
    GPU_MEMORY_UTILIZATION,
    RUNTIME_OVERHEAD_GIB,
    effective_bits,
    estimate_weight_bytes,
    kv_bytes_per_token,
    memory_fit,
    weight_inventory,
)
from quantkit.schemes import get_scheme

# SmolLM2-135M: 30 layers of q,o (576x576), k,v (192x576), gate,up (1536x576), down (576x1536)
EMB_LINEAR = 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576)
EMB_EMBED = 49152 * 576
EMB_NORMS = (30 * 2 + 1) * 576


def _view(path: Path) -> tuple[CheckpointView, list[str]]:
    view = CheckpointView(path)
    return view, build_ignore(checkpoint_module_names(view.tensors), config=view.config)


def test_unquantized_estimate_equals_the_safetensors_payload(embedded_path: Path) -> None:
    view, _ = _view(embedded_path)
    payload = sum(t.offsets[1] - t.offsets[0] for t in view.tensors.values())
    assert estimate_weight_bytes(view) == payload == 2 * (EMB_LINEAR + EMB_EMBED + EMB_NORMS)


@pytest.mark.parametrize("scheme,bits", [("w8a8-int8", 8), ("fp8-dynamic", 8), ("w4a16", 4 + 16 / 64),
                                         ("w4a8-int", 4 + 16 / 64), ("nvfp4", 4.5)])
def test_quantized_estimate(embedded_path: Path, scheme: str, bits: float) -> None:
    view, ignore = _view(embedded_path)
    expected = EMB_LINEAR * bits / 8 + 2 * (EMB_EMBED + EMB_NORMS)  # tied embedding stays 16-bit, stored once
    assert estimate_weight_bytes(view, scheme, ignore=ignore) == pytest.approx(expected, abs=1)


def test_group_size_follows_the_shapes(embedded_path: Path, arch_dir: Callable[[str], Path]) -> None:
    # 576 is not a multiple of 128: the INT4 group drops to 64, which costs a little more per weight
    inv = weight_inventory(CheckpointView(embedded_path))
    assert inv.in_features == {576, 1536}
    w4 = get_scheme("w4a16")
    assert inv.bytes_for(w4) > inv.bytes_for(w4, group_size=128)
    assert effective_bits(w4, 128) == 4.125
    assert effective_bits(get_scheme("w4a16-awq"), 128) == 4 + 16 / 128 + 4 / 128


def test_ignored_layers_stay_16_bit(arch_dir: Callable[[str], Path]) -> None:
    view, ignore = _view(arch_dir("qwen3-next"))
    with_ignore = estimate_weight_bytes(view, "fp8-block", ignore=ignore)
    without = estimate_weight_bytes(view, "fp8-block", ignore=["lm_head"])
    # the linear_attn projections, routers, shared-expert gates and MTP stay 16-bit: more bytes kept
    assert with_ignore > without


def test_mtp_layers_are_not_counted(arch_dir: Callable[[str], Path]) -> None:
    view, _ = _view(arch_dir("deepseek-v3"))
    total_params = sum(t.offsets[1] - t.offsets[0] for t in view.tensors.values()) / 2
    served = estimate_weight_bytes(view) / 2
    assert total_params / 1e9 == pytest.approx(684.5, rel=0.01)
    assert served / 1e9 == pytest.approx(671, rel=0.01)  # DeepSeek-V3's published 671B without MTP


def test_fit_of_a_small_model(embedded_path: Path) -> None:
    view, ignore = _view(embedded_path)
    fit = memory_fit(view, "fp8-dynamic", "h100", kv_cache_dtype="fp8", ignore=ignore, max_model_len=4096,
                     concurrency=16)
    assert fit.fits and fit.tp_needed == 1 and fit.gpus == 1
    assert fit.kv_bytes_per_token == 11520
    assert fit.kv_cache_bytes == 16 * 4096 * 11520
    assert fit.overhead_bytes == RUNTIME_OVERHEAD_GIB["cuda"] * GIB
    assert fit.total_bytes == fit.weight_bytes + fit.kv_cache_bytes + fit.overhead_bytes
    assert fit.capacity_per_gpu_bytes == int(79.6 * GIB * GPU_MEMORY_UTILIZATION)
    # max concurrency: what is left after weights and overhead, divided by one sequence's KV
    left = fit.capacity_per_gpu_bytes - fit.weight_bytes - fit.overhead_bytes
    assert fit.max_concurrency == pytest.approx(left / (4096 * 11520), abs=0.01)


@pytest.mark.parametrize("hw,scheme,tp", [
    ("h200", "fp8-block", 8),   # DeepSeek-V3 FP8 needs a full H200 node ...
    ("h100", "fp8-block", None),  # ... and does not fit one 8 x H100 node
    ("b200", "nvfp4", 4),
    ("b300", "nvfp4", 2),
    ("a100", "w4a16", 8),
])
def test_deepseek_tp_needed(arch_dir: Callable[[str], Path], hw: str, scheme: str, tp: int | None) -> None:
    view, ignore = _view(arch_dir("deepseek-v3"))
    fit = memory_fit(view, scheme, hw, ignore=ignore)
    assert fit.tp_needed == tp
    assert fit.fits == (tp is not None)
    if tp is None:
        assert "more than one h100 node" in fit.note


def test_requested_tp_is_evaluated(arch_dir: Callable[[str], Path]) -> None:
    view, ignore = _view(arch_dir("llama4"))
    one = memory_fit(view, "fp8-block", "h100", ignore=ignore, tensor_parallel_size=1)
    assert (one.gpus, one.fits, one.tp_needed) == (1, False, 2)
    four = memory_fit(view, "fp8-block", "h100", ignore=ignore, tensor_parallel_size=4)
    assert four.fits and four.per_gpu_bytes < one.per_gpu_bytes
    odd = memory_fit(view, "fp8-block", "h100", ignore=ignore, tensor_parallel_size=3)
    assert "not one vLLM accepts" in odd.note  # 40 heads are not divisible by 3


def test_more_context_needs_more_gpus(arch_dir: Callable[[str], Path]) -> None:
    view, ignore = _view(arch_dir("llama3"))
    small = memory_fit(view, None, "l4", ignore=ignore, max_model_len=2048, concurrency=1)
    large = memory_fit(view, None, "l4", ignore=ignore, max_model_len=32768, concurrency=32)
    assert small.tp_needed is not None and large.tp_needed is not None
    assert large.tp_needed > small.tp_needed
    assert large.kv_cache_bytes > small.kv_cache_bytes


def test_cpu_fit_uses_host_memory(embedded_path: Path) -> None:
    view, ignore = _view(embedded_path)
    fit = memory_fit(view, "w8a8-int8", "cpu", ignore=ignore, capacity_per_gpu_bytes=2 * GIB)
    assert not fit.fits and fit.tp_needed is None and fit.gpus == 1
    assert "host" in fit.note


def test_kv_bytes_per_token_is_public(embedded_path: Path) -> None:
    view, _ = _view(embedded_path)
    assert kv_bytes_per_token(view.config, "auto") == 23040
