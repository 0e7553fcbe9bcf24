"""Fixtures for the backend tests: a tiny random model with the module names the ignore lists are about."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_qwen3_next(tmp_path_factory: pytest.TempPathFactory, embedded_path: Path) -> Path:
    """A 4-layer random Qwen3-Next (Gated-DeltaNet linear attention, MoE with routers and shared-expert gates)
    with the embedded model's tokenizer: the names ModelOpt's defaults and quantkit's ignore list both cover."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_path)
    cfg = AutoConfig.for_model(
        "qwen3_next", vocab_size=len(tok), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, num_experts=4, num_experts_per_tok=2, linear_num_value_heads=4, linear_num_key_heads=2,
        linear_key_head_dim=16, linear_value_head_dim=16, full_attention_interval=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    out = tmp_path_factory.mktemp("tiny-qwen3-next")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sharded_llama(tmp_path_factory: pytest.TempPathFactory, embedded_path: Path) -> Path:
    """A 2-layer random Llama in 50 KB shards (embeddings, lm_head and the layers in 6 files), with the embedded
    model's tokenizer: q/k/v and gate/up of one layer land in different shards."""
    from tiny_models import save_tiny_llama

    out = save_tiny_llama(tmp_path_factory.mktemp("sharded-llama") / "tiny-llama", embedded_path,
                          max_shard_size="50KB")
    assert len(list(out.glob("*.safetensors"))) >= 2
    return out
