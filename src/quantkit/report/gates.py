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
