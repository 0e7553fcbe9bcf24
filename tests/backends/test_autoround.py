"""w4a16-autoround (issue 13): llm-compressor's AutoRoundModifier produces the same INT4-group format as GPTQ's
w4a16, so vLLM serves it with the same kernels; the validator passes it for a GPU target. Slow on 2 cores
(AutoRound tunes 200 steps per decoder layer; ~3 min for this 2-layer model, mostly torch.compile)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import save_tiny_llama

from quantkit import plan, quantize, validate
from quantkit.schemes import get_scheme


def test_autoround_is_w4a16_format_with_its_own_recipe(embedded_path: Path) -> None:
    ar, gptq = get_scheme("w4a16-autoround"), get_scheme("w4a16")
    assert ar.format_key == gptq.format_key and ar.weights == gptq.weights  # same kernels in vLLM
    assert get_scheme("autoround") is ar and ar.llmcompressor.algorithm == "autoround"
    p = plan(embedded_path, "h100", scheme="w4a16-autoround")
    assert p.backend == "llmcompressor" and p.group_size == 64 and p.needs_calibration


@pytest.mark.slow
def test_autoround_produces_a_checkpoint_vllm_loads(tmp_path: Path, embedded_path: Path) -> None:
    src = save_tiny_llama(tmp_path / "src", embedded_path)
    res = quantize(src, "w4a16-autoround", hardware="h100", output_dir=tmp_path / "q", num_calibration_samples=8,
                   max_seq_length=64)
    assert "AutoRoundModifier" in (res.output_dir / "recipe.yaml").read_text()
    qc = json.loads((res.output_dir / "config.json").read_text())["quantization_config"]
    w = qc["config_groups"]["group_0"]["weights"]
    assert (qc["format"], w["num_bits"], w["strategy"], w["group_size"]) == ("pack-quantized", 4, "group", 64)
    assert validate(res.output_dir, hardware="h100").ok
