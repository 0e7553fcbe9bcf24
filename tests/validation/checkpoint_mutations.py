"""Copy a real checkpoint and break one thing: a config key, a header entry, a tensor value, a file.

Copies share the (read-only) shard files through symlinks until a header or value is rewritten, so a
mutated 160 MB checkpoint costs a few KB. Every helper returns the new checkpoint directory.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

Header = dict[str, Any]


def clone(src: Path, dst: Path) -> Path:
    """JSON files copied, weight files symlinked."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.suffix == ".json":
            shutil.copyfile(p, dst / p.name)
        elif p.is_file():
            os.symlink(p.resolve(), dst / p.name)
    return dst


def edit_json(ckpt: Path, name: str, fn: Callable[[dict[str, Any]], Any]) -> Path:
    """Apply ``fn`` to a JSON file in place (``fn`` mutates the dict; what it returns is ignored)."""
    p = ckpt / name
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data, indent=2))
    return ckpt


def edit_quant_config(ckpt: Path, fn: Callable[[dict[str, Any]], Any]) -> Path:
    return edit_json(ckpt, "config.json", lambda c: fn(c["quantization_config"]))


def read_header(path: Path) -> tuple[Header, int]:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)), 8 + n


def rewrite_header(ckpt: Path, fn: Callable[[Header], Any], shard: str = "model.safetensors") -> Path:
    """Rewrite one shard's header with ``fn`` (which edits name -> {dtype, shape, data_offsets} in place).

    Tensors keep their bytes where they still fit (in files over 64 MB only tensors up to 1 MB do, the rest
    become sparse holes: the validator reads headers and scalars only); new or resized tensors get zeroed
    bytes, and offsets are recomputed so the file stays a valid safetensors file, unless a
    ``"__keep_offsets__"`` key in the header keeps them verbatim.
    """
    src = ckpt / shard
    real = src.resolve()
    header, start = read_header(real)
    old = {k: dict(v) for k, v in header.items() if k != "__metadata__"}
    fn(header)
    keep = bool(header.pop("__keep_offsets__", False))
    bits = {"BF16": 16, "F16": 16, "F32": 32, "F64": 64, "F8_E4M3": 8, "F8_E5M2": 8, "U8": 8, "I8": 8,
            "I16": 16, "I32": 32, "I64": 64, "BOOL": 8}
    pos = 0
    chunks: list[tuple[int, int, int]] = []  # (new start, old start, length to copy)
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if keep:
            continue
        n = 1
        for d in spec["shape"]:
            n *= d
        size = (n * bits.get(spec["dtype"], 8) + 7) // 8
        prev = old.get(name)
        if prev is not None:
            o0, o1 = prev["data_offsets"]
            chunks.append((pos, o0, min(size, o1 - o0)))
        spec["data_offsets"] = [pos, pos + size]
        pos += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = ckpt / (shard + ".tmp")
    with real.open("rb") as fin, tmp.open("wb") as fout:
        fout.write(struct.pack("<Q", len(raw)))
        fout.write(raw)
        base = 8 + len(raw)
        if keep:
            fin.seek(start)
            shutil.copyfileobj(fin, fout)
        else:
            big = real.stat().st_size > 64 << 20
            for new_start, old_start, length in chunks:
                if big and length > 1 << 20:
                    continue
                fin.seek(start + old_start)
                fout.seek(base + new_start)
                fout.write(fin.read(length))
            fout.truncate(base + pos)
    src.unlink()
    tmp.rename(src)
    return ckpt


def write_value(ckpt: Path, tensor: str, value: bytes, shard: str = "model.safetensors") -> Path:
    """Overwrite a tensor's bytes (the shard is materialised as a real file first)."""
    src = ckpt / shard
    if src.is_symlink():
        real = src.resolve()
        src.unlink()
        shutil.copyfile(real, src)
    header, start = read_header(src)
    o0, o1 = header[tensor]["data_offsets"]
    assert len(value) == o1 - o0, (len(value), o1 - o0)
    with src.open("r+b") as fh:
        fh.seek(start + o0)
        fh.write(value)
    return ckpt


def truncate(ckpt: Path, drop_bytes: int, shard: str = "model.safetensors") -> Path:
    src = ckpt / shard
    real = src.resolve()
    size = real.stat().st_size
    src.unlink()
    with real.open("rb") as fin, src.open("wb") as fout:
        shutil.copyfileobj(fin, fout)
    os.truncate(src, size - drop_bytes)
    return ckpt
