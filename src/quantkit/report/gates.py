"""Quality gates a CI job can fail on: the round trip's measurements against limits the team sets.

A gate is checked per quantized checkpoint. A measurement that is missing (vLLM and transformers both failed
to score it) fails its gate: a gate that cannot be checked must not pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateResult:
    """One gate on one checkpoint."""

    scheme: str
    gate: str
    limit: float
    value: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ppl_rise_gates(runs: list[dict[str, Any]], max_ppl_rise: float) -> list[GateResult]:
    """``perplexity(quantized) / perplexity(original) - 1`` in percent must be at most ``max_ppl_rise``."""
    out = []
    for run in runs:
        name = str(run.get("scheme") or run.get("path"))
        rise = run.get("perplexity_delta_pct")
        if rise is None:
            why = (run["quantized"].get("perplexity_error") or run["quantized"].get("serve_error")
                   or "no perplexity was measured")
            out.append(GateResult(name, "max-ppl-rise", max_ppl_rise, None, False, f"not measured: {why}"))
            continue
        ok = rise <= max_ppl_rise
        out.append(GateResult(name, "max-ppl-rise", max_ppl_rise, round(rise, 3), ok,
                              f"perplexity {'+' if rise >= 0 else ''}{rise:.2f} % vs the original "
                              f"({'within' if ok else 'over'} the {max_ppl_rise:g} % budget)"))
    return out


def passed(gates: list[GateResult] | list[dict[str, Any]]) -> bool:
    """Every gate passed (True when there are none)."""
    return all((g.passed if isinstance(g, GateResult) else g["passed"]) for g in gates)


def _task_value(scores: dict[str, Any] | None, task: str) -> tuple[float | None, str | None, str]:
    """(value, metric, why-missing) of one task in an ``lm_eval`` record (``{"scores": ...}`` or ``{"error"}``)."""
    if not scores:
        return None, None, "lm-eval was not run"
    if scores.get("error"):
        return None, None, str(scores["error"]).splitlines()[0]
    s = (scores.get("scores") or {}).get(task) or {}
    if s.get("value") is None:
        return None, s.get("metric"), str(s.get("error") or "no score for this task")
    return float(s["value"]), s.get("metric"), ""


def recovery_gates(original: dict[str, Any] | None, runs: list[dict[str, Any]], tasks: list[str],
                   min_recovery: float) -> list[GateResult]:
    """One gate per (checkpoint, task): ``score(quantized) / score(original)`` in percent must be at least
    ``min_recovery``. ``original`` and each ``run["lm_eval"]`` are what ``quantkit lm-eval --json`` answers
    (``{"scores": {task: {"metric", "value"}}}``) or ``{"error": ...}``; a score missing on either side, or an
    original score of 0 (no ratio), fails the gate."""
    out = []
    for run in runs:
        name = str(run.get("scheme") or run.get("path"))
        for task in tasks:
            gate = f"min-recovery[{task}]"
            vo, metric, why_o = _task_value(original, task)
            vq, metric_q, why_q = _task_value(run.get("lm_eval"), task)
            if vo is None or vq is None:
                side = f"original: {why_o}" if vo is None else f"quantized: {why_q}"
                out.append(GateResult(name, gate, min_recovery, None, False, f"not measured ({side})"))
                continue
            if vo <= 0:
                out.append(GateResult(name, gate, min_recovery, None, False,
                                      f"the original scores {vo:g} on {metric}: no recovery ratio; "
                                      "choose a task the original model can answer"))
                continue
            rec = 100.0 * vq / vo
            ok = rec >= min_recovery
            out.append(GateResult(name, gate, min_recovery, round(rec, 3), ok,
                                  f"{metric or metric_q} {vq:.4f} vs original {vo:.4f}: {rec:.1f} % recovered "
                                  f"({'meets' if ok else 'below'} the {min_recovery:g} % floor)"))
    return out
