"""Fixtures for the validator's tests: real producer outputs (cached), clones to mutate, synthetic models.

``real`` returns checkpoints made by llm-compressor and ModelOpt from the embedded model (see
``producer_fixtures.py``). They are built once per producer version into ``$QUANTKIT_CACHE/test-fixtures`` by two
subprocesses running side by side (about a minute on 2 cores the first time, nothing afterwards); a failure
names the producer. Tests that need them are marked ``produce``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import checkpoint_mutations as mutate  # noqa: E402
import producer_fixtures as producers  # noqa: E402

settings.register_profile("validation", deadline=None,
                          max_examples=int(os.environ.get("QUANTKIT_HYPOTHESIS_EXAMPLES", "60")),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("validation")


def _fixture_root() -> Path:
    from quantkit.models.embedded import cache_root

    key = json.dumps({"recipes": producers.RECIPES_VERSION, "versions": producers.producer_versions()},
                     sort_keys=True)
    return cache_root() / "test-fixtures" / f"validation-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class RealCheckpoints:
    """Producer outputs by recipe name; builds what is missing on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.errors: dict[str, str] = {}
        self._built = False

    def _build(self) -> None:
        self._built = True
        self.root.mkdir(parents=True, exist_ok=True)
        todo: dict[str, list[str]] = {}
        for name, recipe in producers.RECIPES.items():
            if not (self.root / name / "config.json").is_file():
                todo.setdefault(recipe.producer, []).append(name)
        procs = {}
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
        for producer, names in todo.items():
            procs[producer] = subprocess.Popen(
                [sys.executable, str(HERE / "producer_fixtures.py"), str(self.root), *names],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for producer, proc in procs.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                self.errors[producer] = out[-3000:]

    def __call__(self, name: str) -> Path:
        if not self._built:
            self._build()
        path = self.root / name
        if not (path / "config.json").is_file():
            producer = producers.RECIPES[name].producer
            pytest.fail(f"{producer} failed to produce the {name!r} fixture:\n{self.errors.get(producer, '?')}")
        return path


@pytest.fixture(scope="session")
def real() -> RealCheckpoints:
    for mod in ("llmcompressor", "modelopt", "torch"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"real producer fixtures need {mod} (run in .venvs/produce)")
    return RealCheckpoints(_fixture_root())


@pytest.fixture
def clone(tmp_path: Path, real: RealCheckpoints) -> Callable[[str], Path]:
    """``clone("lc-fp8-dynamic")`` -> a private copy of a real checkpoint to mutate."""
    count = iter(range(1000))

    def make(name: str) -> Path:
        return mutate.clone(real(name), tmp_path / f"{name}-{next(count)}")

    return make


@pytest.fixture(autouse=True)
def _isolate_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # the registry cross-check reads the installed vLLM; tests pin quantkit's own table unless they opt in
    monkeypatch.setenv("QUANTKIT_VLLM_REGISTRY", "off")
    from quantkit.validation.vllm_registry import vllm_facts

    vllm_facts.cache_clear()
