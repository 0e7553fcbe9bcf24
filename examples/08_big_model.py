"""A big model on the producers' own engines: the plan says how to build it and what that needs, before it runs.

``plan()`` reads the checkpoint's headers (nothing is loaded) and picks the production path: in memory while
the model fits this host's RAM; model-free for data-free schemes such as FP8 (llm-compressor's
``model_free_ptq``: shard by shard, never building the model, resumable after a crash); offloaded for
calibrated schemes (one decoder layer at a time, the weights beyond a RAM budget on disk); and, with
``--nproc N``, llm-compressor's distributed oneshot (N torchrun ranks, one per GPU, each calibrating on 1/N of
the samples; GPTQ and SmoothQuant + GPTQ, AWQ on GPUs). The plan prints the host RAM, GPU memory per device and
disk the path needs; a job this machine cannot hold is refused before anything loads, with what would fit.

    # the plan only: path, memory and disk for a 405B W4A16 job, before committing a node to it
    python examples/08_big_model.py --model /models/Llama-3.1-405B-Instruct --scheme w4a16 --plan-only
    # DeepSeek-V3 (bf16) to FP8 on whatever host there is: model-free, one shard at a time
    python examples/08_big_model.py --model /models/DeepSeek-V3-bf16 --scheme fp8-dynamic --output-dir out/
    # Llama-3.1-70B W4A16 GPTQ on an 8-GPU node: 8 ranks calibrate together on in-domain data
    python examples/08_big_model.py --model /models/Llama-3.1-70B-Instruct --scheme w4a16 --nproc 8 \\
        --calibration prompts.jsonl --num-samples 512 --output-dir out/

A model too big for one node to serve gets its serving layout from ``quantkit serve`` (tensor and pipeline
parallel sizes checked against the checkpoint); this recipe prints the one-node command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quantkit import plan, quantize, serve_args, validate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="Checkpoint directory (a real one is read shard by shard).")
    ap.add_argument("--scheme", default="fp8-dynamic", help="Scheme (`quantkit schemes`).")
    ap.add_argument("--hardware", default="h100", help="Serving target: h100, h200, b200, ... (`quantkit hardware`).")
    ap.add_argument("--production", default="auto", choices=("auto", "in-memory", "model-free", "offloaded"),
                    help="Production path; auto lets the plan choose from this host's RAM.")
    ap.add_argument("--nproc", type=int, default=1, help="Ranks that calibrate together (one per GPU).")
    ap.add_argument("--calibration",
                    help="In-domain calibration: .jsonl of {\"text\"} or {\"messages\"} rows, or .txt.")
    ap.add_argument("--num-samples", type=int, help="Calibration samples (default: the plan's; 512 for a real model).")
    ap.add_argument("--seq-len", type=int, help="Tokens per calibration sample (default: the plan's).")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for the checkpoint.")
    ap.add_argument("--plan-only", action="store_true", help="Print the plan and stop.")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing checkpoint.")
    args = ap.parse_args(argv)

    decided = plan(args.model, args.hardware, scheme=args.scheme, production=args.production, nproc=args.nproc)
    print(decided)  # the `produce` line: path, why, host RAM, disk, GPU memory per device; `ranks` with --nproc
    for need in decided.host_memory:
        print(f"  {need.text()}")
    if not decided.production_fits:
        print("this host cannot hold the job: quantize() would refuse it (the plan's warning says what fits)")
    if args.plan_only:
        return 0 if decided.production_fits else 1

    name = "smollm2-135m" if args.model == "embedded" else Path(args.model).name
    res = quantize(args.model, decided, output_dir=args.output_dir / f"{name}-{args.scheme}",
                   calibration=args.calibration, num_calibration_samples=args.num_samples,
                   max_seq_length=args.seq_len, overwrite=args.overwrite)
    print(res.summary())

    # headers only, as vLLM will read them: no model is loaded to check a 671B checkpoint
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    if report.ok:
        print(serve_args(res.output_dir, hardware=args.hardware).render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
