"""Tiny real-architecture models for the backend tests (importable: this folder is on sys.path, conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def save_tiny_llama(out: Path, tokenizer_dir: Path, *, shape: dict[str, int] | None = None,
                    **save_args: object) -> Path:
    """A 2-layer random Llama (hidden 64, 4 heads, 2 KV heads; real module names; ``shape`` overrides these
    config fields) with ``tokenizer_dir``'s tokenizer, saved to ``out`` (``save_args`` go to
    ``save_pretrained``, e.g. ``max_shard_size``)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, **(shape or {})}
    cfg = AutoConfig.for_model("llama", vocab_size=len(tok), tie_word_embeddings=False, **fields)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(out, **save_args)
    tok.save_pretrained(out)
    return out


def load_tensors(path: Path) -> dict[str, object]:
    """Every tensor of a checkpoint directory (all its shards), by name."""
    from safetensors import safe_open

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})  # noqa: SIM118 - safe_open is not a dict
    return out
