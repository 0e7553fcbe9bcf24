"""NVFP4 for Blackwell with NVIDIA ModelOpt: FP4 weights and activations on B200/B300/GB200 tensor cores.

NVFP4 stores FP4 (E2M1) values with an FP8 scale per 16 and an FP32 global scale; Blackwell runs W4A4 on
its FP4 tensor cores, and Hopper serves the same checkpoint through Marlin (weights only). ModelOpt writes
an ``hf_quant_config.json`` that vLLM loads as ``modelopt_fp4`` (the TensorRT-LLM / SGLang ecosystem reads it
too). ModelOpt needs a CUDA GPU to quantize NVFP4; on a machine without one quantkit stops before any work
with a clear error, and this recipe exits 2. llm-compressor produces NVFP4 (compressed-tensors) on a CPU:
``--backend llmcompressor``.

    python examples/04_nvfp4_blackwell_modelopt.py --model /models/Qwen3-8B --output-dir out/     # on a GPU
    python examples/04_nvfp4_blackwell_modelopt.py --backend llmcompressor --scheme nvfp4a16 --output-dir out/

``nvfp4`` calibrates the activations' global scales (``--num-samples``); ``nvfp4a16`` keeps activations in
16 bits and needs no data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantkit import QuantkitError, UnsupportedSchemeError, quantize, validate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="Checkpoint directory, or 'embedded'.")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for the checkpoint.")
    ap.add_argument("--scheme", choices=("nvfp4", "nvfp4a16"), default="nvfp4")
    ap.add_argument("--backend", choices=("modelopt", "llmcompressor"), default="modelopt")
    ap.add_argument("--hardware", default="b200", help="Serving target: b200, b300, gb200 (`quantkit hardware`).")
    ap.add_argument("--num-samples", type=int, default=64, help="Calibration samples (nvfp4 only).")
    ap.add_argument("--seq-len", type=int, default=512, help="Tokens per calibration sample.")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing checkpoint.")
    args = ap.parse_args(argv)

    name = "smollm2-135m" if args.model == "embedded" else Path(args.model).name
    try:
        res = quantize(args.model, args.scheme, hardware=args.hardware, backend=args.backend,
                       output_dir=args.output_dir / f"{name}-{args.scheme}-{args.backend}",
                       num_calibration_samples=args.num_samples, max_seq_length=args.seq_len,
                       overwrite=args.overwrite)
    except UnsupportedSchemeError as exc:  # e.g. ModelOpt NVFP4 without CUDA: said before the model is touched
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QuantkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(res.summary())
    fmt = "hf_quant_config.json (vLLM: modelopt_fp4)" if res.backend == "modelopt" else \
        "config.json quantization_config (vLLM: compressed-tensors)"
    print(f"format: {fmt}")
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    print(f"serve it: vllm serve {res.output_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
