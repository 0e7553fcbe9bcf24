"""Run ``quantkit`` in this process and read its ``--json`` answer (helpers shared by tests/cli)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from quantkit.cli import main

#: the commands the CLI issue asks for; tests check each is registered, documented and has --help / --json
COMMANDS = ["quantize", "validate", "plan", "load", "generate", "lm-eval", "serve", "roundtrip", "report", "schemes",
            "hardware"]


def run_cli(*argv: object) -> tuple[int, str, str]:
    """``quantkit ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def one_json(stdout: str) -> dict[str, Any]:
    """The single JSON object a ``--json`` command printed; fails if stdout holds anything else."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json printed {len(lines)} lines:\n{stdout[:2000]}"
    return json.loads(lines[0])
