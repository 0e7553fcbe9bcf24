"""The offloaded production path (issue 14): the model is loaded through compressed-tensors'
``load_offloaded_model`` with ``device_map="auto_offload"`` and the plan's host-RAM budget (the rest of the
weights on disk), and llm-compressor's sequential pipeline calibrates one decoder layer at a time. On a real
tiny Llama, run on this CPU with every weight on disk, it writes the same checkpoint as the in-memory path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import load_tensors, save_tiny_llama

from quantkit import hardware, plan, quantize, validate
from quantkit.errors import PlanOptionError

GIB = 2**30
CALIB = {"num_calibration_samples": 8, "max_seq_length": 64}


def test_offloaded_gptq_matches_the_in_memory_checkpoint(sharded_llama: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mem = quantize(sharded_llama, "w4a16", hardware="h100", output_dir=tmp_path / "mem", production="in-memory",
                   **CALIB)
    # 2.5 GiB of RAM: in-memory (weights + 2 GiB for the libraries) is over 75 % of it and GPTQ cannot go
    # model-free, so auto takes the offloaded path, with no RAM left over for weights: all of them on disk
    monkeypatch.setattr(hardware, "host_memory_bytes", lambda: int(2.5 * GIB))
    p = plan(sharded_llama, "h100", scheme="w4a16")
    assert p.production == "offloaded", p.production_reason
    assert "model-free cannot run: w4a16 needs calibration data" in p.production_reason
    assert p.production_cpu_budget == 0 and p.production_fits
    assert p.host_memory[0].path == "offloaded" and "GPTQ Hessians" in p.host_memory[0].how
    assert "disk ~" in str(p) and "RAM budget for weights 0.0 GiB" in str(p)
    off = quantize(sharded_llama, p, output_dir=tmp_path / "off", **CALIB)
    assert validate(off.output_dir, hardware="h100").ok
    manifest = json.loads((off.output_dir / "quantkit.json").read_text())
    assert manifest["production"] == "offloaded" and manifest["plan"]["production_cpu_budget"] == 0
    # the offload folder is gone: nothing but the published checkpoint next to it
    assert sorted(x.name for x in tmp_path.iterdir()) == ["mem", "off"]
    # measured: GPTQ on the offloaded model writes the same bytes as on the model in RAM
    ref, got = load_tensors(mem.output_dir), load_tensors(off.output_dir)
    assert set(got) == set(ref)
    for name, t in got.items():
        assert t.dtype == ref[name].dtype and t.shape == ref[name].shape, name
        assert t.float().sub(ref[name].float()).abs().max().item() == 0, name
    assert (json.loads((off.output_dir / "config.json").read_text())["quantization_config"]["config_groups"]
            == json.loads((mem.output_dir / "config.json").read_text())["quantization_config"]["config_groups"])


def test_offloaded_data_free_scheme_runs(sharded_llama: Path, tmp_path: Path) -> None:
    """A data-free recipe runs through oneshot on the offloaded model too (any llm-compressor scheme)."""
    off = quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "off",
                   production="offloaded")
    free = quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "free",
                    production="model-free")
    assert validate(off.output_dir, hardware="h100").ok
    ref, got = load_tensors(free.output_dir), load_tensors(off.output_dir)
    assert set(got) == set(ref)
    assert all(got[k].float().sub(ref[k].float()).abs().max().item() == 0 for k in got)


def test_offloaded_is_refused_where_it_cannot_run(sharded_llama: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    with pytest.raises(PlanOptionError, match="modelopt backend has no offloaded path"):
        plan(sharded_llama, "h100", scheme="fp8-dynamic", backend="modelopt", production="offloaded")
    model = AutoModelForCausalLM.from_pretrained(sharded_llama, dtype=torch.bfloat16)
    with pytest.raises(PlanOptionError, match="object in memory"):
        plan(model, "h100", scheme="w4a16", production="offloaded")


@pytest.mark.gpu
def test_offloaded_gptq_peak_gpu_memory_is_within_the_plans_figure(embedded_path: Path, tmp_path: Path) -> None:
    """On a GPU the sequential pipeline onloads each layer (the first with the embedding) to one GPU, where GPTQ
    holds its Hessians: torch's peak allocation there against the plan's per-GPU figure
    (``production_device_bytes``, modelled from the CPU measurement in docs/benchmarks.md). A random Llama with a
    wide MLP, so that GPTQ's working set is most of the figure."""
    import torch

    src = save_tiny_llama(tmp_path / "llama-wide", embedded_path, max_shard_size="100MB",
                          shape={"hidden_size": 1024, "intermediate_size": 5632, "num_hidden_layers": 4,
                                 "num_attention_heads": 16, "num_key_value_heads": 4})
    p = plan(src, "h100", scheme="w4a16", production="offloaded", device="cuda")
    assert p.production_device_bytes > 0 and p.device_memory_problem() is None
    torch.cuda.reset_peak_memory_stats()
    quantize(src, p, output_dir=tmp_path / "out", num_calibration_samples=16, max_seq_length=256)
    peak = torch.cuda.max_memory_allocated()
    figure = p.production_device_bytes
    print(f"peak GPU allocation {peak / 2**20:.0f} MiB, plan's per-GPU figure {figure / 2**20:.0f} MiB")
    assert peak <= 1.1 * p.production_device_bytes
    assert peak >= 0.4 * p.production_device_bytes  # the model is the working set, not a loose bound
