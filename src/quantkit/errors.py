"""One exception tree for everything quantkit raises.

Every error carries a stable ``rule`` id (``QK...``) and a ``fix``: what to do about it. The message says
what was wrong and, where it applies, the actual value and the allowed ones. Backend exceptions are
translated at the boundary with the original kept as ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: what ``str()`` of a QuantkitError puts around its message: found again when one is formatted into another
_NESTED_RULE = re.compile(r"\[QK\d{3}\] ")
_NESTED_FIX = re.compile(r"\s*\nTo resolve: (?P<fix>.*?)(?=\n|$)", re.S)


def _unnest(message: str, fix: str | None) -> tuple[str, str | None]:
    """Keep one rule id and one "To resolve:" when a message embeds another quantkit error's text.

    ``f"Cannot read {path}: {exc}"`` with a QuantkitError ``exc`` would print ``[QK006] ... [QK006] ...
    To resolve: ... To resolve: ...``; the inner id goes, and the inner fix is kept only when the outer
    error has none.
    """
    inner_fix = None
    m = _NESTED_FIX.search(message)
    if m is not None:
        inner_fix = m["fix"].rstrip(". ") + "."
        message = _NESTED_FIX.sub("", message)
    return _NESTED_RULE.sub("", message), fix or inner_fix


class QuantkitError(Exception):
    """Root of every error quantkit raises on purpose."""

    default_rule = "QK000"

    def __init__(self, message: str, *, fix: str | None = None, rule: str | None = None) -> None:
        self.message, self.fix = _unnest(message, fix)
        self.rule = rule or self.default_rule
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"[{self.rule}] {self.message}"
        if self.fix:
            text += f"\nTo resolve: {self.fix}"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return {"rule": self.rule, "error": type(self).__name__, "message": self.message, "fix": self.fix}


class UnknownNameError(QuantkitError, ValueError):
    """A name (scheme, hardware, backend, KV dtype) that is not in quantkit's tables."""

    default_rule = "QK001"

    @classmethod
    def for_name(cls, kind: str, name: object, valid: Iterable[str], hint: str = "") -> UnknownNameError:
        names = ", ".join(sorted(valid))
        return cls(f"Unknown {kind} {name!r}. Valid {kind}s: {names}.",
                   fix=hint or f"Pick one of the valid {kind}s listed above.")


class ModelNotFoundError(QuantkitError, FileNotFoundError):
    """The model path does not exist or is not a Hugging Face checkpoint."""

    default_rule = "QK002"


class MissingDependencyError(QuantkitError, ImportError):
    """A package a backend or the serving side needs is not installed in this environment."""

    default_rule = "QK003"


class OptionalExtraMissingError(MissingDependencyError):
    """An option asks for an optional extra (e.g. lm-eval for --lm-eval-tasks) that is not installed: bad input
    for this install, so exit 2 before any work rather than a failed check."""


class UnsupportedSchemeError(QuantkitError, ValueError):
    """The scheme cannot be produced by this backend or served on this hardware."""

    default_rule = "QK004"


class OutputExistsError(QuantkitError, FileExistsError):
    """The output directory already exists and ``overwrite`` was not asked for."""

    default_rule = "QK005"


class CheckpointReadError(QuantkitError, OSError):
    """A checkpoint cannot be read at all: missing config, unparsable JSON, corrupt safetensors header."""

    default_rule = "QK006"


class ValidationFailedError(QuantkitError):
    """The checkpoint written has at least one error finding; it was kept aside, not published."""

    default_rule = "QK007"

    def __init__(self, message: str, *, fix: str | None = None, rule: str | None = None,
                 report: object | None = None) -> None:
        self.report = report
        super().__init__(message, fix=fix, rule=rule)


class BackendError(QuantkitError, RuntimeError):
    """The producer (llm-compressor, ModelOpt) failed; the original exception is the ``__cause__``."""

    default_rule = "QK008"


class EnvironmentNotFoundError(QuantkitError, RuntimeError):
    """The produce or serve environment that a cross-environment step needs cannot be found."""

    default_rule = "QK009"


class ServeError(QuantkitError, RuntimeError):
    """vLLM failed to load or run a checkpoint."""

    default_rule = "QK010"


class CalibrationDataError(QuantkitError, ValueError):
    """The calibration data given cannot be used."""

    default_rule = "QK011"


class PlanOptionError(QuantkitError, ValueError):
    """An option of ``plan()`` / ``quantize()`` is out of range or contradicts the plan (context length,
    concurrency, tensor-parallel size, group size)."""

    default_rule = "QK012"


class ScriptGuardError(ServeError):
    """``load()`` ran from a script without an ``if __name__ == "__main__":`` guard, which vLLM's engine
    process re-imports."""

    default_rule = "QK013"


class ParallelismError(PlanOptionError):
    """The tensor/pipeline-parallel layout asked for cannot shard this checkpoint the way vLLM does (heads,
    KV heads, row-parallel inputs or group sizes per shard, layers per pipeline stage)."""

    default_rule = "QK014"


class HostMemoryError(QuantkitError, MemoryError):
    """The chosen production path needs more host RAM than this machine has; nothing was loaded."""

    default_rule = "QK017"


class DeviceMemoryError(QuantkitError, MemoryError):
    """The chosen production path needs more memory on one GPU than this machine's GPU has; nothing was
    loaded."""

    default_rule = "QK021"


class QualityBudgetError(QuantkitError, RuntimeError):
    """A mixed-precision checkpoint missed the quality budget it was searched for; nothing was published."""

    default_rule = "QK020"
