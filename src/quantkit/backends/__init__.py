"""Producers behind ``quantize()``: one module per backend, registered by name.

The registry imports a backend module only when that backend is asked for, so ``import quantkit`` never
imports torch, llm-compressor or ModelOpt.
"""

from quantkit.backends.base import Backend, ProduceJob, ProduceResult, backend_names, get_backend, register_backend

__all__ = ["Backend", "ProduceJob", "ProduceResult", "backend_names", "get_backend", "register_backend"]
