"""Checkpoint validation: will vLLM load this checkpoint and serve it correctly? Answered from headers alone.

    from quantkit import validate
    report = validate("out/llama-fp8", hardware="h100")
    report.ok, report.findings

The rules are data (:data:`RULES` in ``rules.py``: id, what, why with the upstream issue, fix); each has one
check in ``checks/``. Importing this package imports no torch, transformers or vLLM; where vLLM is installed
its registry is read from its source (``vllm_registry.py``).
"""

from __future__ import annotations

from quantkit.validation.report import Finding, ValidationReport
from quantkit.validation.rules import RULES, Rule
from quantkit.validation.validator import validate

__all__ = ["RULES", "Finding", "Rule", "ValidationReport", "validate"]
