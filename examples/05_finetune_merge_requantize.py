"""Fine-tune, merge, re-quantize: the production path from a LoRA fine-tune to a fast vLLM checkpoint.

Adapters trained with Unsloth or PEFT (often on an NF4 4-bit base) are not what vLLM serves fast. Merge them
into a 16-bit checkpoint -- Unsloth: ``model.save_pretrained_merged("merged", tokenizer,
save_method="merged_16bit")``; PEFT: ``model.merge_and_unload().save_pretrained("merged")`` -- then quantize
that merged checkpoint for the GPU it will run on: W4A16 (GPTQ) for memory-bound decode, FP8 on Hopper.

    python examples/05_finetune_merge_requantize.py --merged /ft/merged_16bit --scheme w4a16 --output-dir out/
    python examples/05_finetune_merge_requantize.py --scheme fp8-dynamic --output-dir out/     # simulated merge

Without ``--merged`` the recipe simulates one: it adds a rank-8 LoRA-shaped delta (B @ A, seeded) to every
q_proj and v_proj of ``--model`` and saves the result in bf16, as ``save_pretrained_merged`` does. Calibrate
4-bit schemes on the fine-tuning domain (``--calibration your_train.jsonl``): the merged weights moved toward
it. vllm#39662: dynamic FP8 of a LoRA-merged model gave non-deterministic output on B200; this recipe picks
``fp8-static`` (calibrated activation scales) when you ask for FP8 on Blackwell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantkit import get_hardware, quantize, validate

RANK, ALPHA = 8, 16


def simulate_merged_checkpoint(base: str, out: Path, seed: int = 0) -> Path:
    """Write ``base`` plus a LoRA-shaped delta on q_proj/v_proj as a merged bf16 checkpoint (no training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantkit import embedded_model_path

    src = embedded_model_path() if base == "embedded" else Path(base)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("q_proj", "v_proj")) and isinstance(module, torch.nn.Linear):
                w = module.weight
                a = torch.randn(RANK, w.shape[1], generator=gen) / w.shape[1] ** 0.5
                b = torch.randn(w.shape[0], RANK, generator=gen) * 0.01
                w += ((b @ a) * (ALPHA / RANK)).to(w.dtype)  # what merge_and_unload() adds: scale * B @ A
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merged", type=Path, default=None, help="Your merged 16-bit checkpoint (skip the simulation).")
    ap.add_argument("--model", default="embedded", help="Base model for the simulated merge.")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for what this recipe writes.")
    ap.add_argument("--scheme", default="w4a16", help="w4a16 (GPTQ), fp8-dynamic, ... (`quantkit schemes`).")
    ap.add_argument("--hardware", default="h100", help="Serving target (`quantkit hardware`).")
    ap.add_argument("--calibration", type=Path, default=None, help="Fine-tuning-domain .jsonl/.txt calibration data.")
    ap.add_argument("--num-samples", type=int, default=64, help="Calibration samples (calibrated schemes).")
    ap.add_argument("--seq-len", type=int, default=512, help="Tokens per calibration sample.")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing quantized checkpoint.")
    args = ap.parse_args(argv)

    merged = args.merged
    if merged is None:
        merged = args.output_dir / "merged-16bit"
        if not (merged / "config.json").is_file():
            simulate_merged_checkpoint(args.model, merged)
            print(f"simulated a merged 16-bit checkpoint at {merged}")

    scheme = args.scheme
    if scheme == "fp8-dynamic" and get_hardware(args.hardware).arch == "blackwell":
        scheme = "fp8-static"
        print("note: fp8-static instead of fp8-dynamic for a LoRA-merged model on Blackwell (vllm#39662)")
    res = quantize(merged, scheme, hardware=args.hardware, output_dir=args.output_dir / f"{merged.name}-{scheme}",
                   calibration=args.calibration, num_calibration_samples=args.num_samples,
                   max_seq_length=args.seq_len, overwrite=args.overwrite)
    print(res.summary())
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    print(f"serve it: vllm serve {res.output_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
