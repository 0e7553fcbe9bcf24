"""How the produce side reads the serve subprocess's answer when that process fails or crashes.

These end states (a native abort after the answer was printed, a crash before it) cannot be provoked on
demand with the real vLLM, so a stand-in interpreter script plays the serve python here. The real serve
environment is exercised by tests/roundtrip.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from quantkit.errors import ServeError
from quantkit.serve.remote import failure_summary, run_quantkit


def _fake_python(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_an_answer_printed_before_a_teardown_abort_is_kept_with_the_crash_reported(tmp_path: Path) -> None:
    py = _fake_python(tmp_path, 'print(json.dumps({"ok": True, "perplexity": 1.5}), flush=True)\n'
                                'print("terminate called without an active exception", file=sys.stderr, flush=True)\n'
                                "os.abort()")
    answer = run_quantkit(["generate", "x"], python=py)
    assert answer["perplexity"] == 1.5
    assert "SIGABRT" in answer["teardown_error"] and "terminate called" in answer["teardown_error"]


def test_a_crash_before_the_answer_is_an_error_naming_the_signal_and_the_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path / "cache"))
    noise = "\\n".join(f"INFO line {i}" for i in range(40))
    py = _fake_python(tmp_path, f'print("{noise}", file=sys.stderr)\n'
                                'print("RuntimeError: could not create a primitive", file=sys.stderr)\n'
                                f'print("{noise}", file=sys.stderr, flush=True)\n'
                                "os.abort()")
    with pytest.raises(ServeError) as err:
        run_quantkit(["generate", "x"], python=py)
    msg = str(err.value)
    log = next((tmp_path / "cache" / "logs").glob("serve-*.log"))
    assert f"whole log: {log}" in msg and "RuntimeError" in log.read_text()
    assert "RuntimeError: could not create a primitive" in msg and "SIGABRT" in msg
    assert "INFO line 5\n" not in msg  # the noise before the cause is not repeated


def test_an_error_answer_is_not_taken_for_a_result(tmp_path: Path) -> None:
    py = _fake_python(tmp_path, 'print(json.dumps({"ok": False, "error": {"rule": "QK010"}}))\n'
                                'print("error: vLLM refused the checkpoint", file=sys.stderr)\n'
                                "sys.exit(1)")
    with pytest.raises(ServeError, match="vLLM refused the checkpoint"):
        run_quantkit(["generate", "x"], python=py)


def test_failure_summary_puts_the_diagnosis_last() -> None:
    text = "\n".join(["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: bad"]
                     + [f"tail {i}" for i in range(12)])
    lines = failure_summary(text, 1).splitlines()
    assert lines[-1] == "the serve process ended with exit code 1"
    assert lines.index("ValueError: bad") > lines.index("tail 11")
    assert json.dumps(lines)  # plain strings
