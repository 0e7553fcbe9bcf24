"""Greedy generation through transformers: the fallback where vLLM cannot run a format on this machine
(e.g. W4A16 on a CPU without AVX-512), so a report still shows what the quantized model says."""

from __future__ import annotations

from typing import Any


def greedy_of_model(model: Any, tokenizer: Any, prompts: list[str] | tuple[str, ...], *, max_tokens: int = 32
                    ) -> list[dict[str, Any]]:
    """``[{"prompt", "text", "token_ids"}]`` for each prompt, greedy, like ``quantkit generate --json``; the
    ids exclude the prompt. A compressed-tensors model decompressed on load runs with 16-bit activations."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = tokenizer(p, return_tensors="pt")
            gen = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
            new = gen[0, ids["input_ids"].shape[1]:].tolist()
            out.append({"prompt": p, "text": tokenizer.decode(new, skip_special_tokens=True), "token_ids": new})
    return out
