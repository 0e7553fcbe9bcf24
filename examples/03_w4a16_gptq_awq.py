"""W4A16 with GPTQ or AWQ, calibrated on in-domain data: 4-bit weights for memory-bound decode.

INT4 weights in groups, 16-bit activations: about 4x smaller weights, served by vLLM's Marlin (Machete on
Hopper) kernels on Ampere and newer. GPTQ (``w4a16``, symmetric) and AWQ (``w4a16-awq``, asymmetric) both
decide how to round from calibration activations, so the calibration text should look like the traffic the
model will serve: code for a coding assistant, tickets for a support bot. Generic web text lets the algorithm
protect the wrong weights.

    python examples/03_w4a16_gptq_awq.py --model /models/my-coder --calibration prompts.jsonl --output-dir out/
    python examples/03_w4a16_gptq_awq.py --algorithm awq --output-dir out/

``--calibration`` takes a .jsonl file of {"text": ...} rows (or a .txt file); without it this recipe uses
an in-domain set it builds on the spot: Python's standard-library documentation, i.e. the domain of a Python
coding assistant. Use a few hundred samples of 512+ tokens for a real model (``--num-samples 256``). The
group size is chosen per model: 128 where every layer allows it, else the largest that divides every layer
(SmolLM2's 576-wide layers get 64). AWQ on a CPU takes minutes even for a 135M model; use a GPU.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from quantkit import quantize, validate

SCHEME = {"gptq": "w4a16", "awq": "w4a16-awq"}

#: standard-library modules whose documentation stands in for a Python coding assistant's traffic
DOMAIN_MODULES = ("json", "pathlib", "collections", "itertools", "functools", "re", "subprocess", "datetime",
                  "dataclasses", "argparse", "logging", "typing", "textwrap", "csv", "shutil", "statistics")


def python_docs_corpus() -> list[str]:
    """One text per module: its docstring and those of its public functions and classes."""
    import importlib

    texts = []
    for name in DOMAIN_MODULES:
        mod = importlib.import_module(name)
        parts = [inspect.getdoc(mod) or ""]
        for attr, obj in sorted(vars(mod).items()):
            if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(f"{name}.{attr}: {doc}")
        texts.append("\n\n".join(p for p in parts if p))
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="Checkpoint directory, or 'embedded'.")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for the checkpoint.")
    ap.add_argument("--algorithm", choices=sorted(SCHEME), default="gptq", help="GPTQ (w4a16) or AWQ (w4a16-awq).")
    ap.add_argument("--hardware", default="h100", help="Serving target: a100, h100, l40s, ... (`quantkit hardware`).")
    ap.add_argument("--calibration", type=Path, default=None, help="Your in-domain .jsonl/.txt calibration data.")
    ap.add_argument("--num-samples", type=int, default=64, help="Calibration samples.")
    ap.add_argument("--seq-len", type=int, default=512, help="Tokens per calibration sample.")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing checkpoint.")
    args = ap.parse_args(argv)

    calibration = args.calibration if args.calibration is not None else python_docs_corpus()
    scheme = SCHEME[args.algorithm]
    name = "smollm2-135m" if args.model == "embedded" else Path(args.model).name
    res = quantize(args.model, scheme, hardware=args.hardware, output_dir=args.output_dir / f"{name}-{scheme}",
                   calibration=calibration, num_calibration_samples=args.num_samples, max_seq_length=args.seq_len,
                   overwrite=args.overwrite)
    print(f"wrote {res.output_dir}: {scheme}, group size {res.group_size}, "
          f"{res.num_calibration_samples} calibration samples, {res.quantized_bytes / 1e6:.1f} MB "
          f"({res.compression_ratio or 0:.2f}x smaller) in {res.timings['total_s']:.1f} s")
    for note in res.notes:
        print(f"note: {note}")
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    for f in report.findings:
        print(f"  {f}")
    print(f"serve it: vllm serve {res.output_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
