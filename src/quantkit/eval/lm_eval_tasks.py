"""Task accuracy with lm-eval on vLLM, for the ``--min-recovery`` gate.

lm-eval is an optional extra of the *serve* environment (its vLLM backend needs vLLM). The produce side asks
the serve interpreter ``python -m quantkit lm-eval PATH --tasks ... --json``, the same subprocess route as
``quantkit generate``; that command calls ``lm_eval.simple_evaluate(model="vllm", ...)`` with the engine
arguments :func:`quantkit.serve.engine.serve_plan` chooses for the checkpoint, so the score is the one of the
engine quantkit serves with. Local tasks shipped under ``quantkit/data/lm_eval`` (no hub needed) are found
through ``TaskManager(include_path=...)``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantkit.errors import OptionalExtraMissingError, PlanOptionError

#: the folder of lm-eval task YAMLs shipped with quantkit (``quantkit_support_mc``: 32 questions, no hub)
TASK_DIR = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
#: lm-eval's metric keys, in order of preference, for the score a gate compares
METRIC_PREFERENCE = ("acc,none", "exact_match,strict-match", "exact_match,none", "acc_norm,none", "f1,none")
INSTALL_FIX = ("Install it into the serve environment: .venvs/serve/bin/pip install lm-eval "
               "(or `scripts/setup_envs.sh serve`), or drop --lm-eval-tasks.")

# run in the serve interpreter: is lm-eval importable, and which of the tasks does its TaskManager not know?
_CHECK = """
import json, sys
try:
    from lm_eval.tasks import TaskManager
except ImportError as exc:
    print(json.dumps({"lm_eval": False, "error": str(exc)})); sys.exit(0)
known = set(TaskManager(include_path=sys.argv[1]).all_tasks)
print(json.dumps({"lm_eval": True, "unknown": [t for t in sys.argv[2:] if t not in known]}))
"""


def parse_tasks(tasks: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    if tasks is None:
        return []
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for item in items:
        for t in str(item).split(","):
            if t.strip() and t.strip() not in out:
                out.append(t.strip())
    return out


def check_lm_eval(tasks: list[str], *, python: Path | None = None) -> None:
    """Fail before any work when lm-eval is missing from the serve environment or a task is unknown to it.

    Raises:
        OptionalExtraMissingError: lm-eval is not importable by the serve interpreter (QK003).
        PlanOptionError: a task name is not among lm-eval's tasks nor quantkit's local ones.
    """
    from quantkit.serve.remote import _parse, serve_python

    py = python or serve_python()
    proc = subprocess.run([str(py), "-c", _CHECK, str(TASK_DIR), *tasks], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    answer = _parse(lines[-1]) if lines else None
    if answer is None or not answer.get("lm_eval"):
        why = (answer or {}).get("error") or proc.stderr.strip()[-300:]
        raise OptionalExtraMissingError(f"--lm-eval-tasks needs lm-eval in the serve environment ({py}): {why}",
                                     fix=INSTALL_FIX)
    if answer.get("unknown"):
        raise PlanOptionError(f"Unknown lm-eval task(s): {', '.join(answer['unknown'])}.",
                              fix=f"Use a task `lm_eval --tasks list` shows, or one of quantkit's local tasks "
                                  f"({', '.join(local_tasks())}).")


def local_tasks() -> list[str]:
    """The lm-eval tasks shipped with quantkit (one YAML each under :data:`TASK_DIR`)."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def pick_metric(task_result: dict[str, Any]) -> tuple[str, float] | None:
    """The metric a gate compares for one task's lm-eval result: the first of :data:`METRIC_PREFERENCE`."""
    for key in METRIC_PREFERENCE:
        v = task_result.get(key)
        if isinstance(v, (int, float)):
            return key, float(v)
    return None


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def score_tasks(path: str | Path, tasks: list[str], *, hardware: str | None = None, limit: int | None = None,
                kv_cache_dtype: str | None = None) -> dict[str, Any]:
    """Run lm-eval's vLLM backend on ``path`` in this interpreter (the serve environment).

    Returns ``{"scores": {task: {"metric": key, "value": float}}, "engine_args": ..., "limit": ...}``.

    Raises:
        OptionalExtraMissingError: lm-eval is not installed here.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise OptionalExtraMissingError(f"lm-eval is not installed in this environment: {exc}", fix=INSTALL_FIX) from exc
    from quantkit.serve.engine import scoped_env, serve_plan

    path = Path(path).resolve()
    plan = serve_plan(path, hardware, kv_cache_dtype=kv_cache_dtype)
    model_args = {"pretrained": str(path), **plan.engine_args}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local tasks only need the json builder; never wait on the hub
    with scoped_env(plan.env), _cwd(TASK_DIR):  # the shipped YAMLs name their JSONL relative to TASK_DIR
        out = lm_eval.simple_evaluate(model="vllm", model_args=model_args, tasks=list(tasks), limit=limit,
                                      task_manager=TaskManager(include_path=str(TASK_DIR)), log_samples=False)
    results = (out or {}).get("results") or {}
    scores: dict[str, Any] = {}
    for t in tasks:
        picked = pick_metric(results.get(t) or {})
        scores[t] = {"metric": picked[0], "value": picked[1]} if picked else {
            "metric": None, "value": None, "error": f"no accuracy metric in lm-eval's result: {results.get(t)}"}
    return {"scores": scores, "engine_args": {k: str(v) for k, v in model_args.items()}, "limit": limit}


def lm_eval_remote(path: str | Path, tasks: list[str], *, hardware: str | None = None, limit: int | None = None,
                   python: Path | None = None, timeout: float = 3600) -> dict[str, Any]:
    """:func:`score_tasks` in the serve environment; a failure is recorded as ``{"error": ...}``, not raised,
    so the gate of that checkpoint fails with the reason rather than the whole report being lost."""
    from quantkit.errors import QuantkitError
    from quantkit.serve.remote import run_quantkit

    args = ["lm-eval", str(Path(path).resolve()), "--tasks", ",".join(tasks)]
    if hardware:
        args += ["--hardware", hardware]
    if limit is not None:
        args += ["--limit", str(limit)]
    try:
        answer = run_quantkit(args, python=python, timeout=timeout)
    except QuantkitError as exc:
        return {"error": exc.message}
    answer.pop("ok", None)
    return answer

