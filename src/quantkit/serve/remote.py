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
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def run_quantkit(args: list[str], *, python: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m quantkit ARGS --json`` in the serve environment and return its JSON answer."""
    py = python or serve_python()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [str(py), "-m", "quantkit", "--quiet", *args, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServeError(f"The serve environment did not answer within {timeout:.0f} s: {' '.join(cmd)}",
                         fix="Run the command by hand to see where it hangs.") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        msg = err[-1][len("error: "):] if err else f"exit code {proc.returncode}; last stderr lines:\n{tail}"
        raise ServeError(f"The serve environment failed on `{' '.join(args)}`: {msg}",
                         fix="Run the same command with the serve python and --debug for details: "
                             f"{py} -m quantkit --debug {' '.join(args)}")
    return json.loads(lines[-1])


def probe_remote(path: str | Path, *, hardware: str | None = None, perplexity: bool = True, speed: bool = True,
                 max_tokens: int = 32, eval_tokens: int = 4096, prompts: list[str] | None = None,
                 extra: list[str] | None = None,
                 python: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
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
    return run_quantkit(args + list(extra or []), python=python, timeout=timeout)
