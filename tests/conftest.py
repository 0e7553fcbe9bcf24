"""Shared fixtures: the embedded model, the serve environment, a scratch root for checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    """The embedded SmolLM2-135M bf16 checkpoint (built once into the quantkit cache)."""
    from quantkit.models.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def serve_python() -> Path:
    """The serve environment's interpreter; tests that need vLLM skip, with the reason, when it is missing."""
    from quantkit.errors import EnvironmentNotFoundError
    from quantkit.serve.remote import serve_python as find

    try:
        return find()
    except EnvironmentNotFoundError as exc:
        pytest.skip(f"no serve environment (vLLM): {exc.message} Run scripts/setup_envs.sh serve.")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip with a reason where no CUDA GPU is visible (never silently pass)."""
    has_gpu = os.path.exists("/dev/nvidia0") or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU with vLLM (see scripts/gpu_check.py); none on this machine")
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(skip)
