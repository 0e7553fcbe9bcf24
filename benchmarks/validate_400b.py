"""Validate a synthetic 400B-parameter checkpoint: how long it takes and how many tensor bytes it reads.

Builds header-only checkpoints with the real tensor names, dtypes and shapes of large models, split into
100 safetensors shards with an index (the data regions are sparse holes: no disk used), then times
``quantkit.validate`` on them:

- ``llama-405b-fp8``: Llama-3.1-405B, compressed-tensors FP8_DYNAMIC as llm-compressor writes it;
- ``qwen3moe-400b-fp8``: a Qwen3-MoE layout (94 layers x 128 experts, per-expert tensors) scaled to
  ~400B, FP8_DYNAMIC: 36,000 quantized linear layers, ~73,000 tensors of headers;
- ``qwen3moe-400b-nvfp4``: the same model in NVFP4 W4A4 (146,000 tensors); the only case that reads tensor
  data: the 4-byte global scales of q/k/v and of each expert's w1/w3 pair (rule ``nvfp4-global-scales``).

Usage: ``python benchmarks/validate_400b.py [--out DIR] [--runs 5] [--keep]``. Prints a Markdown table and
the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ("llama-405b-fp8", "qwen3moe-400b-fp8", "qwen3moe-400b-nvfp4")


def _synthetic():
    spec = importlib.util.spec_from_file_location("synthetic_checkpoints", REPO / "tests" / "validation" / "synthetic_checkpoints.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def qwen3_moe_400b(S):  # noqa: N803 - the synthetic module
    """Qwen3-235B-A22B's layout (hidden 4096, 64 heads / 4 KV heads, 128 experts) with expert FFN 2688."""
    layers, experts, hidden, inter = 94, 128, 4096, 2688
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
           "num_experts": experts, "num_experts_per_tok": 8, "moe_intermediate_size": inter,
           "vocab_size": 151936, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    t = {"model.embed_tokens.weight": ("BF16", (151936, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = ("BF16", (hidden,))
        S._attn(t, f"{p}.self_attn", hidden, 64, 4, 128)
        t[f"{p}.mlp.gate.weight"] = ("BF16", (experts, hidden))
        for e in range(experts):
            S._mlp(t, f"{p}.mlp.experts.{e}", hidden, inter)
        t[f"{p}.post_attention_layernorm.weight"] = ("BF16", (hidden,))
    t["model.norm.weight"] = ("BF16", (hidden,))
    t["lm_head.weight"] = ("BF16", (151936, hidden))
    return cfg, t


def params(tensors) -> float:
    n = 0
    for name, (dtype, shape) in tensors.items():
        size = 1
        for d in shape:
            size *= d
        n += size * (2 if name.endswith("weight_packed") and dtype == "U8" else 1)
    return n / 1e9


def build(S, out: Path, case: str) -> tuple[Path, float, float]:
    ignore = ["lm_head"] if case.startswith("llama") else ["lm_head", r"re:.*\.mlp\.gate$"]
    if case == "llama-405b-fp8":
        arch, scheme = S.llama_405b(), "ct-fp8-dynamic"
    elif case == "qwen3moe-400b-fp8":
        arch, scheme = qwen3_moe_400b(S), "ct-fp8-dynamic"
    else:
        arch, scheme = qwen3_moe_400b(S), "ct-nvfp4"
    t0 = time.perf_counter()
    ckpt = S.ct_checkpoint(out / case, arch, scheme, ignore, shards=100)
    return ckpt, time.perf_counter() - t0, params(arch[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where to build (default: a temp dir, removed after)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the built checkpoints")
    args = ap.parse_args()
    os.environ.setdefault("QUANTKIT_VLLM_REGISTRY", "off")  # time the validator, not reading vLLM's source
    t_import = time.perf_counter()
    from quantkit.validation import validate

    t_import = time.perf_counter() - t_import
    S = _synthetic()  # noqa: N806
    root = args.out or Path(tempfile.mkdtemp(prefix="qk-400b-"))
    rows = []
    try:
        for case in CASES:
            ckpt, built, n_params = build(S, root, case)
            shards = sorted(ckpt.glob("*.safetensors"))
            apparent = sum(p.stat().st_size for p in shards)
            on_disk = sum(p.stat().st_blocks * 512 for p in shards)
            times, cpu, report = [], [], None
            for _ in range(args.runs):
                t0, c0 = time.perf_counter(), time.process_time()
                report = validate(ckpt, hardware="b200")
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            assert report is not None
            rows.append({
                "case": case, "params_b": n_params, "shards": len(shards), "tensors": report.stats["tensors"],
                "header_mb": report.stats["header_bytes_read"] / 2**20, "apparent_tb": apparent / 1e12,
                "disk_mb": on_disk / 2**20, "build_s": built, "first_s": times[0],
                "median_s": statistics.median(times), "cpu_s": statistics.median(cpu),
                "tensor_bytes": report.stats["tensor_bytes_read"],
                "errors": len(report.errors), "warnings": len(report.warnings)})
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    cpu = _cpu_name()
    print(f"quantkit validate on synthetic 400B checkpoints ({datetime.date.today().isoformat()}; {cpu}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}; "
          f"load average {os.getloadavg()[0]:.1f}; import quantkit.validation {t_import * 1000:.0f} ms; "
          f"hardware=b200; median of {args.runs} runs)\n")
    print("| checkpoint | params | shards | tensors | headers read | size on disk (apparent) | first run | "
          "median wall | median CPU | tensor bytes read | findings |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['params_b']:.0f}B | {r['shards']} | {r['tensors']:,} | {r['header_mb']:.1f} MB | "
              f"{r['disk_mb']:.0f} MB ({r['apparent_tb']:.2f} TB) | {r['first_s']:.3f} s | {r['median_s']:.3f} s | "
              f"{r['cpu_s']:.3f} s | "
              f"{r['tensor_bytes']:,} | {r['errors']} errors, {r['warnings']} warnings |")
    print("\nwall: elapsed time of validate(); CPU: its user+system time (what it costs without other load).")
    slow = [r for r in rows if r["median_s"] >= 1.0]
    if slow:
        print(f"\nover the 1 s budget on this machine: {', '.join(r['case'] for r in slow)} "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if any(r["tensor_bytes"] for r in rows if "nvfp4" not in r["case"]):
        sys.exit("a non-NVFP4 checkpoint read tensor bytes")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
