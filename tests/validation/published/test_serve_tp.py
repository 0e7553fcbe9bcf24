"""`quantkit serve` / load() on a quantized published layout refuse a TP size whose shards split a quantization
group (issue 15): the validator's per-shard rule, read from quantization_config and the packed headers, decides --
the 16-bit shape rules alone would pass TP 2 on Qwen2.5-72B GPTQ with the unpadded FFN (29568 / 2 = 14784, not a
multiple of the group 128; vLLM loads it and serves "!!!!", the record's source)."""

from __future__ import annotations

from pathlib import Path

import build
import pytest

import quantkit
from quantkit.errors import ParallelismError


def _built(rid: str, tmp_path: Path) -> Path:
    return build.build(build.records()[rid], tmp_path / rid)


def test_serve_refuses_tp_that_splits_a_group(tmp_path: Path) -> None:
    path = _built("qwen2.5-72b-instruct-gptq-unpadded-tp2", tmp_path)
    with pytest.raises(ParallelismError) as err:
        quantkit.serve_args(path, hardware="h100", gpus=2)
    assert "group-size-divides" in str(err.value) and "TP sizes that pass here: 1" in str(err.value)
    with pytest.raises(ParallelismError, match="group-size-divides"):
        quantkit.serve_args(path, hardware="a100", gpus=8)


def test_serve_takes_the_padded_release_at_tp2(tmp_path: Path) -> None:
    path = _built("qwen2.5-72b-instruct-gptq-int4", tmp_path)
    args = quantkit.serve_args(path, hardware="h100", gpus=2)
    assert "--tensor-parallel-size" in args.argv and "2" in args.argv
