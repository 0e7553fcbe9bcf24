"""Read a checkpoint cheaply: JSON configs and safetensors *headers*, never tensor data.

A safetensors file starts with an 8-byte little-endian header length and a JSON header mapping tensor names
to dtype, shape and byte offsets. Reading only that makes validating a 400B checkpoint a matter of
milliseconds, with no torch import and no GPU.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from quantkit.errors import CheckpointReadError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: str
    offsets: tuple[int, int]


@dataclass(frozen=True)
class ShardHeader:
    file: str
    size: int
    header_len: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising :class:`CheckpointReadError` with the file named on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointReadError(f"{path} does not exist.", fix="Point at a Hugging Face checkpoint directory.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointReadError(f"{path} is not readable JSON: {exc}.",
                                  fix="Re-export the checkpoint; the file is corrupt or truncated.") from exc
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} holds a JSON {type(data).__name__}, not an object.",
                                  fix="Re-export the checkpoint.")
    return data


def read_safetensors_header(path: Path) -> ShardHeader:
    """Parse one safetensors file's header (at most 100 MiB of JSON) without reading tensor data."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) != 8:
                raise CheckpointReadError(f"{path.name} is truncated: {size} bytes, no safetensors header.",
                                          fix="Re-download or re-export this shard.")
            (n,) = struct.unpack("<Q", raw_len)
            if n > MAX_HEADER_BYTES or n + 8 > size:
                raise CheckpointReadError(
                    f"{path.name} declares a {n}-byte header but the file has {size} bytes: truncated or not safetensors.",
                    fix="Re-download or re-export this shard.")
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointReadError(f"Cannot read {path}: {exc}.", fix="Check the path and permissions.") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        tensors = {}
        for name, spec in header.items():
            start, end = spec["data_offsets"]
            tensors[name] = TensorInfo(name, str(spec["dtype"]), tuple(int(d) for d in spec["shape"]),
                                       path.name, (int(start), int(end)))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointReadError(f"{path.name} has a corrupt safetensors header: {exc}.",
                                  fix="Re-download or re-export this shard.") from exc
    return ShardHeader(path.name, size, n, tensors, {str(k): str(v) for k, v in dict(meta).items()})


class CheckpointView:
    """A lazy, read-only view of a checkpoint directory: configs and tensor headers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointReadError(f"{self.path} is not a directory.", fix="Point at a checkpoint directory.")
        if not (self.path / "config.json").is_file():
            raise CheckpointReadError(f"{self.path} has no config.json.",
                                      fix="Point at a Hugging Face checkpoint directory (it holds config.json).")

    @cached_property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    @cached_property
    def hf_quant_config(self) -> dict[str, Any] | None:
        p = self.path / "hf_quant_config.json"
        return read_json(p) if p.is_file() else None

    @cached_property
    def index(self) -> dict[str, Any] | None:
        p = self.path / INDEX_FILE
        return read_json(p) if p.is_file() else None

    @cached_property
    def shard_files(self) -> list[str]:
        if self.index is not None:
            wm = self.index.get("weight_map")
            if not isinstance(wm, dict):
                raise CheckpointReadError(f"{INDEX_FILE} has no weight_map object.", fix="Re-export the checkpoint.")
            return sorted({str(v) for v in wm.values()})
        return sorted(p.name for p in self.path.glob("*.safetensors"))

    @cached_property
    def shards(self) -> dict[str, ShardHeader]:
        return {f: read_safetensors_header(self.path / f) for f in self.shard_files if (self.path / f).is_file()}

    @cached_property
    def tensors(self) -> dict[str, TensorInfo]:
        out: dict[str, TensorInfo] = {}
        for shard in self.shards.values():
            out.update(shard.tensors)
        return out

    @cached_property
    def module_names(self) -> list[str]:
        """Names of modules that own a ``weight`` tensor (``x.y.weight`` -> ``x.y``)."""
        return sorted({n.rsplit(".", 1)[0] for n in self.tensors if n.endswith(".weight")})

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        qc = self.config.get("quantization_config")
        return qc if isinstance(qc, dict) else None

    def total_bytes(self) -> int:
        return sum((self.path / f).stat().st_size for f in self.shard_files if (self.path / f).is_file())
