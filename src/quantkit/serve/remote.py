"""Run the serving half of a job in the *serve* environment from the *produce* one.

llm-compressor and vLLM pin different compressed-tensors versions, so quantizing and serving live in two
Python environments. A round trip quantizes here and asks the serve interpreter to load and measure the
checkpoint by running ``python -m quantkit generate PATH --json`` there: a plain subprocess with a JSON
answer, the same command a CI job or a person would run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quantkit import progress
from quantkit.errors import EnvironmentNotFoundError, ServeError

SERVE_PYTHON_ENV = "QUANTKIT_SERVE_PYTHON"


def _repo_venv(name: str) -> Path:
    # src/quantkit/serve/remote.py -> repository root (editable installs from a checkout)
    return Path(__file__).resolve().parents[3] / ".venvs" / name / "bin" / "python"


def serve_python() -> Path:
    """The interpreter of the serve environment.

    Looked up in order: ``$QUANTKIT_SERVE_PYTHON``; ``.venvs/serve`` of the checkout quantkit runs from;
    this interpreter, if it can import vLLM.

    Raises:
        EnvironmentNotFoundError: none of those exists.
    """
    env = os.environ.get(SERVE_PYTHON_ENV)
    if env:
        p = Path(env)
        if not p.exists():
            raise EnvironmentNotFoundError(f"{SERVE_PYTHON_ENV}={env} does not exist.",
                                           fix="Point it at the python of an environment with vLLM and quantkit.")
        return p
    repo = _repo_venv("serve")
    if repo.exists():
        return repo
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    raise EnvironmentNotFoundError(
        "No serve environment (vLLM) was found for the serving half of this job.",
        fix=f"Run `scripts/setup_envs.sh serve`, or set {SERVE_PYTHON_ENV} to a python that has vLLM and quantkit.")


#: stderr lines that say why a serve subprocess died (vLLM's engine-core errors, faulthandler, signals).
_DIAGNOSTIC = re.compile(r"Error|error:|Exception|Fatal Python error|Traceback|File \"|Segmentation|signal|"
                         r"[Kk]illed|died|terminate called|Selected .*Kernel|Illegal instruction")


def failure_summary(stderr: str, returncode: int, *, keep: int = 25) -> str:
    """What to show of a failed serve subprocess: its last lines, the diagnostic lines before them, how it ended."""
    lines = stderr.strip().splitlines()
    how = f"exit code {returncode}"
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    diag = [ln for ln in lines[:-10] if _DIAGNOSTIC.search(ln)][-keep:]
    # the diagnosis last: a CI log that shows only the end of a message still shows it
    parts = ["last stderr lines:", *lines[-10:]]
    if diag:
        parts += ["diagnostic lines before those:", *diag]
    parts.append(f"the serve process ended with {how}")
    return "\n".join(parts)


def _keep_log(stderr: str) -> Path | None:
    """Save a failed run's whole stderr under ``$QUANTKIT_CACHE/logs`` and return its path."""
    from quantkit.models.embedded import cache_root

    try:
        d = cache_root() / "logs"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"serve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        f.write_text(stderr)
        return f
    except OSError:
        return None


def run_quantkit(args: list[str], *, python: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m quantkit ARGS --json`` in the serve environment and return its JSON answer.

    A failed run raises ``ServeError`` with how the process ended (exit code or signal), the diagnostic lines
    of its stderr (errors, tracebacks, the Python stack faulthandler prints on a crash) and the path of the
    whole log.
    """
    py = python or serve_python()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a native crash in vLLM's engine prints the Python stack
    env[progress.CHILD_ENV] = "1"  # its steps come back on stderr, shown under the current stage
    cmd = [str(py), "-m", "quantkit", "--quiet", *args, "--json"]
    proc = _run_relaying(cmd, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    answer = _parse(lines[-1]) if lines else None
    if proc.returncode < 0 and answer is not None and answer.get("ok") is True:
        # The command printed its finished answer, then a native library crashed while the interpreter shut
        # down (vLLM's engine teardown; seen as "terminate called without an active exception"). The
        # measurement stands; the crash is reported with it rather than turned into a failure.
        answer["teardown_error"] = failure_summary(proc.stderr, proc.returncode, keep=5)
        return answer
    if proc.returncode != 0 or answer is None:
        err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        if err:
            msg = err[-1][len("error: "):]
        else:
            log = _keep_log(proc.stderr)
            msg = failure_summary(proc.stderr, proc.returncode) + (f"\nwhole log: {log}" if log else "")
        raise ServeError(f"The serve environment failed on `{' '.join(args)}`: {msg}",
                         fix="Run the same command with the serve python and --debug for details: "
                             f"{py} -m quantkit --debug {' '.join(args)}")
    return answer


def _run_relaying(cmd: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` that reads the child's stderr as it comes: its step lines reach the active progress
    (and its whole stderr the run log) while it works, not after."""
    steps = progress.current()
    out: list[str] = []
    err: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        def pump_err() -> None:
            assert p.stderr is not None
            for line in p.stderr:
                if not steps.child_line(line.rstrip("\n")):
                    err.append(line)

        def pump_out() -> None:
            assert p.stdout is not None
            out.append(p.stdout.read())

        pumps = [threading.Thread(target=f, daemon=True) for f in (pump_err, pump_out)]
        for t in pumps:
            t.start()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            p.kill()
            p.wait()
            raise ServeError(f"The serve environment did not answer within {timeout:.0f} s: {' '.join(cmd)}",
                             fix="Run the command by hand to see where it hangs.") from exc
        finally:
            for t in pumps:
                t.join(timeout=10)
    return subprocess.CompletedProcess(cmd, p.returncode, "".join(out), "".join(err))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def probe_remote(path: str | Path, *, hardware: str | None = None, perplexity: bool = True, speed: bool = True,
                 max_tokens: int = 32, eval_tokens: int = 4096, prompts: list[str] | None = None,
                 extra: list[str] | None = None, python: Path | None = None, timeout: float = 1800,
                 eval_data: str | Path | None = None) -> dict[str, Any]:
    """Load ``path`` in the serve environment, generate, and measure it (see ``serve.probe.probe``)."""
    args = ["generate", str(path), "--max-tokens", str(max_tokens), "--eval-tokens", str(eval_tokens)]
    if hardware:
        args += ["--hardware", hardware]
    if not perplexity:
        args.append("--no-perplexity")
    if not speed:
        args.append("--no-speed")
    for p in prompts or []:
        args += ["--prompt", p]
    if eval_data is not None and perplexity:
        args += ["--eval-data", str(Path(eval_data).resolve())]
    return run_quantkit(args + list(extra or []), python=python, timeout=timeout)
