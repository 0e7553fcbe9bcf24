"""What validation returns: findings (rule, severity, module, message, fix) and the report that holds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from quantkit.errors import ValidationFailedError
from quantkit.validation.rules import RULES, Severity

#: at most this many findings per (rule, problem); the rest are summarised in one more finding
MAX_PER_PROBLEM = 5


@dataclass(frozen=True)
class Finding:
    """One thing the validator found.

    ``module`` is the module concerned, a wildcard (``model.layers.*.mlp.gate``) when the same problem
    repeats across layers, or None for checkpoint-wide findings.
    """

    rule: str
    severity: Severity
    module: str | None
    message: str
    fix: str

    def to_dict(self) -> dict[str, str | None]:
        return {"rule": self.rule, "severity": self.severity, "module": self.module, "message": self.message,
                "fix": self.fix}

    def __str__(self) -> str:
        where = f" {self.module}:" if self.module else ""
        return f"{self.severity} [{self.rule}]{where} {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`quantkit.validate`.

    ``ok`` is True when no finding is an error (warnings allowed). ``stats`` records what was read:
    ``shards``, ``tensors``, ``header_bytes_read``, ``tensor_bytes_read`` (non-zero only for NVFP4 global
    scales) and ``seconds``.
    """

    path: str
    quant_method: str | None
    findings: tuple[Finding, ...]
    vllm_method: str | None = None
    hardware: str | None = None
    vllm_version: str | None = None
    vllm_version_source: str | None = None
    registry: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def by_rule(self, rule: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.rule == rule)

    def to_dict(self) -> dict[str, Any]:
        """The CLI's ``--json`` document: ``{"ok", "quant_method", "findings"}``."""
        return {"ok": self.ok, "quant_method": self.quant_method, "findings": [f.to_dict() for f in self.findings]}

    def raise_for_errors(self) -> None:
        """Raise :class:`ValidationFailedError` (with this report attached) when there is an error finding."""
        if self.ok:
            return
        errs = self.errors
        head = "; ".join(str(f) for f in errs[:3])
        more = f" (and {len(errs) - 3} more)" if len(errs) > 3 else ""
        raise ValidationFailedError(f"{self.path} failed validation with {len(errs)} error(s): {head}{more}.",
                                    fix=errs[0].fix, rule="QK007", report=self)

    def summary(self) -> str:
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "FAILED"
        return (f"{verdict}: {n_err} error(s), {n_warn} warning(s) for {self.path} "
                f"(quant_method={self.quant_method}, vLLM {self.vllm_version} [{self.vllm_version_source}], "
                f"hardware={self.hardware or 'not given'})")


_LAYER_INDEX = re.compile(r"\.\d+(?=\.|$)")


@lru_cache(maxsize=1 << 17)
def wildcard(module: str) -> str:
    """``model.layers.7.mlp.experts.3.up_proj`` -> ``model.layers.*.mlp.experts.*.up_proj``."""
    return _LAYER_INDEX.sub(".*", module)


class Findings:
    """Collects findings, folding a problem that repeats across layers into one finding per wildcard.

    ``add(..., modules=[...])`` reports one problem for many modules: modules that differ only in layer or
    expert indices become one finding on a wildcard with the count; distinct wildcards each get one, up to
    :data:`MAX_PER_PROBLEM`, then a summary.
    """

    def __init__(self) -> None:
        self._items: list[Finding] = []
        self._per_problem: dict[tuple[str, str], int] = {}
        self._dropped: dict[tuple[str, str], list[str]] = {}
        self._kind: dict[tuple[str, str], tuple[Severity, str]] = {}

    def add(self, rule: str, message: str, *, module: str | None = None, severity: Severity | None = None,
            fix: str | None = None, problem: str | None = None) -> None:
        r = RULES[rule]
        key = (rule, problem or message)
        n = self._per_problem.get(key, 0)
        self._per_problem[key] = n + 1
        sev, how = severity or r.severity, fix or r.fix
        if n >= MAX_PER_PROBLEM:
            self._dropped.setdefault(key, []).append(module or "")
            return
        self._kind[key] = (sev, how)
        self._items.append(Finding(rule, sev, module, message, how))

    def add_grouped(self, rule: str, modules: list[str], message: str, *, severity: Severity | None = None,
                    fix: str | None = None, problem: str | None = None) -> None:
        """One problem (``message`` describes it without naming the module) shared by ``modules``."""
        groups: dict[str, list[str]] = {}
        for m in modules:
            groups.setdefault(wildcard(m), []).append(m)
        for pattern, members in groups.items():
            if len(members) == 1:
                where, text = members[0], message
            else:
                where, text = pattern, f"{message} ({len(members)} modules, e.g. {members[0]})"
            self.add(rule, text, module=where, severity=severity, fix=fix, problem=problem or message)

    def finish(self) -> tuple[Finding, ...]:
        out = list(self._items)
        for key, dropped in self._dropped.items():
            sev, how = self._kind[key]
            out.append(Finding(key[0], sev, None, f"... and {len(dropped)} more finding(s) like the ones above "
                                                  f"(e.g. {dropped[0] or 'checkpoint-wide'}).", how))
        order = {"error": 0, "warning": 1}
        rank = {rid: r.number for rid, r in RULES.items()}
        return tuple(sorted(out, key=lambda f: (order[f.severity], rank.get(f.rule, 999))))
