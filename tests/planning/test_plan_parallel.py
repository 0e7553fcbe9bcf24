"""Tensor/pipeline parallelism in the plan: the TP/PP choice for the GPUs named and each sharding rule vLLM
enforces, on synthetic header-only checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import plan_fixtures
import pytest

from quantkit.errors import ParallelismError, PlanOptionError
from quantkit.planning.parallel import shard_problems
from quantkit.planning.planner import plan
from quantkit.schemes import get_scheme
from quantkit.vllm_facts import PARALLEL_RULES


def _dense(heads: int, kv: int, hidden: int, inter: int, layers: int = 2) -> tuple[dict, dict]:
    """A small Llama-shaped checkpoint with the head counts and widths a rule needs."""
    hd = hidden // heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_attention_heads": heads, "num_key_value_heads": kv,
           "num_hidden_layers": layers, "vocab_size": 1024, "head_dim": hd, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "max_position_embeddings": 4096}
    t: dict = {"model.embed_tokens.weight": ("BF16", (1024, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}"
        plan_fixtures._norm(t, f"{p}.input_layernorm", hidden)
        plan_fixtures._gqa(t, p, hidden, heads, kv, hd)
        plan_fixtures._norm(t, f"{p}.post_attention_layernorm", hidden)
        plan_fixtures._mlp(t, f"{p}.mlp", hidden, inter)
    plan_fixtures._norm(t, "model.norm", hidden)
    plan_fixtures._lin(t, "lm_head", 1024, hidden)
    return cfg, t


def _shapes(t: dict) -> dict:
    class Info:
        def __init__(self, shape: tuple[int, ...]) -> None:
            self.shape = shape
    return {k: Info(shape) for k, (_, shape) in t.items()}


def _rules(cfg: dict, t: dict, tp: int, **kw: object) -> set[str]:
    return {p.rule for p in shard_problems(cfg, _shapes(t), tp, **kw)}  # type: ignore[arg-type]


def test_every_rule_cites_vllm() -> None:
    for rule in PARALLEL_RULES.values():
        assert rule.upstream.startswith("vllm/") and rule.fix


def test_heads_must_divide() -> None:
    cfg, t = _dense(12, 12, 1536, 4096)
    assert "tp-heads" in _rules(cfg, t, 8)
    assert "tp-heads" not in _rules(cfg, t, 4)


def test_kv_heads_split_or_replicated() -> None:
    cfg, t = _dense(32, 8, 4096, 8192)
    assert _rules(cfg, t, 8) == set()  # 8 KV heads split one per rank
    cfg, t = _dense(32, 4, 4096, 8192)
    assert _rules(cfg, t, 8) == set()  # 4 KV heads replicated twice: vLLM accepts
    cfg, t = _dense(48, 3, 3072, 8192)
    assert "tp-kv-heads" in _rules(cfg, t, 2)  # 3 KV heads cannot be split in 2 nor replicated by a whole factor
    assert "tp-kv-heads" in _rules(cfg, t, 4)


def test_row_parallel_inputs_must_divide() -> None:
    cfg, t = _dense(32, 8, 4096, 11000)  # down_proj in_features 11000 is not a multiple of 16
    assert "tp-shard" in _rules(cfg, t, 16)


def test_group_size_per_shard() -> None:
    cfg, t = _dense(32, 8, 4096, 1536)  # down_proj 1536 / TP 8 = 192, not a multiple of 128
    w4 = get_scheme("w4a16")
    assert "tp-group" in _rules(cfg, t, 8, scheme=w4, group_size=128, ignore=["lm_head"])
    assert "tp-group" not in _rules(cfg, t, 8, scheme=w4, group_size=64, ignore=["lm_head"])
    assert "tp-group" not in _rules(cfg, t, 4, scheme=w4, group_size=128, ignore=["lm_head"])


def test_fp8_blocks_per_shard(arch_dir: Callable[[str], Path]) -> None:
    # Qwen3-30B-A3B: expert down_proj in 768 / TP 8 = 96, not a whole 128-wide FP8 block
    p = plan(arch_dir("qwen3-moe"), "h100", scheme="fp8-block", gpus=8)
    assert p.tensor_parallel_size == 2
    assert "[tp-block]" in p.parallel_reason and "experts per layer" in p.parallel_reason
    with pytest.raises(ParallelismError) as exc:
        plan(arch_dir("qwen3-moe"), "h100", scheme="fp8-block", tensor_parallel_size=8)
    assert exc.value.rule == "QK014" and "fp8_utils.py" in str(exc.value) and "1, 2" in exc.value.fix


def test_layers_per_pipeline_stage() -> None:
    cfg, t = _dense(32, 8, 4096, 8192, layers=2)
    assert "pp-layers" in _rules(cfg, t, 1, pp=3)
    assert "pp-layers" not in _rules(cfg, t, 1, pp=2)


def test_gpus_named_take_the_largest_valid_tp(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", gpus=8)
    assert p.tensor_parallel_size == 8 and p.pipeline_parallel_size == 1
    assert p.vllm_args["tensor_parallel_size"] == 8 and "distributed_executor_backend" not in p.vllm_args
    six = plan(arch_dir("llama3"), "h100", gpus=6)
    assert six.tensor_parallel_size == 4 and "TP 6 breaks [tp-heads]" in six.parallel_reason


def test_nodes_pipeline_over_ray(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", gpus=8, nodes=2)
    assert (p.tensor_parallel_size, p.pipeline_parallel_size, p.nodes) == (8, 2, 2)
    assert p.vllm_args["pipeline_parallel_size"] == 2 and p.vllm_args["distributed_executor_backend"] == "ray"
    assert "--distributed-executor-backend" in p.serve_flags() and "TP 8 x PP 2" in p.summary()
    one = plan(arch_dir("llama3"), "h100", gpus=8)
    assert p.fit.per_gpu_bytes < one.fit.per_gpu_bytes  # half the layers per GPU


def test_requested_tp_that_cannot_divide_heads(arch_dir: Callable[[str], Path]) -> None:
    with pytest.raises(ParallelismError) as exc:
        plan(arch_dir("llama3"), "h100", tensor_parallel_size=3)
    assert "[tp-heads]" in str(exc.value) and "vllm/config/model.py" in str(exc.value)
    with pytest.raises(PlanOptionError):
        plan(arch_dir("llama3"), "h100", gpus=0)
    with pytest.raises(PlanOptionError):
        plan(arch_dir("llama3"), "cpu", gpus=2)


def test_mla_kv_is_replicated(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("deepseek-v3"), "h200", gpus=8)
    assert p.tensor_parallel_size == 8 and "MLA" in p.parallel_reason


def test_moe_backend_env_on_blackwell(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("qwen3-moe"), "b200", scheme="nvfp4", gpus=4)
    # vLLM 0.32 reads no VLLM_USE_FLASHINFER_MOE_FP4 (vllm/envs.py): its oracle picks the kernel, the plan says so
    assert "VLLM_USE_FLASHINFER_MOE_FP4" not in p.vllm_env
    assert any("moe-backend auto" in r and "oracle/nvfp4.py" in r for r in p.reasons), p.reasons
    assert "VLLM_USE_FLASHINFER_MOE" not in p.vllm_serve_command("out")
    h100 = plan(arch_dir("qwen3-moe"), "h100", scheme="fp8-dynamic", gpus=4)
    assert not h100.vllm_env
