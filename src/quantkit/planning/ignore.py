"""The ignore list: layers that must stay in 16-bit for vLLM to load the checkpoint and serve it well.

Rules are data: each entry is an anchored regular expression on module names (``re.match`` semantics, the
same as compressed-tensors' ``re:`` targets), why the layer stays unquantized, and the upstream report behind
it. The list is built from module names alone (``named_modules()`` or a checkpoint's tensor names), and only
patterns that match at least one module are emitted, with the exact on-disk names vLLM will see.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class IgnoreRule:
    id: str
    pattern: str
    why: str
    upstream: str = ""


IGNORE_RULES: tuple[IgnoreRule, ...] = (
    IgnoreRule("lm-head", r"^(.*\.)?lm_head$", "the output projection is tiny per token and very sensitive"),
    IgnoreRule("moe-router", r".*\.mlp\.gate$", "MoE routers pick experts; quantizing them shifts routing",
               "llm-compressor#2163"),
    IgnoreRule("moe-router-named", r".*\.(router|gate\.wg)$", "MoE routers (Llama-4, Mixtral-style naming)"),
    IgnoreRule("shared-expert-gate", r".*\.shared_expert_gate$", "Qwen MoE shared-expert gate (1-row linear)"),
    IgnoreRule("linear-attn", r".*\.linear_attn\.(conv1d|in_proj_a|in_proj_b|in_proj_ba)$",
               "hybrid (Qwen3-Next/Qwen3.5) linear-attention conv and gating projections", "vllm#40252"),
    IgnoreRule("mamba-conv", r".*\.mixer\.conv1d$", "Mamba mixer convolution"),
    IgnoreRule("vision-tower", r"^(model\.)?(visual|vision_tower|vision_model|multi_modal_projector)\..*",
               "vision encoders and projectors: not served by the text kernels", "llm-compressor#2714"),
    IgnoreRule("mtp", r"^(model\.)?mtp\..*", "multi-token-prediction heads used for speculative decoding"),
)


def build_ignore(module_names: Iterable[str]) -> list[str]:
    """Return the ignore entries for a model whose linear-layer names are ``module_names``.

    ``lm_head`` is always first (vLLM and llm-compressor expect it even when the embeddings are tied); the
    other rules appear as ``re:`` patterns only when they match some module.
    """
    names = list(module_names)
    out = ["lm_head"]
    for rule in IGNORE_RULES[1:]:
        rx = re.compile(rule.pattern)
        if any(rx.match(n) for n in names):
            out.append("re:" + rule.pattern)
    return out


def linear_module_names(model: object) -> list[str]:
    """Names of the ``nn.Linear`` modules of a loaded torch model."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]
