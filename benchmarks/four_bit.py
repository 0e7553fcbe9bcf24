"""4-bit quality on the embedded model: the W4A16 algorithms quantkit offers, same calibration, same scoring.

For each scheme (default: RTN baseline, GPTQ, AutoRound) it quantizes the embedded SmolLM2-135M with
``quantkit.quantize`` (llm-compressor), then scores perplexity on the held-out Hamlet through transformers
(compressed-tensors decompresses on load; the same windowing as vLLM's figure), and prints wall time, peak RSS
of the quantize step and the rise over the original. This is what the ``auto`` 4-bit choice should rest on.

    .venvs/produce/bin/python benchmarks/four_bit.py [--schemes w4a16 w4a16-autoround] [--samples 32 --seq-len 256]
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
quantize("embedded", scheme, hardware="h100", output_dir=out, num_calibration_samples=n, max_seq_length=t)
wall = time.perf_counter() - t0
from quantkit.eval.perplexity import perplexity_transformers
ppl = perplexity_transformers(out)["perplexity"]
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"quantize_s": wall, "ppl": ppl, "peak_rss_mb": ru.ru_maxrss / 1024}))
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
    ap.add_argument("--schemes", nargs="+", default=["rtn", "w4a16", "w4a16-autoround"])
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
    print("| scheme | quantize s | peak RSS MB | ppl | vs original |\n|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.schemes:
            r = _run(SIDE, s, str(Path(tmp) / s), str(args.samples), str(args.seq_len))
            print(f"| {s} | {r['quantize_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['ppl']:.2f} | "
                  f"{100 * (r['ppl'] - base) / base:+.1f} % |", flush=True)
    print(f"# {datetime.now(timezone.utc):%H:%M} UTC done, load average {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
