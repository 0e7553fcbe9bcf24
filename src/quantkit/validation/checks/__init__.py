"""The checks, one per rule, registered with :func:`check` under the rule's id.

A check reads a :class:`~quantkit.validation.context.Context` and adds findings to ``ctx.findings``; it
never raises on strange input. The runner still guards each check: an unexpected exception becomes a
``validator-internal`` error finding naming the rule that could not run (an unchecked rule is not a passed
rule), except :class:`CheckpointReadError`, which means the checkpoint cannot be read at all.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from quantkit.errors import CheckpointReadError
from quantkit.validation.context import Context
from quantkit.validation.rules import RULES

CheckFn = Callable[[Context], None]
CHECKS: dict[str, CheckFn] = {}
_MODULES = ("config", "names", "kernels", "tensors", "publish", "skew")


def check(rule_id: str) -> Callable[[CheckFn], CheckFn]:
    """Register the check for ``rule_id``; an unknown id or a second check for one rule is an error."""

    def deco(fn: CheckFn) -> CheckFn:
        if rule_id not in RULES:
            raise KeyError(f"check {fn.__name__} names unknown rule {rule_id!r}; known: {', '.join(RULES)}")
        if rule_id in CHECKS and CHECKS[rule_id] is not fn:
            raise KeyError(f"rule {rule_id!r} already has a check ({CHECKS[rule_id].__name__})")
        CHECKS[rule_id] = fn
        return fn

    return deco


def load_checks() -> dict[str, CheckFn]:
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return CHECKS


def run_checks(ctx: Context) -> None:
    """Run every registered check in rule order."""
    checks = load_checks()
    for rule_id in sorted(checks, key=lambda r: RULES[r].number):
        t0 = time.perf_counter()
        try:
            checks[rule_id](ctx)
        except CheckpointReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - turn a validator bug into a visible finding, never a traceback
            ctx.findings.add("validator-internal",
                             f"rule {rule_id} could not run: {type(exc).__name__}: {exc}",
                             problem=f"internal-{rule_id}")
        finally:
            ctx.timings[rule_id] = time.perf_counter() - t0
