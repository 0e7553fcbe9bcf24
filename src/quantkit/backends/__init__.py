"""Producers behind ``quantize()``: one module per backend, registered by name.

The registry imports a backend module only when that backend is asked for, so ``import quantkit`` never
imports torch, llm-compressor or ModelOpt.
"""

from quantkit.backends.base import (
    Backend,
    BackendSupport,
    ModelFreeJob,
    ProduceJob,
    ProduceResult,
    SupportQuery,
    all_backends,
    backend_names,
    backends_for,
    get_backend,
    register_backend,
    unregister_backend,
)

__all__ = ["Backend", "BackendSupport", "ModelFreeJob", "ProduceJob", "ProduceResult", "SupportQuery", "all_backends",
           "backend_names", "backends_for", "get_backend", "register_backend", "unregister_backend"]
