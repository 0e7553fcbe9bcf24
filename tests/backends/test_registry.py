"""The contributor recipes, proven from a test file alone: a new scheme is one table entry, a new backend is
one class and one registration; plan() finds both, quantize() runs them, nothing else in quantkit changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantkit.backends import (
    BackendSupport,
    ProduceJob,
    ProduceResult,
    SupportQuery,
    backend_names,
    register_backend,
    unregister_backend,
)
from quantkit.backends.llmcompressor import LlmCompressorBackend
from quantkit.errors import QuantkitError, UnknownNameError, UnsupportedSchemeError
from quantkit.planning.planner import plan
from quantkit.schemes import (
    LlmCompressorRecipe,
    QuantArgs,
    Scheme,
    get_scheme,
    register_scheme,
    unregister_scheme,
)

TOY_SCHEME = Scheme(
    name="toy-fp8", summary="FP8 per-channel weights, FP8 per-token activations (a toy copy of fp8-dynamic)",
    weights=QuantArgs(8, "float", "channel"), activations=QuantArgs(8, "float", "token", dynamic=True),
    needs_calibration=False, llmcompressor=LlmCompressorRecipe("FP8_DYNAMIC", "rtn"), best_for="tests",
)


class ToyBackend(LlmCompressorBackend):
    """Produces only the toy scheme, with llm-compressor underneath, and says so; preferred when it can."""

    calls: list[str] = []

    def can_produce(self, scheme: Scheme) -> bool:
        return scheme.name == TOY_SCHEME.name

    def supports(self, query: SupportQuery) -> BackendSupport:
        if query.scheme.name != TOY_SCHEME.name:
            return BackendSupport(False, "the toy backend makes toy-fp8 only")
        return BackendSupport(True, "toy backend: llm-compressor FP8_DYNAMIC under another name", preference=9)

    def produce(self, job: ProduceJob, out_dir: Path) -> ProduceResult:
        ToyBackend.calls.append(job.scheme.name)
        return super().produce(job, out_dir)


@pytest.fixture
def toy() -> Iterator[None]:
    register_scheme(TOY_SCHEME)
    register_backend("toy")(ToyBackend)
    try:
        yield
    finally:
        unregister_backend("toy")
        unregister_scheme(TOY_SCHEME.name)


def test_plan_finds_the_toy_scheme_and_backend(toy: None, embedded_path: Path) -> None:
    assert "toy" in backend_names() and get_scheme("toy-fp8") is TOY_SCHEME
    assert TOY_SCHEME.backends == ("llmcompressor", "toy")
    p = plan(embedded_path, "h100", scheme="toy-fp8", kv_cache="auto")
    assert p.backend == "toy" and any("toy backend" in r for r in p.reasons)
    assert plan(embedded_path, "h100", scheme="toy-fp8", backend="llmcompressor").backend == "llmcompressor"
    assert plan(embedded_path, "h100", scheme="fp8-dynamic").backend == "llmcompressor"  # toy declines
    with pytest.raises(UnsupportedSchemeError, match="toy-fp8 only"):
        plan(embedded_path, "h100", scheme="fp8-dynamic", backend="toy")


def test_quantize_runs_the_toy_backend(toy: None, embedded_path: Path, tmp_path: Path) -> None:
    from quantkit.pipeline import quantize

    res = quantize(embedded_path, "toy-fp8", hardware="h100", kv_cache="auto", output_dir=tmp_path / "toy")
    assert (res.backend, res.scheme) == ("toy", "toy-fp8") and ToyBackend.calls == ["toy-fp8"]
    manifest: dict[str, Any] = json.loads((res.output_dir / "quantkit.json").read_text())
    assert (manifest["backend"], manifest["scheme"]) == ("toy", "toy-fp8")
    assert not [f for f in res.findings if f["severity"] == "error"]


def test_registration_refuses_what_would_break_the_tables(toy: None) -> None:
    with pytest.raises(QuantkitError, match="already"):
        register_scheme(TOY_SCHEME)
    new_format = Scheme(name="toy-int2-wo", summary="INT2 weight-only", weights=QuantArgs(2, "int", "channel"),
                        activations=None, needs_calibration=True)
    with pytest.raises(QuantkitError, match="vllm_facts.py"):  # int2/16bit: no fact says how vLLM serves it
        register_scheme(new_format)

    class Other(ToyBackend):
        pass

    with pytest.raises(QuantkitError, match="already registered"):
        register_backend("toy")(Other)
    with pytest.raises(UnknownNameError, match="llmcompressor"):
        plan("embedded", "h100", backend="no-such-backend")


def test_backend_order_does_not_depend_on_import_order() -> None:
    """Ties between equally willing backends go to the first in _MODULES, whichever module was imported first."""
    import subprocess
    import sys

    code = ("import quantkit.backends.modelopt, quantkit.backends.llmcompressor; "
            "from quantkit.backends import all_backends; print([b.name for b in all_backends()])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['llmcompressor', 'modelopt']"
