"""The --min-recovery gates (issue 13): quantized ÷ original lm-eval score, per (checkpoint, task)."""

from __future__ import annotations

from typing import Any

import pytest

from quantkit.eval.lm_eval_tasks import TASK_DIR, local_tasks, parse_tasks, pick_metric
from quantkit.report.gates import passed, recovery_gates
from quantkit.report.render import markdown, print_gates


def _scores(**tasks: float | None) -> dict[str, Any]:
    return {"scores": {t: {"metric": "acc,none", "value": v} for t, v in tasks.items()}}


def _run(scheme: str, lm_eval: dict[str, Any] | None) -> dict[str, Any]:
    return {"scheme": scheme, "path": f"/x/{scheme}", "quantized": {}, "lm_eval": lm_eval}


def test_one_gate_per_checkpoint_and_task() -> None:
    orig = _scores(mc=0.75, arc=0.40)
    runs = [_run("w8a8-int8", _scores(mc=0.75, arc=0.39)), _run("w4a16", _scores(mc=0.5, arc=0.40))]
    gates = recovery_gates(orig, runs, ["mc", "arc"], 95.0)
    assert [(g.scheme, g.gate, g.passed) for g in gates] == [
        ("w8a8-int8", "min-recovery[mc]", True), ("w8a8-int8", "min-recovery[arc]", True),
        ("w4a16", "min-recovery[mc]", False), ("w4a16", "min-recovery[arc]", True)]
    assert gates[2].value == pytest.approx(66.667, abs=1e-3)
    assert gates[2].detail == "acc,none 0.5000 vs original 0.7500: 66.7 % recovered (below the 95 % floor)"
    assert not passed(gates) and passed(gates[:2])
    assert passed(recovery_gates(orig, runs, ["mc", "arc"], 60.0))


@pytest.mark.parametrize("orig, quant, why", [
    (_scores(mc=0.75), {"error": "The serve environment failed on `lm-eval ...`: killed by SIGKILL"},
     "not measured (quantized: The serve environment failed"),
    (_scores(mc=0.75), _scores(other=0.5), "not measured (quantized: no score for this task)"),
    ({"error": "lm-eval crashed"}, _scores(mc=0.7), "not measured (original: lm-eval crashed)"),
    (None, _scores(mc=0.7), "not measured (original: lm-eval was not run)"),
    (_scores(mc=0.0), _scores(mc=0.0), "the original scores 0 on acc,none: no recovery ratio"),
])
def test_a_gate_that_cannot_be_checked_fails(orig: Any, quant: Any, why: str) -> None:
    [g] = recovery_gates(orig, [_run("w4a16", quant)], ["mc"], 50.0)
    assert not g.passed and g.value is None and g.detail.startswith(why), g.detail


def test_recovery_gates_are_printed_and_written(capsys: pytest.CaptureFixture[str]) -> None:
    gates = recovery_gates(_scores(mc=0.75), [_run("w8a8-int8", _scores(mc=0.72))], ["mc"], 200.0)
    data = {"model": "/m", "hardware": "cpu", "original": {"served": True}, "runs": [],
            "gates": [g.to_dict() for g in gates]}
    print_gates(data)
    out = capsys.readouterr().out
    assert "FAIL w8a8-int8: min-recovery[mc] 200 % -> acc,none 0.7200 vs original 0.7500: 96.0 % recovered" in out
    assert "gates: failed (exit 1)" in out
    assert "- **FAIL** w8a8-int8: min-recovery[mc] 200 %" in markdown(data)


def test_task_names_and_metric_choice() -> None:
    assert parse_tasks("a, b,a") == ["a", "b"] and parse_tasks(["a,b", "c"]) == ["a", "b", "c"]
    assert parse_tasks(None) == []
    assert pick_metric({"acc,none": 0.5, "acc_norm,none": 0.6, "acc_stderr,none": 0.1}) == ("acc,none", 0.5)
    assert pick_metric({"exact_match,strict-match": 0.3}) == ("exact_match,strict-match", 0.3)
    assert pick_metric({"alias": "x"}) is None


def test_the_shipped_task_has_its_data() -> None:
    import json

    import yaml

    assert local_tasks() == ["quantkit_support_mc"]
    cfg = yaml.safe_load((TASK_DIR / "quantkit_support_mc.yaml").read_text())
    assert cfg["output_type"] == "multiple_choice" and cfg["dataset_path"] == "json"
    rows = [json.loads(ln) for ln in (TASK_DIR / cfg["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert 20 <= len(rows) <= 40
    assert all(len(r["choices"]) == 4 and 0 <= r["answer"] < 4 and r["question"].endswith("?") for r in rows)
    assert len({r["question"] for r in rows}) == len(rows)
