"""``quantkit validate``: exit codes 0/1/2, ``--json`` on stdout only, one-line read errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_checkpoints as S

from quantkit.cli import main

GOOD_IGNORE = ["lm_head", r"re:.*\.mlp\.gate$"]


@pytest.fixture
def good(tmp_path) -> Path:
    return S.ct_checkpoint(tmp_path / "good", S.qwen3_moe(), "ct-fp8-dynamic", GOOD_IGNORE)


@pytest.fixture
def bad(tmp_path) -> Path:
    return S.ct_checkpoint(tmp_path / "bad", S.qwen3_moe(), "ct-fp8-dynamic", ["lm_head"])  # quantized router


def test_exit_0_and_human_output(good, capsys):
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 error(s)" in out and "0 tensor bytes" in out


def test_exit_0_with_warnings(good, capsys):
    assert main(["validate", str(good), "--hardware", "h100"]) == 0  # FP8 on H100: native, no finding
    assert main(["validate", str(good), "--hardware", "a100"]) == 0  # Marlin W8A16 fallback: a warning
    assert "warning [hardware-capability]" in capsys.readouterr().out


def test_exit_1_with_errors(bad, capsys):
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "error [keep-16bit]" in out and "fix:" in out and "FAILED" in out


def test_json_is_the_only_stdout(bad, capsys):
    assert main(["validate", str(bad), "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert set(doc) == {"ok", "quant_method", "findings"} and doc["ok"] is False
    assert doc["quant_method"] == "compressed-tensors"
    assert {f["rule"] for f in doc["findings"]} >= {"keep-16bit"}
    assert all(set(f) == {"rule", "severity", "module", "message", "fix"} for f in doc["findings"])


@pytest.mark.parametrize("make", [
    lambda p: p / "missing",
    lambda p: p,  # a directory without config.json
    lambda p: (p / "config.json").write_text("{not json") and p,
])
def test_exit_2_unreadable_with_one_line(tmp_path, capsys, make):
    target = make(tmp_path)
    assert main(["validate", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: [QK006]") and "\n" not in err


def test_exit_2_corrupt_header_json_mode(good, capsys):
    shard = good / "model.safetensors"
    with shard.open("rb") as fh:
        head = fh.read(20)
    shard.write_bytes(head)
    assert main(["validate", str(good), "--json"]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc == {"ok": False, "quant_method": None, "findings": [doc["findings"][0]]}
    assert doc["findings"][0]["rule"] == "QK006"
    assert captured.err.count("\n") == 1


def test_exit_2_unknown_hardware_lists_valid_names(good, capsys):
    assert main(["validate", str(good), "--hardware", "h1000"]) == 2
    err = capsys.readouterr().err
    assert "h100" in err and "b200" in err and err.count("\n") == 1


def test_tensor_parallel_and_vllm_version_options(good):
    assert main(["validate", str(good), "--tp", "3"]) == 1  # 2048 in_features cannot be split three ways
    assert main(["validate", str(good), "--vllm-version", "0.24.0"]) == 0
    assert main(["validate", str(good), "--vllm-version", "next"]) == 2


def test_real_command_line(bad):
    """The installed entry point, end to end in a fresh process (exit code and JSON on stdout)."""
    proc = subprocess.run([sys.executable, "-m", "quantkit", "validate", str(bad), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["ok"] is False
