"""Probe a checkpoint in vLLM: load it, generate, time it, score it. Runs where vLLM is installed.

The result is plain JSON so the produce environment can ask the serve environment for it
(``quantkit generate PATH --json`` under the serve interpreter; see ``quantkit.serve.remote``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEFAULT_PROMPTS = (
    "The capital of France is",
    "To be, or not to be, that is",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "The largest planet in our solar system is",
    "In machine learning, quantization means",
)


def probe(path: str | Path, *, hardware: str | None = None, prompts: tuple[str, ...] = DEFAULT_PROMPTS,
          max_tokens: int = 32, perplexity: bool = True, eval_tokens: int = 4096, speed: bool = True,
          batch: int = 16, kv_cache_dtype: str | None = None, eval_data: str | None = None,
          **engine_args: Any) -> dict[str, Any]:
    """Load ``path`` with :func:`quantkit.load`, then measure it (perplexity on ``eval_data``, a .txt/.jsonl
    path, or the shipped Hamlet). Returns a JSON-serialisable dict."""
    from vllm import SamplingParams

    from quantkit.calibration import eval_source_name, eval_text
    from quantkit.eval.perplexity import perplexity_vllm
    from quantkit.progress import child_step
    from quantkit.serve.engine import load_with_plan

    text = eval_text(eval_data) if perplexity else None  # a bad file fails before vLLM starts
    child_step("starting the vLLM engine: reading the checkpoint, repacking weights for this device's kernels, "
               "sizing the KV cache")
    loaded = load_with_plan(path, hardware, kv_cache_dtype=kv_cache_dtype, **engine_args)
    llm, plan = loaded.llm, loaded.plan
    child_step(f"engine ready in {loaded.load_s:.0f} s; greedy generation of {len(prompts)} prompts x "
               f"{max_tokens} tokens")
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    outs = llm.generate(list(prompts), greedy, use_tqdm=False)
    result: dict[str, Any] = {
        "path": str(path),
        "quant_method": plan.quant_method,
        "kv_cache_dtype": plan.kv_cache_dtype,
        "kv_reason": plan.kv_reason,
        "load_s": round(loaded.load_s, 3),
        "generations": [{"prompt": p, "text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids)}
                        for p, o in zip(prompts, outs)],
    }
    try:
        cfg = llm.llm_engine.vllm_config.cache_config
        result["num_gpu_blocks"] = cfg.num_gpu_blocks
        result["block_size"] = cfg.block_size
    except AttributeError:
        pass
    if speed:
        child_step(f"decode speed at batch 1 and {batch} (64 tokens each)")
        fixed = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
        for label, n in (("bs1", 1), (f"bs{batch}", batch)):
            t0 = time.perf_counter()
            o = llm.generate([prompts[0]] * n, fixed, use_tqdm=False)
            dt = time.perf_counter() - t0
            toks = sum(len(x.outputs[0].token_ids) for x in o)
            result[f"tokens_per_s_{label}"] = round(toks / dt, 2)
    if perplexity:
        child_step(f"perplexity over {eval_tokens:,} held-out tokens")
        result["perplexity"] = perplexity_vllm(llm, text, max_tokens=eval_tokens)
        result["perplexity"]["source"] = eval_source_name(eval_data)
    return result


def parameter_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters, as vLLM holds them (for ``llm.apply_model``; a module-level
    function so it pickles by reference into vLLM's worker process)."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))
