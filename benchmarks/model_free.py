"""Wall time and peak RSS of quantkit's two production paths on the same multi-shard model (issue 14).

``in-memory`` loads the whole model with transformers and runs llm-compressor's ``oneshot``; ``model-free``
runs llm-compressor's ``model_free_ptq`` shard by shard without building the model. Both write the same
tensors (tests/backends/test_model_free.py); this prints what each costs. Each side runs in a fresh
interpreter (its peak RSS is its own), alternating A/B, B/A, and the medians are printed with the machine.

    .venvs/produce/bin/python benchmarks/model_free.py --scheme fp8-dynamic --rounds 3

The model is a random Llama (hidden 768, 12 layers, the embedded model's 49k vocabulary: ~160M parameters,
~320 MB in bf16) saved in 50 MB shards; ``--hidden``/``--layers``/``--shard`` change it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from abtest import BUILD_LLAMA, METRICS, run, side

PATH = side('''
    import quantkit
    model_path, out, scheme, production = sys.argv[1:5]
    quantkit.quantize(model_path, scheme, hardware="h100", output_dir=out, production=production)
''')

SIDES = ("in-memory", "model-free")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", default="fp8-dynamic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--shard", default="50MB")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qk-model-free-") as tmp:
        model = Path(tmp) / "model"
        subprocess.run([sys.executable, "-c", BUILD_LLAMA, str(model), str(a.hidden), str(a.layers), a.shard,
                        str(a.hidden * 8 // 3 // 64 * 64)],
                       check=True, capture_output=True)
        shards = sorted(model.glob("*.safetensors"))
        size = sum(p.stat().st_size for p in shards)
        results: dict[str, list[dict]] = {s: [] for s in SIDES}
        for i in range(a.rounds):
            for name in (SIDES if i % 2 == 0 else SIDES[::-1]):
                results[name].append(run(PATH, [str(model), f"{tmp}/{name}-{i}", a.scheme, name]))
                print(f"round {i + 1} {name}: {results[name][-1]}", flush=True)
        print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, load average "
              f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
        print(f"{a.scheme}: random Llama hidden {a.hidden}, {a.layers} layers, {size / 1e6:.0f} MB in {len(shards)} "
              f"shards (largest {max(p.stat().st_size for p in shards) / 1e6:.0f} MB); medians of {a.rounds} rounds")
        print(f"{'':14}{'in-memory':>12}{'model-free':>12}{'ratio':>8}")
        for key, label in METRICS:
            m, f = (statistics.median(x[key] for x in results[s]) for s in SIDES)
            print(f"{label:14}{m:12.2f}{f:12.2f}{f / m:8.3f}")


if __name__ == "__main__":
    main()
