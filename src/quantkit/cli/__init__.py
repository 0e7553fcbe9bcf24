"""The ``quantkit`` command line.

Each command lives in its own module under ``quantkit/cli/`` and registers itself on ``app``. Exit codes:
0 ok, 1 findings or a failed check, 2 bad input. Errors print as one readable paragraph ending in
"To resolve: ..."; ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from quantkit.errors import (
    CalibrationDataError,
    CheckpointReadError,
    DeviceMemoryError,
    HostMemoryError,
    ModelNotFoundError,
    OptionalExtraMissingError,
    OutputExistsError,
    PlanOptionError,
    QuantkitError,
    UnknownNameError,
    UnsupportedSchemeError,
)

app = typer.Typer(
    name="quantkit",
    help="Quantize Hugging Face checkpoints for vLLM, validate them, load them, and prove they work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: errors that mean "the input was wrong" (exit 2) rather than "a check failed" (exit 1)
BAD_INPUT = (UnknownNameError, ModelNotFoundError, CheckpointReadError, OutputExistsError,
             CalibrationDataError, UnsupportedSchemeError, PlanOptionError, OptionalExtraMissingError,
             HostMemoryError, DeviceMemoryError)

#: the exit code of a command stopped by Ctrl-C (128 + SIGINT, what a shell reports)
INTERRUPTED = 130

_state = {"debug": False, "verbose": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Show what llm-compressor, ModelOpt and vLLM print (always kept in "
                                            "the run log).")) -> None:
    _state["debug"] = debug
    _state["verbose"] = verbose
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="[quantkit] %(message)s", stream=sys.stderr)


#: every command module, in one place; importing one registers its commands on ``app`` (an import error is a
#: bug and surfaces as such)
_COMMAND_MODULES = ("tables", "quantize", "validate", "plan", "load", "generate", "serve", "report")
for _name in _COMMAND_MODULES:
    importlib.import_module(f"quantkit.cli.{_name}")


def exit_code_for(exc: QuantkitError) -> int:
    return 2 if isinstance(exc, BAD_INPUT) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quantkit`` script; returns the exit code."""
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns a command's typer.Exit code here
    except QuantkitError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return exit_code_for(exc)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        # typer ships its own click; match its exception classes by name rather than importing click
        kinds = {k.__name__ for k in type(exc).__mro__}
        if "UsageError" in kinds:
            exc.show()  # type: ignore[attr-defined]
            return 2
        if "Abort" in kinds:  # Ctrl-C with click/typer versions that raise Abort (typer 0.29 returns 130 itself)
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                typer.echo("interrupted", err=True)
                return INTERRUPTED
            return 1
        if _state["debug"]:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc}\nTo resolve: re-run with --debug for the "
                   "traceback and report it.", err=True)
        return 1
    return int(rc or 0)


def run() -> None:
    sys.exit(main())
