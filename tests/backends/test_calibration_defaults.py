"""quantize() on a real model other than the embedded one calibrates with the plan's figures, warns that the
built-in text is off-domain, and records the calibration source and token count in quantkit.json (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import save_tiny_llama

from quantkit import quantize


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, embedded_path: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), embedded_path)


def test_builtin_text_on_a_real_model_warns_and_is_recorded(tiny_llama: Path, tmp_path: Path) -> None:
    res = quantize(tiny_llama, "w8a8-int8", hardware="cpu", output_dir=tmp_path / "out")
    assert any(n.startswith(f"[calibration] {tiny_llama.name} is calibrated on quantkit's built-in text")
               for n in res.notes), res.notes
    manifest = json.loads((res.output_dir / "quantkit.json").read_text())
    assert manifest["max_seq_length"] == 2048  # llm-compressor's recommendation, from the plan
    # the built-in text holds ~69k tokens: fewer than 512 windows of 2048, all of them used
    assert 30 <= manifest["num_calibration_samples"] < 512
    assert manifest["calibration"]["source"].startswith("built-in text")
    assert manifest["calibration"]["tokens"] > 60_000


def test_the_users_own_text_is_not_warned_about(tiny_llama: Path, tmp_path: Path) -> None:
    texts = ["The invoice total is due within thirty days of delivery. " * 40] * 4
    res = quantize(tiny_llama, "w8a8-int8", hardware="cpu", output_dir=tmp_path / "out", calibration=texts,
                   num_calibration_samples=4, max_seq_length=128)
    assert not any(n.startswith("[calibration]") for n in res.notes), res.notes
    manifest = json.loads((res.output_dir / "quantkit.json").read_text())
    assert manifest["calibration"] == {"source": "list of 4 texts", "tokens": manifest["calibration"]["tokens"]}
    assert (manifest["num_calibration_samples"], manifest["max_seq_length"]) == (4, 128)
