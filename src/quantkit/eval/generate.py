"""Greedy generation through transformers: the fallback where vLLM cannot run a format on this machine
(e.g. W4A16 on a CPU without AVX-512), so a report still shows what the quantized model says."""

from __future__ import annotations

from typing import Any


def greedy_transformers(model_path: str, prompts: list[str] | tuple[str, ...], *, max_tokens: int = 32
                        ) -> list[dict[str, Any]]:
    """``[{"prompt", "text", "token_ids"}]`` for each prompt, greedy, like ``quantkit generate --json``.

    compressed-tensors checkpoints are decompressed on load, so this measures the stored weights with 16-bit
    activations; the generated ids exclude the prompt.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16)
    model.eval()
    out = []
    with torch.inference_mode():
        for p in prompts:
            ids = tok(p, return_tensors="pt")
            gen = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
            new = gen[0, ids["input_ids"].shape[1]:].tolist()
            out.append({"prompt": p, "text": tok.decode(new, skip_special_tokens=True), "token_ids": new})
    return out
