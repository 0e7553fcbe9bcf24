"""FP8 on Hopper: the default for H100/H200 -- data-free, near-lossless, half the weight memory.

FP8 E4M3 weights per output channel, activations quantized per token at run time (``fp8-dynamic``). No
calibration data, so it takes seconds plus the time to load and save the model. vLLM runs it on Hopper's FP8
tensor cores (CUTLASS scaled-mm); Ada (L40S, L4) too; Ampere falls back to a Marlin W8A16 kernel.

    python examples/01_fp8_hopper.py --model /models/Llama-3.1-8B-Instruct --output-dir out/
    python examples/01_fp8_hopper.py --output-dir out/            # the embedded SmolLM2-135M

Then ``quantkit load out/<name>-fp8-dynamic --hardware h100`` prints the exact ``vllm serve`` command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantkit import quantize, validate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="Checkpoint directory, or 'embedded'.")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for the checkpoint.")
    ap.add_argument("--hardware", default="h100", help="Serving target: h100, h200, l40s, ... (`quantkit hardware`).")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing checkpoint.")
    args = ap.parse_args(argv)

    name = "smollm2-135m" if args.model == "embedded" else Path(args.model).name
    res = quantize(args.model, "fp8-dynamic", hardware=args.hardware,
                   output_dir=args.output_dir / f"{name}-fp8-dynamic", overwrite=args.overwrite)
    print(res.summary())  # what was written, size, time, what stayed 16-bit

    # quantize() already refused anything with an error finding; validating again is what a CI job does
    # with a checkpoint it did not make (headers only, no GPU, well under a second).
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    print(f"serve it: vllm serve {res.output_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
