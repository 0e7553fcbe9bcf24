"""Real llm-compressor and ModelOpt outputs of the embedded model pass with no error finding."""

from __future__ import annotations

import pytest

from quantkit.validation import validate

pytestmark = pytest.mark.produce

LOADABLE = ["lc-fp8-dynamic", "lc-w4a16-g64", "lc-w4a16-asym", "lc-w8a8", "lc-w4a8", "lc-fp8-block", "lc-nvfp4a16",
            "lc-nvfp4", "lc-fp8-kv", "mo-fp8", "mo-fp8-pcpt", "mo-fp8-kv", "mo-nvfp4", "mo-w4a16-nvfp4"]


@pytest.mark.parametrize("name", LOADABLE)
def test_real_output_has_no_error(real, name):
    report = validate(real(name))
    assert report.ok, [str(f) for f in report.errors]
    assert report.stats["tensors"] > 0
    assert not report.by_rule("validator-internal")


@pytest.mark.parametrize("name,hardware", [("lc-fp8-dynamic", "h100"), ("lc-fp8-dynamic", "l40s"),
                                           ("lc-nvfp4", "b200"), ("lc-nvfp4a16", "h100"), ("mo-nvfp4", "b200"),
                                           ("mo-fp8", "h100"), ("lc-w4a16-g64", "a100"), ("lc-fp8-dynamic", "cpu"),
                                           ("lc-w8a8", "a100"), ("lc-w8a8", "cpu"), ("lc-w4a8", "cpu"),
                                           ("lc-fp8-block", "h100"), ("mo-fp8-pcpt", "h200"),
                                           ("mo-w4a16-nvfp4", "h100")])
def test_real_output_on_a_target_that_runs_it_has_no_finding_about_hardware(real, name, hardware, monkeypatch):
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    report = validate(real(name), hardware=hardware)
    assert report.ok, [str(f) for f in report.errors]
    assert not report.by_rule("hardware-capability"), [str(f) for f in report.findings]


def test_headers_only_for_non_nvfp4_and_four_bytes_per_nvfp4_scale(real):
    fp8 = validate(real("lc-fp8-dynamic"))
    assert fp8.stats["tensor_bytes_read"] == 0
    nvfp4 = validate(real("lc-nvfp4"))
    # 4 layers x (q, k, v + gate, up) global scales, 4 bytes each
    assert nvfp4.stats["tensor_bytes_read"] == 4 * 5 * 4


def test_quant_method_reported(real):
    assert validate(real("lc-fp8-dynamic")).quant_method == "compressed-tensors"
    report = validate(real("mo-nvfp4"))
    assert report.quant_method == "modelopt"
    assert report.vllm_method == "modelopt_fp4"


def test_real_rejected_modelopt_export_fails(real):
    """ModelOpt's INT8 SmoothQuant export is a real producer output vLLM refuses."""
    report = validate(real("mo-int8-sq"))
    assert not report.ok
    assert [f.rule for f in report.errors] == ["modelopt-algo-loadable"]
    assert "W8A8_SQ_PER_CHANNEL" in report.errors[0].message
