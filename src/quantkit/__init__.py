"""quantkit: turn a Hugging Face checkpoint into a quantized checkpoint that vLLM loads and serves fast.

    from quantkit import quantize, load, validate, plan

``import quantkit`` stays light: torch, transformers, llm-compressor, ModelOpt and vLLM are imported only
inside the function that needs them (tests/test_lean_import.py proves it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from quantkit.errors import (
    BackendError,
    CalibrationDataError,
    CheckpointReadError,
    DeviceMemoryError,
    EnvironmentNotFoundError,
    HostMemoryError,
    MissingDependencyError,
    ModelNotFoundError,
    OutputExistsError,
    ParallelismError,
    PlanOptionError,
    QuantkitError,
    ScriptGuardError,
    ServeError,
    UnknownNameError,
    UnsupportedSchemeError,
    ValidationFailedError,
)
from quantkit.hardware import HARDWARE, Hardware, HardwareName, get_hardware
from quantkit.schemes import (
    KV_CACHE_DTYPES,
    SCHEMES,
    KvCacheDtype,
    Scheme,
    SchemeName,
    get_scheme,
)

__version__ = "0.1.0"

# public name -> module that defines it; imported on first attribute access
_LAZY = {
    "quantize": "quantkit.pipeline",
    "QuantizeResult": "quantkit.pipeline",
    "load": "quantkit.serve.engine",
    "serve_plan": "quantkit.serve.engine",
    "ServePlan": "quantkit.serve.engine",
    "serve_args": "quantkit.serve.args",
    "ServeArgs": "quantkit.serve.args",
    "Plan": "quantkit.planning.planner",
    "validate": "quantkit.validation",
    "ValidationReport": "quantkit.validation",
    "plan": "quantkit.planning.planner",
    "embedded_model_path": "quantkit.models.embedded",
}

if TYPE_CHECKING:  # pragma: no cover
    from quantkit.models.embedded import embedded_model_path
    from quantkit.pipeline import QuantizeResult, quantize
    from quantkit.serve.args import ServeArgs, serve_args
    from quantkit.planning.planner import Plan, plan
    from quantkit.serve.engine import ServePlan, load, serve_plan
    from quantkit.validation import ValidationReport, validate


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quantkit' has no attribute {name!r}")


__all__ = [
    "HARDWARE", "KV_CACHE_DTYPES", "SCHEMES", "BackendError", "CalibrationDataError", "CheckpointReadError",
    "DeviceMemoryError", "EnvironmentNotFoundError", "Hardware", "HardwareName", "HostMemoryError", "KvCacheDtype",
    "MissingDependencyError", "ModelNotFoundError", "OutputExistsError", "ParallelismError", "Plan",
    "PlanOptionError", "QuantizeResult", "QuantkitError", "Scheme", "SchemeName", "ScriptGuardError", "ServeArgs",
    "ServeError", "ServePlan", "UnknownNameError",
    "UnsupportedSchemeError", "ValidationFailedError", "ValidationReport", "embedded_model_path", "get_hardware",
    "get_scheme", "load", "plan", "quantize", "serve_args", "serve_plan", "validate",
]
