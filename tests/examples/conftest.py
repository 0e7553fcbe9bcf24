"""Fixtures for the cookbook's tests: run examples in-process, and share the W4A16 checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "backends"))  # tiny_models: the tiny real-architecture builders

import example_runner  # noqa: E402


@pytest.fixture(scope="session")
def w4a16_example(checkpoints: Path, embedded_path: Path) -> tuple[Path, int, str]:
    """(checkpoint, exit code, stdout) of ``03_w4a16_gptq_awq.py --algorithm gptq`` on the embedded model."""
    return example_runner.shared_w4a16(checkpoints)
