"""The A/B harness the overhead benchmarks share: each side is a Python snippet run in a fresh interpreter
(so its peak RSS is its own), the sides alternate A/B, B/A over N rounds, and a table of medians and ratios
is printed with the machine it ran on.

A side's snippet is wrapped by ``side()``: it gets ``t0`` at interpreter start and ends by printing one JSON
line with wall seconds, CPU seconds (user + system: the steadier figure on a shared machine) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

METRICS = (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MB"))

_HEAD = "import json, resource, sys, time\nt0 = time.perf_counter()\n"
_TAIL = ('ru = resource.getrusage(resource.RUSAGE_SELF)\n'
         'print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,\n'
         '                  "peak_rss_mb": ru.ru_maxrss / 1024}))\n')


def side(body: str) -> str:
    """A side's code: ``body`` (dedented) between the timer start and the JSON line of measurements."""
    return _HEAD + textwrap.dedent(body).strip("\n") + "\n" + _TAIL


def parse_args(doc: str, default_scheme: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """The options every overhead benchmark takes (scheme, rounds, calibration budget), plus ``extra``'s."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", default=default_scheme)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=32, help="calibration samples (calibrated schemes)")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per calibration sample")
    if extra:
        extra(ap)
    return ap.parse_args()


def run(code: str, args: list[str]) -> dict:
    """Run one side in a fresh interpreter and return its measurements; exit with its stderr if it fails."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"benchmark side failed:\n{p.stderr[-3000:]}")
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])


def alternate(rounds: int, raw: Callable[[str], tuple[str, list[str]]],
              quantkit: Callable[[str], tuple[str, list[str]]], workdir: str) -> tuple[list[dict], list[dict]]:
    """Run ``rounds`` rounds, raw first in even rounds and quantkit first in odd ones. Each callable takes the
    side's output directory and returns (code, argv)."""
    results: dict[str, list[dict]] = {"raw": [], "qk": []}
    sides = {"raw": raw, "qk": quantkit}
    for i in range(rounds):
        for name in (("raw", "qk") if i % 2 == 0 else ("qk", "raw")):
            code, args = sides[name](f"{workdir}/{name}-{i}")
            results[name].append(run(code, args))
            print(f"round {i + 1} {name}: {results[name][-1]}", flush=True)
    return results["raw"], results["qk"]


def report(title: str, raw_label: str, raw: list[dict], qk: list[dict]) -> None:
    """Print the machine, the title and the medians with quantkit / raw ratios."""
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(title)
    print(f"{'':12}{raw_label:>14}{'quantkit':>12}{'ratio':>8}")
    for key, label in METRICS:
        r, q = (statistics.median(x[key] for x in xs) for xs in (raw, qk))
        print(f"{label:12}{r:14.2f}{q:12.2f}{q / r:8.3f}")


#: ``python -c BUILD_LLAMA OUT HIDDEN LAYERS SHARD INTERMEDIATE``: a random-weight Llama (bf16, the embedded
#: tokenizer, 64-wide heads, 4 query heads per KV head) saved in shards of SHARD
BUILD_LLAMA = '''
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from quantkit.models.embedded import embedded_model_path
out, hidden, layers, shard, inter = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
tok = AutoTokenizer.from_pretrained(embedded_model_path())
cfg = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter,
                           num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256,
                           tie_word_embeddings=False)
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(out, max_shard_size=shard)
tok.save_pretrained(out)
'''
