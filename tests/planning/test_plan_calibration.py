"""How much calibration a plan asks for (issue 13): the embedded demo's short budget, the producer's own
recommendation for a real model, nothing for a data-free scheme; quantize() takes the plan's figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantkit import plan
from quantkit.backends import get_backend
from quantkit.calibration import EMBEDDED_DEMO_SAMPLES, EMBEDDED_DEMO_SEQ_LENGTH, builtin_text_warning


def test_embedded_demo_calibrates_short_and_says_so(embedded_path: Path) -> None:
    p = plan(embedded_path, "cpu", scheme="w8a8-int8")
    assert (p.calibration_samples, p.calibration_seq_len) == (EMBEDDED_DEMO_SAMPLES, EMBEDDED_DEMO_SEQ_LENGTH)
    assert "embedded" in p.calibration_reason and "512 x 2048" in p.calibration_reason
    assert "calibrate" in str(p)
    assert p.to_dict()["calibration"]["samples"] == EMBEDDED_DEMO_SAMPLES


def test_real_models_get_the_producers_recommendation(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", scheme="w4a16", backend="llmcompressor")
    assert (p.calibration_samples, p.calibration_seq_len) == (512, 2048)
    assert "llm-compressor" in p.calibration_reason
    n, t, _ = get_backend("modelopt").calibration_recommendation
    q = plan(arch_dir("llama3"), "h100", scheme="fp8-static", backend="modelopt")
    assert (q.calibration_samples, q.calibration_seq_len) == (n, t) == (512, 512)


def test_data_free_plans_ask_for_nothing(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", scheme="fp8-dynamic", kv_cache="auto")
    assert not p.needs_calibration
    assert (p.calibration_samples, p.calibration_seq_len, p.calibration_reason) == (0, 0, "")


def test_builtin_text_warning_names_the_model_and_the_fix() -> None:
    w = builtin_text_warning("/models/Llama-3.1-8B-Instruct")
    assert w.startswith("[calibration] Llama-3.1-8B-Instruct") and "calibration=" in w and "--calibration" in w
