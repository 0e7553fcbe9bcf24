"""The headers-only reader: what makes a checkpoint unreadable (exit 2) and what it reads (nothing but headers)."""

from __future__ import annotations

import json
import struct

import pytest
import synthetic_checkpoints as S

from quantkit.checkpoint.reader import CheckpointView, read_safetensors_header
from quantkit.errors import CheckpointReadError


def _raw(path, header_bytes, total=None):
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header_bytes)))
        fh.write(header_bytes)
        if total is not None:
            fh.truncate(total)
    return path


@pytest.mark.parametrize("header", [
    b"not json",
    b"[1, 2]",
    json.dumps({"w": {"dtype": "F32", "shape": [2]}}).encode(),  # no data_offsets
    json.dumps({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(),
    json.dumps({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}).encode(),
    json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}).encode(),
    json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}).encode(),
    json.dumps({"w": "F32"}).encode(),
    json.dumps({"__metadata__": [1], "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode(),
    b"\xff\xfe\xfd",
])
def test_corrupt_headers_are_read_errors(tmp_path, header):
    with pytest.raises(CheckpointReadError):
        read_safetensors_header(_raw(tmp_path / "x.safetensors", header, total=len(header) + 64))


def test_truncated_files_are_read_errors(tmp_path):
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointReadError, match="truncated"):
        read_safetensors_header(tmp_path / "short.safetensors")
    path = tmp_path / "cut.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointReadError, match="1000-byte header"):
        read_safetensors_header(path)


def test_header_only_and_metadata(tmp_path):
    size = S.write_safetensors(tmp_path / "m.safetensors", {"a.weight": ("BF16", (4, 8)), "b": ("F32", ())})
    h = read_safetensors_header(tmp_path / "m.safetensors")
    assert h.size == size and h.data_size == 4 * 8 * 2 + 4 and h.metadata == {"format": "pt"}
    assert h.tensors["a.weight"].shape == (4, 8) and h.tensors["a.weight"].nbytes_expected == 64


def test_view_needs_a_directory_with_config(tmp_path):
    with pytest.raises(CheckpointReadError, match="does not exist"):
        CheckpointView(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointReadError, match="not a directory"):
        CheckpointView(tmp_path / "f")
    with pytest.raises(CheckpointReadError, match="no config.json"):
        CheckpointView(tmp_path)


@pytest.mark.parametrize("text", ["{", "[]", "\x00\x01", '{"a": ' * 5000])
def test_unparsable_config_is_a_read_error(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointReadError):
        _ = CheckpointView(tmp_path).config


def test_index_with_a_bad_weight_map(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a"]}))
    with pytest.raises(CheckpointReadError, match="weight_map"):
        _ = CheckpointView(tmp_path).shard_files


def test_index_paths_outside_the_checkpoint_are_never_opened(tmp_path):
    ckpt = tmp_path / "c"
    S.write_checkpoint(ckpt, {"model_type": "llama"}, {"a.weight": ("BF16", (2, 2))}, shards=1)
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model.safetensors", "b.weight": "/etc/hostname", "c.weight": "../x.safetensors"}}))
    view = CheckpointView(ckpt)
    assert sorted(view.bad_shard_names) == ["../x.safetensors", "/etc/hostname"]
    assert list(view.shards) == ["model.safetensors"]


def test_read_scalar_reads_four_bytes_and_counts_them(tmp_path):
    ckpt = tmp_path / "c"
    S.write_checkpoint(ckpt, {}, {"s": ("F32", (1,)), "w": ("BF16", (64, 64)), "h": ("BF16", ())},
                       data={"s": S.f32(2.5), "h": struct.pack("<f", 3.0)[2:]})
    view = CheckpointView(ckpt)
    assert view.read_scalar("s") == 2.5 and view.tensor_bytes_read == 4
    assert view.read_scalar("h") == 3.0 and view.tensor_bytes_read == 6
    assert view.read_scalar("w") is None and view.read_scalar("missing") is None
    assert view.tensor_bytes_read == 6


def test_existing_api_still_works(tmp_path):
    ckpt = tmp_path / "c"
    S.write_checkpoint(ckpt, {"quantization_config": {"quant_method": "fp8"}},
                       {"model.layers.0.q_proj.weight": ("BF16", (4, 4)), "model.norm.weight": ("BF16", (4,))},
                       shards=2)
    view = CheckpointView(ckpt)
    assert view.module_names == ["model.layers.0.q_proj", "model.norm"]
    assert view.quantization_config == {"quant_method": "fp8"}
    assert view.total_bytes() == sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
    assert view.duplicate_tensors == {} and view.missing_shards == []
