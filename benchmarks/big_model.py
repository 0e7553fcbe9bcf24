"""Peak RSS, disk high-water mark and wall time of quantkit's big-model paths at two depths (issue 14).

Builds a random-weight Llama-3-shaped checkpoint (hidden 2048 by default, sharded safetensors) at ``--layers``
N and 2N, then quantizes each in a fresh interpreter with ``fp8-dynamic`` model-free and ``w4a16`` GPTQ
offloaded (the plan is made for an 11 GiB host, which leaves a RAM budget of 0 for weights: all on disk).
Peak RSS is the child's ``ru_maxrss``; the disk high-water mark is the largest total size of the files under
the output's parent (staging, offload folder and the published checkpoint; symlinks into the source, which
compressed-tensors' disk offload makes, not counted) sampled every 0.2 s.

    .venvs/produce/bin/python benchmarks/big_model.py --layers 4 --samples 16 --seq-len 256

The goal (issue 14): doubling the depth raises peak RSS by less than 15 % on both paths.
"""

from __future__ import annotations

import argparse
import os
import platform
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

JOBS = (("fp8-dynamic", "model-free"), ("w4a16", "offloaded"))


def _du(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                try:
                    total += os.path.getsize(p)
                except OSError:
                    pass
    return total


def measured(out_parent: Path, args: list[str]) -> dict:
    """Run one quantization, sampling the disk used under ``out_parent`` meanwhile."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _du(out_parent))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        res = run(QUANTIZE, args)
    finally:
        done.set()
        t.join()
    res["disk_peak_mb"] = max(peak[0], _du(out_parent)) / 1e6
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4, help="N: the checkpoints have N and 2N layers")
    ap.add_argument("--shard", default="300MB")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qk-big-model-") as tmp:
        for layers in (a.layers, 2 * a.layers):
            model = Path(tmp) / f"llama-{layers}l"
            subprocess.run([sys.executable, "-c", BUILD_LLAMA, str(model), str(a.hidden), str(layers), a.shard,
                            str(a.hidden * 11 // 4)],
                           check=True, capture_output=True)
            shards = sorted(model.glob("*.safetensors"))
            size = sum(p.stat().st_size for p in shards)
            for scheme, production in JOBS:
                out_parent = Path(tmp) / f"out-{layers}-{production}"
                out_parent.mkdir()
                res = measured(out_parent, [str(model), str(out_parent / "ckpt"), scheme, production,
                                            str(a.samples), str(a.seq_len)])
                rows.append((layers, size, len(shards), scheme, production, res))
                print(f"{layers} layers {scheme} {production}: {res}", flush=True)
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"random Llama hidden {a.hidden}, {a.shard} shards; calibration {a.samples} x {a.seq_len} tokens")
    print(f"{'layers':>6} {'source MB':>10} {'shards':>6} {'path':<22}{'wall s':>8}{'peak RSS MB':>12}"
          f"{'disk peak MB':>13}")
    for layers, size, n, scheme, production, res in rows:
        print(f"{layers:>6} {size / 1e6:>10.0f} {n:>6} {scheme + ' ' + production:<22}{res['wall_s']:>8.1f}"
              f"{res['peak_rss_mb']:>12.0f}{res['disk_peak_mb']:>13.0f}")
    for scheme, production in JOBS:
        small, big = (r[5]["peak_rss_mb"] for r in rows if r[3] == scheme)
        print(f"{scheme} {production}: peak RSS x{big / small:.3f} for twice the depth")


if __name__ == "__main__":
    main()
