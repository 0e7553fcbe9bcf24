"""The model-free production path (issue 14): llm-compressor's model_free_ptq quantizes a real sharded
checkpoint shard by shard into quantkit's staging directory; the result is validated, published atomically,
sharded like its source, and holds the same tensors as the in-memory path's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_models import load_tensors

from quantkit import hardware, plan, quantize, validate
from quantkit.errors import BackendError, PlanOptionError

INDEX = "model.safetensors.index.json"


@pytest.mark.parametrize("scheme", ["fp8-dynamic", "nvfp4a16"])
def test_model_free_matches_the_in_memory_checkpoint(scheme: str, sharded_llama: Path, tmp_path: Path) -> None:
    free = quantize(sharded_llama, scheme, hardware="h100", output_dir=tmp_path / "free", production="model-free")
    mem = quantize(sharded_llama, scheme, hardware="h100", output_dir=tmp_path / "mem", production="in-memory")
    out = free.output_dir
    assert free.plan is not None and free.plan.production == "model-free"
    assert validate(out, hardware="h100").ok
    # sharded like the source: the same shard files, an index naming every tensor
    src_shards = sorted(p.name for p in sharded_llama.glob("*.safetensors"))
    assert sorted(p.name for p in out.glob("*.safetensors")) == src_shards
    index = json.loads((out / INDEX).read_text())
    tensors = load_tensors(out)
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(src_shards)
    # model_free_ptq copied the tokenizer and wrote the quantization config
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors" and qcfg["quantization_status"] == "compressed"
    assert "lm_head" in qcfg["ignore"] and "model.embed_tokens" in qcfg["ignore"]
    manifest = json.loads((out / "quantkit.json").read_text())
    assert manifest["production"] == "model-free" and manifest["num_calibration_samples"] == 0
    # the same checkpoint as the in-memory path: names, dtypes, shapes and values
    ref = load_tensors(mem.output_dir)
    assert set(tensors) == set(ref)
    for name, t in tensors.items():
        assert (t.dtype, tuple(t.shape)) == (ref[name].dtype, tuple(ref[name].shape)), name
        assert t.float().sub(ref[name].float()).abs().max().item() == 0, name
    ref_cfg = json.loads((mem.output_dir / "config.json").read_text())["quantization_config"]
    assert qcfg["config_groups"]["group_0"]["weights"] | {"observer": None} == \
        ref_cfg["config_groups"]["group_0"]["weights"] | {"observer": None}
    assert qcfg["format"] == ref_cfg["format"]


def test_auto_goes_model_free_when_host_ram_is_short(sharded_llama: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # in-memory plans the libraries' 2 GiB on top of the weights: more than 75% of 2.5 GiB; model-free fits
    monkeypatch.setattr(hardware, "host_memory_bytes", lambda: int(2.5 * 2**30))
    res = quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "out")
    assert res.plan is not None and res.plan.production == "model-free", res.plan.production_reason
    assert json.loads((res.output_dir / "quantkit.json").read_text())["production"] == "model-free"


def test_a_calibrated_scheme_cannot_go_model_free(sharded_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanOptionError, match="w8a8-int8 needs calibration data"):
        quantize(sharded_llama, "w8a8-int8", hardware="h100", output_dir=tmp_path / "out", production="model-free")
    assert not list(tmp_path.iterdir())


def test_a_model_object_is_never_read_from_its_files(sharded_llama: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sharded_llama, dtype=torch.bfloat16)
    with pytest.raises(PlanOptionError, match="object in memory"):
        plan(model, "h100", scheme="fp8-dynamic", production="model-free")


def test_a_crash_mid_run_publishes_nothing(sharded_llama: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails after its first shard leaves no output and no staging directory, only the resumable
    partial directory (no index, no config: nothing half-written looks like a checkpoint); the re-run resumes
    from it, publishes, and removes it."""
    import llmcompressor.entrypoints.model_free as mf

    real, calls = mf.model_free_ptq, []

    def crash_on_the_second_call(model_stub: str, save_directory: str, **kwargs: Any) -> None:
        calls.append(model_stub)
        if len(calls) == 1:
            return real(model_stub, save_directory, **kwargs)
        first = sorted(Path(model_stub).glob("*.safetensors"))[0]
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / first.name).write_bytes(first.read_bytes()[:100])  # a shard cut short
        raise RuntimeError("worker died")

    monkeypatch.setattr(mf, "model_free_ptq", crash_on_the_second_call)
    with pytest.raises(BackendError, match="worker died") as exc:
        quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "out", production="model-free")
    assert isinstance(exc.value.__cause__, RuntimeError)
    [partial] = tmp_path.iterdir()
    assert partial.name.startswith(".out.quantkit-partial-")
    first = sorted(p.name for p in sharded_llama.glob("*.safetensors"))[0]
    assert sorted(p.name for p in partial.glob("*.safetensors")) == [first]
    assert not list(partial.glob("*.json*")) or [p.name for p in partial.glob("*.json")] == ["quantkit-resume.json"]

    monkeypatch.setattr(mf, "model_free_ptq", real)
    res = quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "out",
                   production="model-free")
    shards = len(list(sharded_llama.glob("*.safetensors")))
    assert any(f"1 of {shards} shard(s) already finished" in n for n in res.notes), res.notes
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _sha256s(path: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted([*path.glob("*.safetensors"), path / INDEX])}


def test_a_killed_model_free_run_resumes_and_writes_the_same_files(sharded_llama: Path, tmp_path: Path) -> None:
    """`quantkit quantize --path model-free` SIGKILLed once a shard is finished: the re-run skips the finished
    shards, says from which shard it restarted, and publishes the same bytes (shards and index) as an
    uninterrupted run and as one plain model_free_ptq call."""
    import re
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("quantkit")), "quantize", str(sharded_llama), "-s", "fp8-dynamic",
           "-H", "h100", "--path", "model-free", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while not done and proc.poll() is None and time.monotonic() < deadline:
            for manifest in tmp_path.glob(".out.quantkit-partial-*/quantkit-resume.json"):
                try:
                    done = json.loads(manifest.read_text())["done"]
                except (OSError, ValueError):  # replaced while read
                    pass
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before a shard was finished"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written at the output path
    [partial] = tmp_path.glob(".out.quantkit-partial-*")

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    m = re.search(r"(\d+) of (\d+) shard\(s\) already finished and verified .*restarting from shard (\d+)",
                  rerun.stdout + rerun.stderr)
    assert m, rerun.stdout + rerun.stderr
    assert int(m[1]) >= len(done) and int(m[2]) == len(list(sharded_llama.glob("*.safetensors")))
    assert not partial.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    ref = quantize(sharded_llama, "fp8-dynamic", hardware="h100", output_dir=tmp_path / "ref",
                   production="model-free")
    assert _sha256s(out) == _sha256s(ref.output_dir)
    assert (out / "config.json").read_bytes() == (ref.output_dir / "config.json").read_bytes()

    # and the same as llm-compressor's own single call with the config quantkit builds
    from compressed_tensors.quantization import QuantizationConfig
    from llmcompressor.entrypoints.model_free import model_free_ptq

    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    config = QuantizationConfig.model_validate({k: v for k, v in qcfg.items() if k not in (
        "quant_method", "version", "transform_config")} | {"quantization_status": "initialized"})
    model_free_ptq(str(sharded_llama), str(tmp_path / "raw"), config=config, device="cpu")
    assert _sha256s(out) == _sha256s(tmp_path / "raw")
