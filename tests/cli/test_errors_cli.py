"""The CLI as a whole: every command has --help, exit codes 0/1/2, errors as one paragraph, --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_runner import COMMANDS, run_cli

from quantkit.cli import app, main



def registered() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_of_the_issue_is_registered() -> None:
    assert sorted(COMMANDS) == registered()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_everywhere(command: str) -> None:
    rc, out, _ = run_cli(command, "--help")
    assert rc == 0 and "Usage:" in out and "--help" in out


def test_json_option_where_a_machine_reads_the_output() -> None:
    for command in COMMANDS:
        _, out, _ = run_cli(command, "--help")
        assert "--json" in out, command


def test_no_command_prints_help_and_exits_nonzero() -> None:
    rc, out, err = run_cli()
    assert rc == 2 and "Usage:" in out + err


def test_error_paragraph_and_debug_traceback(tmp_path) -> None:
    rc, out, err = run_cli("quantize", tmp_path / "nope", "-s", "fp8-dynamic")
    assert rc == 2 and out == ""
    assert err.startswith("error: [QK002]") and "does not exist" in err and "\nTo resolve: " in err
    assert "Traceback" not in err
    from quantkit.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):  # --debug lets the exception (and its traceback) through
        main(["--debug", "quantize", str(tmp_path / "nope"), "-s", "fp8-dynamic"])
    main(["schemes", "--json"])  # reset the --debug state for the other tests


def test_the_installed_script_end_to_end(tmp_path) -> None:
    """The console script in a fresh process: exit code 2 and the readable paragraph, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "quantkit", "quantize", "embedded", "-s", "int3", "-o",
                           str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Unknown scheme 'int3'" in proc.stderr and "fp8-dynamic" in proc.stderr and "To resolve" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "quantkit", "schemes", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.lstrip().startswith("[")
