"""docs/planning.md keeps up with the tables it describes."""

from __future__ import annotations

from pathlib import Path

from quantkit.planning.ignore import IGNORE_RULES
from quantkit.planning.rules import SELECTION_RULES, WARNING_RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "planning.md"


def test_docs_name_every_rule() -> None:
    text = DOC.read_text(encoding="utf-8")
    for rule in SELECTION_RULES:
        assert f"| `{rule.id}` | {rule.condition()} | {rule.scheme} |" in text, rule.id
    for ignore_rule in IGNORE_RULES:
        assert f"`{ignore_rule.id}`" in text, ignore_rule.id
    for warning in WARNING_RULES:
        assert f"`{warning.id}`" in text, warning.id
