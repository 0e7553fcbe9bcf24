#!/usr/bin/env python3
"""Prove quantkit's checkpoints on a real GPU: which vLLM kernel serves each, load time, decode speed.

Given a CUDA GPU with vLLM installed (see docs/gpu.md and shared/gpu/RECIPE.md for the lent H100), this
script builds a model with realistic dimensions (Llama-3.2-1B shape, random weights: speed does not depend
on the values), runs ``quantkit.quantize`` for each scheme, validates the result, then loads each checkpoint
with ``quantkit.load(hardware=...)`` in a fresh subprocess and records:

- the linear kernel vLLM reports (Marlin / Machete / CUTLASS ...), parsed from its log;
- the KV-cache dtype ``load()`` chose, and vLLM's KV capacity in tokens;
- load time, decode tokens/s at batch 1 and batch 64 (128 prompt tokens, 256 new tokens, median of N);
- bf16 with FP8 KV cache on and off.

    PRODUCE_PYTHONPATH=/tmp/prod SERVE_PYTHONPATH=/tmp/vllm python3 scripts/gpu_check.py \
        --tokenizer .gpu/tokenizer --out $OUT/gpu_check.md --hardware h100

Producers (llm-compressor, ModelOpt) and vLLM pin different compressed-tensors versions, so quantizing and
serving use different ``PYTHONPATH`` values (``--produce-pythonpath`` / ``--serve-pythonpath``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (label, scheme, backend, kv_cache_dtype for load)
RUNS: tuple[tuple[str, str | None, str | None, str | None], ...] = (
    ("bf16", None, None, None),
    ("bf16 + FP8 KV", None, None, "fp8"),
    ("fp8-dynamic (llm-compressor)", "fp8-dynamic", "llmcompressor", None),
    ("w4a16 GPTQ (llm-compressor)", "w4a16", "llmcompressor", None),
    ("w8a8-int8 (llm-compressor)", "w8a8-int8", "llmcompressor", None),
    ("nvfp4a16 (llm-compressor)", "nvfp4a16", "llmcompressor", None),
    ("fp8-dynamic (ModelOpt)", "fp8-dynamic", "modelopt", None),
)

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True)

KERNEL_RX = re.compile(r"\b(\w+(?:LinearKernel|LinearMethod|ScaledMM\w*))\b")
KV_TOKENS_RX = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")


def parse_kernels(log: str) -> list[str]:
    """Kernel / method class names vLLM names in its log, in first-seen order."""
    seen: list[str] = []
    for m in KERNEL_RX.finditer(log):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def parse_kv_tokens(log: str) -> int | None:
    m = KV_TOKENS_RX.search(log)
    return int(m.group(1).replace(",", "")) if m else None


def render_table(rows: list[dict], device: str, date: str) -> str:
    out = [f"GPU check on {device}, {date} (Llama-3.2-1B shape, random weights, 128 in / 256 out, median)", "",
           "| checkpoint | linear kernel (vLLM log) | KV dtype | KV tokens | load s | tok/s bs1 | tok/s bs64 | validator |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['label']} | failed: {r['error'][:120]} | | | | | | |")
            continue
        out.append(f"| {r['label']} | {', '.join(r.get('kernels', [])[:2]) or '-'} | {r.get('kv_cache_dtype', '-')} "
                   f"| {r.get('kv_tokens') or '-'} | {r.get('load_s', 0):.1f} | {r.get('bs1', 0):.0f} "
                   f"| {r.get('bs64', 0):.0f} | {r.get('validator', '-')} |")
    return "\n".join(out) + "\n"


SERVE_CODE = r'''
import json, statistics, sys, time
from quantkit import load
from vllm import SamplingParams
path, hardware, kv, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if __name__ == "__main__":
    kw = {} if kv == "none" else {"kv_cache_dtype": kv}
    llm = load(path, hardware, max_model_len=1024, gpu_memory_utilization=0.85, **kw)
    prompt = {"prompt_token_ids": list(range(1000, 1128))}
    sp = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
    res = {"load_s": llm.quantkit_load_s, "kv_cache_dtype": llm.quantkit_plan.kv_cache_dtype}
    llm.generate([prompt] * 4, sp, use_tqdm=False)  # warm-up
    for n in (1, 64):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter(); o = llm.generate([prompt] * n, sp, use_tqdm=False)
            times.append(sum(len(x.outputs[0].token_ids) for x in o) / (time.perf_counter() - t0))
        res[f"bs{n}"] = statistics.median(times)
    print("RESULT " + json.dumps(res))
'''


def build_model(root: Path, tokenizer: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = root / "llama-1b-shape"
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = LlamaConfig(vocab_size=len(tok), torch_dtype="bfloat16", **LLAMA_1B)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, required=True, help="A tokenizer directory (e.g. the embedded one).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/quantkit-gpu-check"))
    ap.add_argument("--hardware", default="h100")
    ap.add_argument("--out", type=Path, default=None, help="Write the Markdown table here too.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="Labels (substring match) to run.")
    ap.add_argument("--produce-pythonpath", default=os.environ.get("PRODUCE_PYTHONPATH", ""))
    ap.add_argument("--serve-pythonpath", default=os.environ.get("SERVE_PYTHONPATH", ""))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    src = str(REPO / "src")
    produce_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, a.produce_pythonpath) if p))
    serve_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, a.serve_pythonpath) if p),
                     VLLM_USE_FLASHINFER_SAMPLER="0")
    model = a.work / "llama-1b-shape"
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, __file__, "--_build", str(a.work), str(a.tokenizer)], env=produce_env,
                       check=True)
    rows = []
    for label, scheme, backend, kv in RUNS:
        if a.only and not any(o in label for o in a.only):
            continue
        row: dict = {"label": label}
        path = model
        if scheme is not None:
            path = a.work / f"{scheme}-{backend}"
            code = (f"import quantkit, json; r = quantkit.quantize({str(model)!r}, {scheme!r}, hardware={a.hardware!r}, "
                    f"backend={backend!r}, output_dir={str(path)!r}, overwrite=True, num_calibration_samples=64, "
                    f"max_seq_length=512); print('RESULT ' + json.dumps(r.to_dict(), default=str))")
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code], env=produce_env, capture_output=True, text=True)
            if p.returncode:
                row["error"] = "quantize: " + (p.stderr.strip().splitlines() or ["?"])[-1]
                rows.append(row)
                continue
            q = json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0])
            row["quantize_s"] = time.perf_counter() - t0
            row["validator"] = "ok" if not [f for f in q["findings"] if f.get("severity") == "error"] else "errors"
        p = subprocess.run([sys.executable, "-c", SERVE_CODE, str(path), a.hardware, kv or "none", str(a.repeats)],
                           env=serve_env, capture_output=True, text=True)
        log = p.stdout + p.stderr
        row["kernels"] = parse_kernels(log)
        row["kv_tokens"] = parse_kv_tokens(log)
        if p.returncode or "RESULT " not in p.stdout:
            row["error"] = "load: " + (p.stderr.strip().splitlines() or ["?"])[-1]
        else:
            row.update(json.loads(p.stdout.split("RESULT ", 1)[1].splitlines()[0]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() or "unknown GPU"
    table = render_table(rows, dev, time.strftime("%Y-%m-%d"))
    print(table)
    if a.out:
        a.out.write_text(table)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_build":
        build_model(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
