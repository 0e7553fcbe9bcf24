"""The production path (issue 14): in-memory while the model fits host RAM, model-free (shard by shard) for a
data-free scheme when it does not, and a refusal naming the RAM needed when no path fits."""

from __future__ import annotations

from pathlib import Path

import plan_fixtures
import pytest

from quantkit import hardware, plan, quantize
from quantkit.errors import HostMemoryError, PlanOptionError, UnknownNameError

GIB = 2**30
SHARD = 5 * 10**9  # the shard size transformers' save_pretrained writes by default (5 GB)


@pytest.fixture(scope="module")
def llama8b_sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Header-only Llama-3.1-8B in 5 GB shards (16 GB of bf16 weights, no bytes on disk)."""
    config, tensors = plan_fixtures.llama3_8b()
    return plan_fixtures.write_checkpoint(tmp_path_factory.mktemp("llama8b") / "Llama-3.1-8B", config, tensors,
                                          max_shard_bytes=SHARD)


def _host(monkeypatch: pytest.MonkeyPatch, gib: float) -> None:
    monkeypatch.setattr(hardware, "host_memory_bytes", lambda: int(gib * GIB))


def test_a_small_host_takes_model_free_for_a_data_free_scheme(llama8b_sharded: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 16)
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic")
    assert p.production == "model-free", p.production_reason
    need = dict((n.path, n.bytes) for n in p.host_memory)
    assert p.host_memory[0].path == "model-free"
    # in-memory: ~15 GiB of bf16 weights + ~7.5 GiB FP8 copy + libraries; model-free: one ~4.7 GiB shard x 2.5
    assert 22 * GIB < need["in-memory"] < 26 * GIB
    assert 12 * GIB < need["model-free"] < 14 * GIB
    assert p.production_fits and p.production_workers == 1  # CPU producer: compressed-tensors runs shards in turn
    assert not any(w.startswith("[host-memory]") for w in p.warnings), p.warnings
    assert any(r.startswith("production: model-free") for r in p.reasons)
    assert p.to_dict()["production"]["path"] == "model-free"
    assert "produce    model-free" in str(p)


def test_a_big_host_keeps_the_in_memory_path(llama8b_sharded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 256)
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic")
    assert p.production == "in-memory" and "model-free would need" in p.production_reason


def test_gpu_producers_run_several_shards_at_once(llama8b_sharded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 96)
    p = plan(llama8b_sharded, "h100", scheme="nvfp4a16", production="model-free", device="cuda")
    assert p.production == "model-free" and p.production_workers == 4  # 4 shards x 11.6 GiB < 75% of 96 GiB
    _host(monkeypatch, 48)
    p = plan(llama8b_sharded, "h100", scheme="nvfp4a16", production="model-free", device="cuda")
    assert p.production_workers == 2  # 75% of 48 GiB, less the libraries, holds two shard jobs
    assert p.overrides[-1] == "production"


def test_a_calibrated_scheme_that_does_not_fit_is_refused_before_loading(llama8b_sharded: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 16)
    p = plan(llama8b_sharded, "h100", scheme="w4a16")
    assert p.production == "in-memory" and not p.production_fits
    warning = next(w for w in p.warnings if w.startswith("[host-memory]"))
    assert "w4a16 needs calibration data" in warning
    with pytest.raises(HostMemoryError) as exc:
        quantize(llama8b_sharded, "w4a16", hardware="h100", output_dir=tmp_path / "out")
    err = exc.value
    assert err.rule == "QK017"
    assert "in-memory needs ~" in err.message and "more than this host's 16.0 GiB" in err.message
    assert err.fix is not None and "fp8-dynamic" in err.fix and "GiB of RAM" in err.fix
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())  # nothing staged, nothing loaded


def test_no_path_fits_a_tiny_host(llama8b_sharded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 4)
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic")
    assert p.production == "model-free" and not p.production_fits
    with pytest.raises(HostMemoryError, match=r"model-free needs ~13\.\d GiB"):
        quantize(llama8b_sharded, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "out")


def test_deepseek_v3_goes_model_free(arch_dir, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config, tensors = plan_fixtures.deepseek_v3()
    ckpt = plan_fixtures.write_checkpoint(tmp_path / "DeepSeek-V3", config, tensors, max_shard_bytes=SHARD)
    _host(monkeypatch, 64)
    p = plan(ckpt, "b200", scheme="fp8-block")
    assert p.production == "model-free" and p.production_fits
    assert p.host_memory[1].bytes > 1000 * GIB  # in-memory: the whole 671B model


def test_requested_model_free_is_checked(llama8b_sharded: Path) -> None:
    with pytest.raises(PlanOptionError, match="w4a16 needs calibration data") as exc:
        plan(llama8b_sharded, "h100", scheme="w4a16", production="model-free")
    assert "fp8-dynamic, fp8-block, nvfp4a16, mxfp4a16" in (exc.value.fix or "")
    with pytest.raises(PlanOptionError, match="KV cache needs calibrated scales"):
        plan(llama8b_sharded, "h100", scheme="fp8-dynamic", kv_cache="fp8", production="model-free")
    with pytest.raises(PlanOptionError, match="modelopt backend has no model-free path"):
        plan(llama8b_sharded, "h100", scheme="fp8-dynamic", backend="modelopt", production="model-free")
    with pytest.raises(UnknownNameError, match="production path"):
        plan(llama8b_sharded, "h100", scheme="fp8-dynamic", production="streaming")


def test_unknown_host_memory_keeps_in_memory(llama8b_sharded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 0)
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic")
    assert p.production == "in-memory" and p.production_fits
