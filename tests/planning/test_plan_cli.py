"""``quantkit plan`` on the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from quantkit.cli import main
from quantkit.planning.rules import SELECTION_RULES


def test_plan_prints_the_rule_reasons_and_alternatives(embedded_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(embedded_path), "--hardware", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "w8a8-int8 via llmcompressor" in out and "rule cpu-int8" in out
    assert "Why:" in out and "Alternatives:" in out and "Memory" in out


def test_plan_json(arch_dir: Callable[[str], Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(arch_dir("qwen3-moe")), "-H", "h100", "--workload", "memory", "--json",
                 "--max-model-len", "8192", "-c", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheme"] == "w4a16" and data["hardware"] == "h100"
    assert data["ignore"] == ["lm_head", r"re:.*\.mlp\.gate$"]
    assert data["vllm_args"]["max_model_len"] == 8192 and data["vllm_args"]["max_num_seqs"] == 4


def test_plan_bad_input_exits_2(embedded_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(embedded_path), "-H", "v100"]) == 2
    err = capsys.readouterr().err
    assert "Valid hardwares" in err and "rtx5090" in err
    assert main(["plan", str(embedded_path), "-H", "cpu", "--workload", "fast"]) == 2
    assert main(["plan", str(embedded_path), "-H", "cpu", "--concurrency", "0"]) == 2


def test_plan_fp8_kv_on_a_cpu_without_avx512_exits_2(embedded_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(embedded_path), "-H", "cpu", "--kv-cache", "fp8"]) == 2
    assert "AVX-512" in capsys.readouterr().err


def test_rules_listing(capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", "--rules"]) == 0
    out = capsys.readouterr().out
    ids = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert ids == [r.id for r in SELECTION_RULES]
