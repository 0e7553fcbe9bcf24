"""Published checkpoints, rebuilt header-only from their real configs, get the verdict vLLM gives them.

Each record in ``records/`` names its source (Hugging Face repo and file, where it was read, what was
reconstructed), the vLLM code that decides the verdict, and the verdict: the set of rules that report an error
(empty where vLLM serves the checkpoint) and rules that must at least warn. ``build.py`` writes the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import build
from quantkit.validation import RULES, validate

RECORDS = build.records()


def test_the_corpus_covers_the_published_families():
    assert len(RECORDS) >= 20
    archs = {r["layout"]["arch"] for r in RECORDS.values()}
    assert {"deepseek_v3", "gpt_oss", "dense", "qwen3_moe", "qwen3_next", "qwen35", "mixtral", "gemma3_vlm",
            "granite4_hybrid", "nemotron_h"} <= archs
    assert any(r["expect"]["errors"] for r in RECORDS.values())


@pytest.mark.parametrize("rid", sorted(RECORDS))
def test_record_is_complete(rid: str):
    rec = RECORDS[rid]
    assert rec["source"]["repo"] and rec["source"]["seen"] and rec["source"]["how"], rid
    assert "vllm/" in rec["vllm"] or ".py" in rec["vllm"], "cite the vLLM code behind the verdict"
    for rule in rec["expect"]["errors"] + rec["expect"]["warnings"]:
        assert rule in RULES, rule
    assert rec.get("quantization_config") or rec.get("hf_quant_config"), "a published quantized checkpoint"


@pytest.mark.parametrize("rid", sorted(RECORDS))
def test_verdict(rid: str, tmp_path: Path):
    rec = RECORDS[rid]
    ckpt = build.build(rec, tmp_path / rid)
    report = validate(ckpt, **rec.get("validate", {}))
    errors = {f.rule for f in report.errors}
    assert errors == set(rec["expect"]["errors"]), [str(f) for f in report.findings]
    warned = {f.rule for f in report.warnings}
    assert set(rec["expect"]["warnings"]) <= warned, [str(f) for f in report.findings]
    assert report.ok is not bool(rec["expect"]["errors"])
    assert report.stats["tensor_bytes_read"] <= 4096, "header-only (plus NVFP4 global-scale scalars)"


def test_build_script_writes_a_checkpoint_from_the_command_line(tmp_path: Path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(Path(build.__file__)), str(tmp_path), "deepseek-v3-fp8"],
                         capture_output=True, text=True, check=True).stdout
    ckpt = tmp_path / "deepseek-v3-fp8"
    assert str(ckpt) in out and (ckpt / "model.safetensors.index.json").is_file()
    # sparse data regions: 3 + 1 DeepSeek-V3 layers are ~9 GB of logical size and a few hundred KB on disk
    size = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    used = sum(f.stat().st_blocks * 512 for f in ckpt.glob("*.safetensors"))
    assert size > 8 * 2**30 and used < 4 * 2**20, (size, used)
