"""The cross-check with vLLM's own registry, and quantkit's bundled copy of it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import synthetic_checkpoints as S

from quantkit.validation import vllm_registry as vr

REPO = Path(__file__).resolve().parents[2]
SERVE_VLLM = REPO / ".venvs" / "serve" / "lib" / "python3.11" / "site-packages" / "vllm"
SERVE_PYTHON = REPO / ".venvs" / "serve" / "bin" / "python"
needs_vllm_source = pytest.mark.skipif(not SERVE_VLLM.is_dir(), reason="no vLLM source tree at .venvs/serve")


@needs_vllm_source
def test_bundled_table_matches_the_vllm_it_was_read_from():
    """quantkit's own table must equal what the source reader finds in vLLM 0.32.0 (drift fails here)."""
    found = vr.read_vllm_source(SERVE_VLLM)
    assert not found.notes
    if found.version != vr.BUNDLED.version:
        pytest.skip(f"serve env has vLLM {found.version}; BUNDLED was read from {vr.BUNDLED.version}")
    assert replace(found, source="", notes=()) == replace(vr.BUNDLED, source="", notes=())


@needs_vllm_source
def test_source_reader_finds_the_methods_and_capabilities_the_rules_use():
    found = vr.read_vllm_source(SERVE_VLLM)
    assert {"compressed-tensors", "modelopt", "modelopt_fp4", "awq", "gptq", "fp8"} <= set(found.methods)
    assert found.method_min_capability["modelopt"] == 80
    assert found.scheme_min_capability["CompressedTensorsW8A8Fp8"] == 89
    assert "W4A16_NVFP4" in found.modelopt_algos and "INT4_AWQ" not in found.modelopt_algos


def test_a_piece_that_cannot_be_read_keeps_the_bundled_value(tmp_path):
    pkg = tmp_path / "vllm"
    (pkg / "model_executor" / "layers" / "quantization").mkdir(parents=True)
    (pkg / "_version.py").write_text("__version__ = version = '9.9.9'\n")
    found = vr.read_vllm_source(pkg)
    assert found.version == "9.9.9"
    assert found.methods == vr.BUNDLED.methods and found.notes


def test_facts_cache_round_trip(tmp_path):
    path = tmp_path / "facts.json"
    vr._store_cached(path, vr.BUNDLED)
    assert vr._load_cached(path) == vr.BUNDLED
    path.write_text("{broken")
    assert vr._load_cached(path) is None


def test_without_vllm_the_bundled_table_is_used(monkeypatch):
    monkeypatch.setattr(vr, "installed_vllm_dir", lambda: None)
    vr.vllm_facts.cache_clear()
    assert vr.vllm_facts("source") is vr.BUNDLED
    assert vr.vllm_facts("off") is vr.BUNDLED


def test_source_mode_reads_an_installed_vllm(monkeypatch, tmp_path):
    if not SERVE_VLLM.is_dir():
        pytest.skip("no vLLM source tree at .venvs/serve")
    monkeypatch.setattr(vr, "installed_vllm_dir", lambda: SERVE_VLLM)
    monkeypatch.setenv("QUANTKIT_CACHE", str(tmp_path))
    vr.vllm_facts.cache_clear()
    facts = vr.vllm_facts("source")
    assert facts.source.startswith("installed vLLM") and list(tmp_path.glob("vllm-facts/*.json"))
    vr.vllm_facts.cache_clear()
    assert vr.vllm_facts("source") == facts  # now from the disk cache


def test_version_parsing():
    assert vr.parse_version("0.24.0") == (0, 24, 0)
    assert vr.parse_version("v0.25.1rc2.dev3+gabc") == (0, 25, 1)
    assert vr.parse_version("latest") == ()
    assert vr.newest_known_version() == vr.BUNDLED.version


@pytest.mark.serve
@pytest.mark.skipif(not SERVE_PYTHON.is_file(), reason="no serve environment at .venvs/serve")
def test_in_the_serve_environment_validation_uses_the_installed_vllm(tmp_path):
    ckpt = S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"])
    code = ("import json, sys, time; t = time.perf_counter(); from quantkit.validation import validate; "
            "r = validate(sys.argv[1]); print(json.dumps({'ok': r.ok, 'registry': r.registry, "
            "'version': r.vllm_version, 'source': r.vllm_version_source, 'vllm_imported': 'vllm' in sys.modules, "
            "'torch_imported': 'torch' in sys.modules, 's': time.perf_counter() - t}))")
    proc = subprocess.run([str(SERVE_PYTHON), "-c", code, str(ckpt)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "QUANTKIT_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["registry"].startswith("installed vLLM") and out["source"] == "installed"
    assert not out["vllm_imported"] and not out["torch_imported"]
    assert out["s"] < 5


def test_lean_import():
    """``import quantkit.validation`` and a whole validation pull in no torch, transformers or vLLM."""
    code = ("import sys; import quantkit, quantkit.validation, quantkit.cli.validate; "
            "heavy = [m for m in ('torch', 'transformers', 'vllm', 'llmcompressor', 'modelopt', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
