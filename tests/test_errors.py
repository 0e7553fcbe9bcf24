"""Errors read as one paragraph: one rule id, one "To resolve:", even when one error wraps another."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from quantkit.checkpoint.reader import read_safetensors_header
from quantkit.errors import BackendError, CheckpointReadError
from quantkit.validation import validate


def test_a_shard_declaring_a_huge_header_is_one_clean_error(tmp_path: Path) -> None:
    """The issue's garbled ``[QK006] Cannot read …: [QK006] … To resolve: … .. To resolve: …``."""
    shard = tmp_path / "model.safetensors"
    shard.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    (tmp_path / "config.json").write_text("{}")
    for call in (lambda: read_safetensors_header(shard), lambda: validate(tmp_path)):
        with pytest.raises(CheckpointReadError) as e:
            call()
        text = str(e.value)
        assert text.count("[QK006]") == 1 and text.count("To resolve:") == 1, text
        assert "1000000000000-byte header" in text and "Re-download" in text and "Cannot read" not in text


def test_an_error_formatted_from_another_keeps_one_rule_id_and_one_fix() -> None:
    inner = CheckpointReadError("shard-1.safetensors is truncated.", fix="Re-download it.")
    outer = BackendError(f"the producer failed: {inner}")
    assert str(outer) == "[QK008] the producer failed: shard-1.safetensors is truncated.\nTo resolve: Re-download it."
    outer = CheckpointReadError(f"Cannot read x: {inner}", fix="Check the path.")
    assert outer.message == "Cannot read x: shard-1.safetensors is truncated." and outer.fix == "Check the path."
    assert outer.to_dict()["message"].count("QK") == 0


def test_plain_errors_are_unchanged() -> None:
    e = CheckpointReadError("config.json is not JSON [at line 3].", fix="Re-export.")
    assert str(e) == "[QK006] config.json is not JSON [at line 3].\nTo resolve: Re-export."
