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
    # offloaded: the weights go to disk, but 512 x 2048 tokens of cached activations (16 GiB) do not fit 16 GiB
    assert p.production == "offloaded" and not p.production_fits
    warning = next(w for w in p.warnings if w.startswith("[host-memory]"))
    assert "offloaded needs ~" in warning and "calibration samples" in warning
    with pytest.raises(HostMemoryError) as exc:
        quantize(llama8b_sharded, "w4a16", hardware="h100", output_dir=tmp_path / "out")
    err = exc.value
    assert err.rule == "QK017"
    assert "offloaded needs ~" in err.message and "more than this host's 16.0 GiB" in err.message
    assert err.fix is not None and "fp8-dynamic" in err.fix and "GiB of RAM" in err.fix
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())  # nothing staged, nothing loaded
    # a ModelOpt scheme has neither model-free nor offloaded: in-memory, refused, naming the data-free schemes
    p = plan(llama8b_sharded, "h100", scheme="fp8-static", backend="modelopt")
    assert p.production == "in-memory" and not p.production_fits
    assert "offloaded cannot run: the modelopt backend has no offloaded path" in p.production_reason


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


@pytest.fixture(scope="module")
def big_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Header-only Llama-3.1-70B, Llama-3.1-405B and DeepSeek-V3 in 5 GB shards (no weight bytes on disk)."""
    root = tmp_path_factory.mktemp("big")
    return {name: plan_fixtures.write_checkpoint(root / name, *build(), max_shard_bytes=SHARD)
            for name, build in (("Llama-3.1-70B", plan_fixtures.llama3_70b),
                                ("Llama-3.1-405B", plan_fixtures.llama3_405b),
                                ("DeepSeek-V3", plan_fixtures.deepseek_v3))}


# (machine, producer device, GPUs on the node): a 1x and an 8x GPU node and a CPU-only host, each with 192 GiB
MACHINES = [("1x h100", "cuda", 1), ("8x h100", "cuda", 8), ("cpu-only host", "cpu", None)]


@pytest.mark.parametrize("machine,device,gpus", MACHINES)
@pytest.mark.parametrize("model", ["Llama-3.1-70B", "Llama-3.1-405B", "DeepSeek-V3"])
def test_big_models_state_path_memory_and_disk(big_checkpoints: dict[str, Path], model: str, machine: str,
                                               device: str, gpus: int | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 192)
    ckpt = big_checkpoints[model]
    src = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
    # data-free: model-free, one 5 GB shard job per worker; on GPU, one job's memory per device
    free = plan(ckpt, "h100", scheme="fp8-block" if model == "DeepSeek-V3" else "fp8-dynamic", device=device,
                gpus=gpus)
    assert free.production == "model-free" and free.production_fits, free.production_reason
    assert free.host_memory[0].bytes < 64 * GIB and free.host_memory[1].bytes > src  # in-memory: every weight
    assert 0 < free.production_disk_bytes < src  # the FP8 output
    assert (free.production_device_bytes > 0) == (device == "cuda")
    # calibrated: offloaded, the weights beyond the RAM budget on disk, one decoder layer at a time
    cal = plan(ckpt, "h100", scheme="w4a16", device=device, gpus=gpus)
    assert cal.production == "offloaded" and cal.production_fits, cal.production_reason
    off, mem = cal.host_memory[0], cal.host_memory[1]
    assert off.path == "offloaded" and mem.path == "in-memory" and mem.bytes > 0.75 * 192 * GIB
    # the RAM budget for weights: what 75 % of the RAM holds beyond the offloaded path's own need (DeepSeek-V3's
    # 256 experts' Hessians leave none: every weight on disk)
    assert cal.production_cpu_budget is not None
    assert cal.production_cpu_budget == max(0, int(0.75 * 192 * GIB) - off.bytes)
    # disk: the weights left over the RAM budget, and the W4A16 output
    assert cal.production_disk_bytes >= src - cal.production_cpu_budget
    text = str(cal)
    assert "produce    offloaded" in text and "disk ~" in text and "RAM budget for weights" in text
    if device == "cuda":
        # sequential onloading uses one GPU whatever the node has (the distributed path is torchrun's): the
        # largest decoder layer, its quantized copy and its GPTQ Hessians
        assert cal.production_device_bytes > 0 and "GiB per GPU" in cal.production_where
    else:
        assert cal.production_device_bytes == 0 and "per GPU" not in cal.production_where
    d = cal.to_dict()["production"]
    assert d["path"] == "offloaded" and d["disk_bytes"] == cal.production_disk_bytes


def test_a_calibrated_scheme_goes_offloaded_and_states_why(llama8b_sharded: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, 28)  # in-memory needs ~22 GiB: over 75 % of 28 GiB; offloaded ~21.8 GiB fits the 28
    p = plan(llama8b_sharded, "h100", scheme="w4a16")
    assert p.production == "offloaded" and p.production_fits, p.production_reason
    assert "model-free cannot run: w4a16 needs calibration data" in p.production_reason
    off = p.host_memory[0]
    # one 8B layer (~0.4 GiB bf16) x 2 + GPTQ's working set + 512 x 2048 x 4096 bf16 activations x 2 (16 GiB)
    # + 2 GiB. The working set is the larger of the layer's Hessians (6 x 4096^2 + 14336^2 float32: 1.14 GiB) and
    # quantizing down_proj (3 float32 Hessians of 14336^2 and 3 float32 copies of its 4096 x 14336 weight:
    # 2.95 GiB)
    assert "GPTQ Hessians and float32 copies 2.95 GiB" in off.how
    assert "calibration activations 16.00 GiB" in off.how
    assert 21 * GIB < off.bytes < 22 * GIB
    _host(monkeypatch, 64)  # in-memory (~22 GiB) fits 75 % of 64 GiB: no need to offload
    assert plan(llama8b_sharded, "h100", scheme="w4a16").production == "in-memory"


def test_offloaded_request_is_checked(llama8b_sharded: Path) -> None:
    with pytest.raises(PlanOptionError, match="modelopt backend has no offloaded path"):
        plan(llama8b_sharded, "h100", scheme="fp8-dynamic", backend="modelopt", production="offloaded")
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic", production="offloaded")
    assert p.production == "offloaded" and "calibration activations 0.00 GiB" in p.host_memory[0].how


@pytest.mark.parametrize(("backend", "device", "placement"), [
    ("modelopt", "cuda", "gpus"),        # mtq.quantize calibrates the whole model: it goes onto the GPUs
    ("llmcompressor", "cuda", "host"),   # oneshot onloads one layer at a time to the GPU itself
    ("modelopt", "cpu", "host"),         # no GPU: nowhere else to put it
])
def test_the_plan_says_where_the_in_memory_model_goes(llama8b_sharded: Path, monkeypatch: pytest.MonkeyPatch,
                                                      backend: str, device: str, placement: str) -> None:
    _host(monkeypatch, 256)
    p = plan(llama8b_sharded, "h100", scheme="fp8-dynamic", backend=backend, device=device,
             production="in-memory")
    assert p.production_placement == placement
    assert p.to_dict()["production"]["placement"] == placement
    if device == "cuda":
        assert "on this machine's GPUs" in p.production_reason
        assert ("device_map='auto'" in p.production_reason) == (placement == "gpus")
    else:
        assert "GPUs" not in p.production_reason


def test_ranks_count_once_per_rank(llama8b_sharded: Path) -> None:
    """Distributed oneshot: the weights and activations once, the libraries and GPTQ's statistics per rank."""
    one = plan(llama8b_sharded, "h100", scheme="w4a16", production="offloaded", device="cpu")
    four = plan(llama8b_sharded, "h100", scheme="w4a16", nproc=4, device="cpu")
    assert four.production == "offloaded" and "4 ranks load the checkpoint" in four.production_reason
    need1, need4 = one.host_memory[0], four.host_memory[0]
    assert need1.path == need4.path == "offloaded" and "per rank x 4 ranks" in need4.how
    # 3 more ranks: 3 x (2 GiB of libraries + GPTQ's 2.95 GiB working set for one 8B layer)
    assert need4.bytes - need1.bytes == pytest.approx(3 * (2 + 2.953) * GIB, rel=0.01)


def test_host_memory_plans_for_the_ram_given(llama8b_sharded: Path, tmp_path: Path) -> None:
    """plan(host_memory=GiB) / --host-memory: the path and the refusal follow the RAM given, not this machine's."""
    small = plan(llama8b_sharded, "h100", scheme="fp8-dynamic", host_memory=16)
    assert small.production == "model-free" and small.host_memory_bytes == 16 * GIB
    big = plan(llama8b_sharded, "h100", scheme="fp8-dynamic", host_memory=256)
    assert big.production == "in-memory" and big.host_memory_bytes == 256 * GIB
    with pytest.raises(PlanOptionError, match="host_memory must be a positive number of GiB"):
        plan(llama8b_sharded, "h100", scheme="fp8-dynamic", host_memory=0)
    with pytest.raises(HostMemoryError, match="more than this host's 4.0 GiB"):
        quantize(llama8b_sharded, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "out", host_memory=4)
    assert not list(tmp_path.iterdir())


def test_a_job_the_host_cannot_hold_is_exit_2_on_the_cli(llama8b_sharded: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from quantkit.cli import main

    rc = main(["quantize", str(llama8b_sharded), "-s", "fp8-dynamic", "-H", "h100", "--host-memory", "4",
               "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "[QK017]" in err and "model-free needs ~" in err and "To resolve:" in err
    assert not list(tmp_path.iterdir())
    assert main(["plan", str(llama8b_sharded), "-s", "fp8-dynamic", "-H", "h100", "--host-memory", "16",
                 "--json"]) == 0
    assert '"path": "model-free"' in capsys.readouterr().out.replace('"path":"', '"path": "')


def test_a_container_limit_below_memtotal_is_the_host_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod on a large node: /proc/meminfo shows the node, the cgroup file the pod's limit."""
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert hardware.cgroup_memory_limit((v2, v1)) == 0  # no files: no limit
    v1.write_text("9223372036854771712\n")  # cgroup v1 "unlimited" (2^63 rounded to a page)
    assert hardware.cgroup_memory_limit((v2, v1)) == 0
    v2.write_text("max\n")
    assert hardware.cgroup_memory_limit((v2, v1)) == 0
    v2.write_text(f"{64 * GIB}\n")
    assert hardware.cgroup_memory_limit((v2, v1)) == 64 * GIB
    monkeypatch.setattr(hardware, "cgroup_memory_limit", lambda: 64 * GIB)
    assert hardware.host_memory_bytes() == min(64 * GIB, _memtotal())


def _memtotal() -> int:
    line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:"))
    return int(line.split()[1]) * 1024


def test_a_gpu_too_small_for_one_layer_is_refused_before_loading(big_checkpoints: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The offloaded path onloads each decoder layer to one GPU, where GPTQ quantizes its widest Linear: for
    Llama-3.1-405B's down_proj (in_features 53248) three float32 Hessians are ~32 GiB on their own. A 48 GB GPU
    cannot hold that step; an 80 GB one can. No GPU is lent here: the driver's answer is stubbed, and so is
    torch's (the refusal is for a producer that runs on the GPU)."""
    from quantkit import pipeline
    from quantkit.errors import DeviceMemoryError

    model = big_checkpoints["Llama-3.1-405B"]
    _host(monkeypatch, 2048)
    l40s, h100 = hardware.get_hardware("l40s"), hardware.get_hardware("h100")
    for gpu in (l40s, h100):
        monkeypatch.setattr(hardware, "query_local_gpu",
                            lambda gpu=gpu: hardware.LocalGpu(gpu.description, 89, gpu.memory_gib, 8, gpu))
        p = plan(model, "h100", scheme="w4a16", production="offloaded", device="cuda")
        assert p.production_gpu_bytes == int(gpu.memory_gib * GIB)
        # the largest layer x 2 (11.9 GiB) + 3 Hessians of 53248^2 (31.7) + 3 float32 copies of the 16384 x 53248
        # weight (9.8) + the embedding the first subgraph runs with layer 0 (128256 x 16384 bf16: 3.9)
        assert 56 * GIB < p.production_device_bytes < 58 * GIB
        small = gpu is l40s
        assert any(w.startswith("[gpu-memory]") for w in p.warnings) is small
        assert (p.device_memory_problem() is not None) is small
    monkeypatch.setattr(hardware, "query_local_gpu",
                        lambda: hardware.LocalGpu(l40s.description, 89, l40s.memory_gib, 8, l40s))
    monkeypatch.setattr(pipeline, "_device", lambda: "cuda")
    p = plan(model, "h100", scheme="w4a16", production="offloaded", device="cuda")
    with pytest.raises(DeviceMemoryError) as exc:
        quantize(model, p, output_dir=tmp_path / "out")
    err = exc.value
    assert err.rule == "QK021" and "offloaded needs ~" in err.message and "GPTQ's working set" in err.message
    assert err.fix is not None and "at least 5" in err.fix and "data-free scheme" in err.fix
    assert not list(tmp_path.iterdir())
    # planned for a GPU on a machine without one (device="cuda", nothing found): nothing to check against
    monkeypatch.setattr(hardware, "query_local_gpu", lambda: None)
    assert plan(model, "h100", scheme="w4a16", production="offloaded", device="cuda").device_memory_problem() is None
