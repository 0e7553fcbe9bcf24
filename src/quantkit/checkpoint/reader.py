"""Read a checkpoint cheaply: JSON configs and safetensors *headers*, never tensor data.

A safetensors file starts with an 8-byte little-endian header length and a JSON header mapping tensor names
to dtype, shape and byte offsets. Reading only that makes validating a 400B checkpoint a matter of
milliseconds, with no torch import and no GPU.

The one exception is :meth:`CheckpointView.read_scalar`: the validator reads a few NVFP4 global-scale
scalars (4 bytes each) by byte offset, because whether q/k/v share one global scale is a property of values,
not headers. Every byte read that way is counted in :attr:`CheckpointView.tensor_bytes_read`.

Anything that makes a file unreadable as a whole (missing ``config.json``, JSON that does not parse, a
truncated or corrupt safetensors header) raises :class:`CheckpointReadError`; everything a readable
checkpoint can get wrong (a listed shard missing, a tensor past the end of its file) is left for the
validator to report.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from quantkit.errors import CheckpointReadError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
INDEX_FILE = "model.safetensors.index.json"

#: bits per element of every dtype the safetensors format defines (sub-byte floats included)
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


_SCALAR_FORMATS = {"F32": ("<f", 4), "F16": ("<e", 2), "BF16": ("<f", 2)}


class TensorInfo(NamedTuple):
    """One tensor as its shard's header describes it (a tuple: cheap to build 100,000 of)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: str
    offsets: tuple[int, int]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes_expected(self) -> int | None:
        """The byte size ``dtype`` and ``shape`` imply, or None for a dtype safetensors does not define."""
        bits = DTYPE_BITS.get(self.dtype)
        return None if bits is None else (self.numel * bits + 7) // 8


@dataclass(frozen=True)
class ShardHeader:
    file: str
    size: int
    header_len: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        """Offset of the data region in the file; tensor offsets are relative to it."""
        return 8 + self.header_len

    @property
    def data_size(self) -> int:
        return self.size - self.data_start


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising :class:`CheckpointReadError` with the file named on any problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointReadError(f"{path} does not exist.", fix="Point at a Hugging Face checkpoint directory.") from exc
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointReadError(f"{path} is not readable JSON: {exc}.",
                                  fix="Re-export the checkpoint; the file is corrupt or truncated.") from exc
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path} holds a JSON {type(data).__name__}, not an object.",
                                  fix="Re-export the checkpoint.")
    return data


def parse_header(raw: bytes, file: str, size: int) -> ShardHeader:
    """Parse the JSON header bytes of one safetensors file (``size`` is the whole file's size)."""
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not an object")
    tensors = {}
    make = TensorInfo._make  # tuple.__new__: cheaper than the NamedTuple constructor
    # a plain loop with `type(x) is int` checks (bool is not accepted as int): 150,000 entries in ~0.1 s
    for name, spec in header.items():
        if type(spec) is not dict:
            raise ValueError(f"entry {name!r} is not an object")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if type(dtype) is not str or type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            raise ValueError(f"entry {name!r} has a malformed dtype, shape or data_offsets")
        start, end = offsets
        if type(start) is not int or type(end) is not int or start < 0 or end < start:
            raise ValueError(f"entry {name!r} has data_offsets {offsets!r}: two integers, start <= end")
        for d in shape:
            if type(d) is not int or d < 0:
                raise ValueError(f"entry {name!r} has shape {shape!r}: non-negative integers only")
        tensors[name] = make((name, dtype, tuple(shape), file, (start, end)))
    return ShardHeader(file, size, len(raw), tensors, {str(k): str(v) for k, v in meta.items()})


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
                    f"{path.name} declares a {n}-byte header but the file has {size} bytes: truncated or not "
                    "safetensors.", fix="Re-download or re-export this shard.")
            raw = fh.read(n)
    except CheckpointReadError:
        raise  # an OSError subclass: never wrapped in "Cannot read" (one rule id, one fix)
    except OSError as exc:
        raise CheckpointReadError(f"Cannot read {path}: {exc}.", fix="Check the path and permissions.") from exc
    try:
        return parse_header(raw, path.name, size)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CheckpointReadError(f"{path.name} has a corrupt safetensors header: {exc}.",
                                  fix="Re-download or re-export this shard.") from exc


class CheckpointView:
    """A lazy, read-only view of a checkpoint directory: configs and tensor headers."""

    def __init__(self, path: str | Path) -> None:
        self._fds: dict[str, int] = {}
        self.path = Path(path)
        if not self.path.is_dir():
            what = "does not exist" if not self.path.exists() else "is not a directory"
            raise CheckpointReadError(f"{self.path} {what}.", fix="Point at a checkpoint directory.")
        if not (self.path / "config.json").is_file():
            raise CheckpointReadError(f"{self.path} has no config.json.",
                                      fix="Point at a Hugging Face checkpoint directory (it holds config.json).")
        #: bytes of tensor *data* read so far (only :meth:`read_scalar` reads any)
        self.tensor_bytes_read = 0

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
    def weight_map(self) -> dict[str, str] | None:
        """The index's tensor -> shard map, or None without an index."""
        if self.index is None:
            return None
        wm = self.index.get("weight_map")
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise CheckpointReadError(f"{INDEX_FILE} has no weight_map object of tensor names to shard files.",
                                      fix="Re-export the checkpoint.")
        return wm

    @cached_property
    def shard_files(self) -> list[str]:
        if self.weight_map is not None:
            return sorted(set(self.weight_map.values()))
        return sorted(p.name for p in self.path.glob("*.safetensors"))

    def _inside(self, name: str) -> bool:
        """Whether a shard name listed by the index stays inside the checkpoint directory."""
        return not (os.path.isabs(name) or ".." in Path(name).parts or name in ("", "."))

    @cached_property
    def bad_shard_names(self) -> list[str]:
        """Shard names in the index that point outside the checkpoint (never opened)."""
        return [f for f in self.shard_files if not self._inside(f)]

    @cached_property
    def missing_shards(self) -> list[str]:
        """Shards the index lists that are not files in the checkpoint."""
        return [f for f in self.shard_files if self._inside(f) and not (self.path / f).is_file()]

    @cached_property
    def shards(self) -> dict[str, ShardHeader]:
        return {f: read_safetensors_header(self.path / f) for f in self.shard_files
                if self._inside(f) and (self.path / f).is_file()}

    @property
    def header_bytes_read(self) -> int:
        return sum(8 + s.header_len for s in self.shards.values())

    @cached_property
    def duplicate_tensors(self) -> dict[str, list[str]]:
        """Tensor names found in more than one shard, with the shards."""
        seen: dict[str, str] = {}
        dup: dict[str, list[str]] = {}
        for shard in self.shards.values():
            for name in shard.tensors:
                if name in seen:
                    dup.setdefault(name, [seen[name]]).append(shard.file)
                else:
                    seen[name] = shard.file
        return dup

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

    def other_weight_files(self) -> list[str]:
        """Weight files vLLM could load but this reader cannot inspect (``*.bin``, ``*.pt``, ``*.gguf``)."""
        return sorted(p.name for pat in ("*.bin", "*.pt", "*.pth", "*.gguf") for p in self.path.glob(pat)
                      if not p.name.startswith("training_args"))

    def read_scalar(self, name: str) -> float | None:
        """Read one F32/BF16/F16 tensor of a single element by byte offset (at most 4 bytes).

        This is the only place the reader touches tensor data: NVFP4 global scales are scalars whose
        *values* decide whether vLLM's fused q/k/v (and w1/w3) layers dequantize correctly. Returns None when
        the tensor is missing, not a scalar, of another dtype, or outside its file.
        """
        info = self.tensors.get(name)
        if info is None or info.dtype not in _SCALAR_FORMATS or math.prod(info.shape) != 1:
            return None
        shard = self.shards[info.shard]
        start, end = info.offsets
        fmt, width = _SCALAR_FORMATS[info.dtype]
        if end - start != width or end > shard.data_size:
            return None
        try:
            fd = self._fds.get(info.shard)
            if fd is None:
                fd = self._fds[info.shard] = os.open(self.path / info.shard, os.O_RDONLY)
            raw = os.pread(fd, width, shard.data_start + start)
        except OSError:
            return None
        self.tensor_bytes_read += len(raw)
        if len(raw) != width:
            return None
        if info.dtype == "BF16":
            raw = b"\x00\x00" + raw  # bf16 is the high half of an f32
        return float(struct.unpack(fmt, raw)[0])

    def close(self) -> None:
        """Close the files :meth:`read_scalar` opened."""
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __del__(self) -> None:
        self.close()

    def total_bytes(self) -> int:
        return sum((self.path / f).stat().st_size for f in self.shard_files
                   if self._inside(f) and (self.path / f).is_file())


def check_source(path: str | Path, *, data: bool = True) -> None:
    """Refuse a source checkpoint that cannot be loaded, before anything loads it, naming the bad file.

    Reads ``config.json``, the index and every safetensors header (never tensor data). With ``data``, each
    shard must also hold the bytes its header describes: a download cut short keeps its header and loses
    its tail, and transformers would fail minutes later with a bare ``SafetensorError``. A header-only
    checkpoint (``plan()`` sizes those) passes with ``data=False``.

    Raises:
        CheckpointReadError: ``config.json`` or the index does not parse, a shard the index lists is
            missing, a shard's header is corrupt, or (with ``data``) a shard is shorter than its header says.
    """
    view = CheckpointView(path)
    try:
        try:
            _ = view.config, view.weight_map, view.shards
        except CheckpointReadError as exc:
            raise CheckpointReadError(f"The source checkpoint {view.path} cannot be read: {exc.message}",
                                      fix=exc.fix) from exc
        if view.bad_shard_names or view.missing_shards:
            names = [*view.bad_shard_names, *view.missing_shards]
            raise CheckpointReadError(
                f"The source checkpoint {view.path} lists shard(s) it does not hold in {INDEX_FILE}: "
                f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}.",
                fix="Re-download the missing shards (or the whole checkpoint).")
        if not view.shards and not view.other_weight_files():
            raise CheckpointReadError(f"The source checkpoint {view.path} has no weight files (*.safetensors).",
                                      fix="Point at the directory that holds the model's *.safetensors files.")
        if data:
            for shard in view.shards.values():
                needed = max((t.offsets[1] for t in shard.tensors.values()), default=0)
                if needed > shard.data_size:
                    raise CheckpointReadError(
                        f"The source checkpoint's shard {view.path / shard.file} is truncated: its header describes "
                        f"{8 + shard.header_len + needed} bytes, the file has {shard.size}.",
                        fix="Re-download or re-copy this shard; the transfer was cut short.")
    finally:
        view.close()
