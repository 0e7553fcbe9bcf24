"""Peak RSS, disk high-water mark and wall time of quantkit's big-model paths at two depths (issue 14).

Builds a random-weight Llama-3-shaped checkpoint (hidden 2048 by default, sharded safetensors) at ``--layers``
N and 2N, then quantizes each in a fresh interpreter with ``fp8-dynamic`` model-free and ``w4a16`` GPTQ
offloaded (the plan is made for an 11 GiB host, which leaves a RAM budget of 0 for weights: all on disk).
Peak RSS is the child's ``ru_maxrss``; the disk high-water mark is the largest total size of the files under
the output's parent (staging, offload folder and the published checkpoint; symlinks into the source, which
compressed-tensors' disk offload makes, not counted) sampled every 0.2 s.

    .venvs/produce/bin/python benchmarks/big_model.py --layers 8 --samples 16 --seq-len 256

The goal (issue 14): doubling the depth raises peak RSS by less than 15 % on both paths.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from abtest import BUILD_LLAMA, run, side

QUANTIZE = side('''
    import quantkit
    from quantkit import hardware
    model_path, out, scheme, production, samples, seq_len = sys.argv[1:7]
    if production == "offloaded":
        # an 11 GiB host: the plan's offloaded estimate (its 512 x 2048 calibration activations: ~8 GiB at hidden
        # 2048) leaves no RAM budget for weights within 75 % of it, so every weight goes to disk
        hardware.host_memory_bytes = lambda: 11 * 2**30
    p = quantkit.plan(model_path, "h100", scheme=scheme, production=production)
    quantkit.quantize(model_path, p, output_dir=out, num_calibration_samples=int(samples) or None,
                      max_seq_length=int(seq_len) or None)
''')

#: the same FP8_DYNAMIC job as one raw ``model_free_ptq`` call (what quantkit's model-free path wraps), for the
#: overhead goal: quantkit within 3 % of it in wall time and peak RSS
RAW_MODEL_FREE = side('''
    from llmcompressor.entrypoints.model_free import model_free_ptq
    model_path, out = sys.argv[1:3]
    model_free_ptq(model_path, out, scheme="FP8_DYNAMIC", ignore=["lm_head"], max_workers=1, device="cpu")
''')

#: the floor the goal is measured above: an interpreter with torch, llm-compressor and quantkit imported
IDLE = side('''
    import torch, llmcompressor, quantkit
    from llmcompressor.entrypoints.model_free import model_free_ptq
''')

JOBS = (("fp8-dynamic", "model-free"), ("fp8-dynamic", "raw model_free_ptq"), ("w4a16", "offloaded"))


def _du(root: Path) -> int:
    """Bytes of the files under ``root``, each inode once (the model-free path hard-links its finished shards
    into the output) and symlinks not followed."""
    total, seen = 0, set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def measured(out_parent: Path, args: list[str], code: str = QUANTIZE) -> dict:
    """Run one quantization (``code``), sampling the disk used under ``out_parent`` meanwhile."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _du(out_parent))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        res = run(code, args)
    finally:
        done.set()
        t.join()
    res["disk_peak_mb"] = max(peak[0], _du(out_parent)) / 1e6
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=8, help="N: the checkpoints have N and 2N layers")
    ap.add_argument("--shard", default="300MB")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each job; the table shows medians (a shard's "
                                                         "peak RSS varies by ~100-200 MB from run to run)")
    a = ap.parse_args()
    rows = []
    largest = 0
    idle = run(IDLE, [])
    print(f"idle interpreter (torch + llm-compressor + quantkit imported): {idle}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qk-big-model-") as tmp:
        for layers in (a.layers, 2 * a.layers):
            model = Path(tmp) / f"llama-{layers}l"
            subprocess.run([sys.executable, "-c", BUILD_LLAMA, str(model), str(a.hidden), str(layers), a.shard,
                            str(a.hidden * 11 // 4)],
                           check=True, capture_output=True)
            shards = sorted(model.glob("*.safetensors"))
            largest = max(largest, max(p.stat().st_size for p in shards))
            size = sum(p.stat().st_size for p in shards)
            for scheme, production in JOBS:
                runs = []
                for i in range(a.rounds):
                    out_parent = Path(tmp) / f"out-{layers}-{production.replace(' ', '-')}-{i}"
                    out_parent.mkdir()
                    args = [str(model), str(out_parent / "ckpt"), scheme, production, str(a.samples), str(a.seq_len)]
                    runs.append(measured(out_parent, args, RAW_MODEL_FREE if production.startswith("raw") else QUANTIZE))
                    print(f"{layers} layers {scheme} {production} round {i + 1}: {runs[-1]}", flush=True)
                    shutil.rmtree(out_parent)
                res = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append((layers, size, len(shards), scheme, production, res))
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    inter = a.hidden * 11 // 4
    layer_mb = 2 * (2 * a.hidden * a.hidden + 2 * a.hidden * (a.hidden // 4) + 3 * a.hidden * inter) / 1e6
    print(f"random Llama hidden {a.hidden}, {a.shard} shards (largest {largest / 1e6:.0f} MB); one decoder layer "
          f"{layer_mb:.0f} MB bf16; calibration {a.samples} x {a.seq_len} tokens "
          f"(activations {a.samples * a.seq_len * a.hidden * 2 / 1e6:.0f} MB per cached layer input in bf16)")
    print(f"medians of {a.rounds} round(s)")
    print(f"{'layers':>6} {'source MB':>10} {'shards':>6} {'path':<32}{'wall s':>8}{'peak RSS MB':>12}"
          f"{'disk peak MB':>13}")
    for layers, size, n, scheme, production, res in rows:
        print(f"{layers:>6} {size / 1e6:>10.0f} {n:>6} {scheme + ' ' + production:<32}{res['wall_s']:>8.1f}"
              f"{res['peak_rss_mb']:>12.0f}{res['disk_peak_mb']:>13.0f}")
    print(f"idle interpreter with torch + llm-compressor imported: peak RSS {idle['peak_rss_mb']:.0f} MB")
    for scheme, production in JOBS:
        small, big = (r[5]["peak_rss_mb"] for r in rows if r[4] == production)
        print(f"{scheme} {production}: peak RSS x{big / small:.3f} for twice the depth")
    for layers in (a.layers, 2 * a.layers):
        qk, raw = ([r[5] for r in rows if r[0] == layers and r[4] == p][0] for p in ("model-free", "raw model_free_ptq"))
        print(f"{layers} layers, quantkit model-free / raw model_free_ptq: wall x{qk['wall_s'] / raw['wall_s']:.3f}, "
              f"peak RSS x{qk['peak_rss_mb'] / raw['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
