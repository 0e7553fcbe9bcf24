"""Any NVIDIA GPU (issue 11): a GPU the hardware table does not name is planned for from the compute
capability and memory ``nvidia-smi`` reports, with a ``[hardware]`` warning -- never with CPU settings."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantkit import hardware
from quantkit.errors import UnknownNameError
from quantkit.hardware import (
    HARDWARE,
    get_hardware,
    parse_nvidia_smi,
    support,
)
from quantkit.hardware import query_local_gpu as real_query_local_gpu  # before conftest pins it to None
from quantkit.planning.planner import plan
from quantkit.schemes import SCHEMES
from quantkit.serve.engine import serve_plan
from quantkit.vllm_facts import CPU_ENGINE_DEFAULTS, CPU_ENV_DEFAULTS

FUTURE = "NVIDIA XYZ 9000, 11.0, 98304"


def test_unknown_product_is_derived_from_its_sm() -> None:
    found = parse_nvidia_smi(FUTURE + "\n" + FUTURE + "\n")
    assert found is not None and found.count == 2
    hw = found.hardware
    assert hw is not None and hw.name not in HARDWARE
    assert (hw.name, hw.kind, hw.arch, hw.capability, hw.memory_gib) == ("xyz9000", "cuda", "blackwell", 110, 96.0)
    assert hw.fp8_native and hw.fp4_native
    assert "SM 11.0" in hw.description and "NVIDIA XYZ 9000" in hw.description
    assert "not in quantkit's hardware table" in hw.assumed and "SM 11.0" in hw.assumed


@pytest.mark.parametrize("line,arch,cap,fp8,fp4", [
    ("Tesla V100-SXM2-32GB, 7.0, 32768", "volta", 70, False, False),
    ("NVIDIA RTX 6000 Ada Generation, 8.9, 49140", "ada", 89, True, False),
    ("NVIDIA A40, 8.6, 46068", "ampere", 86, False, False),
    ("NVIDIA Thor, 11.0, 125772", "blackwell", 110, True, True),
    ("NVIDIA Future Part, 13.0, 200000", "sm130", 130, True, True),
])
def test_arch_and_tensor_cores_follow_the_sm(line: str, arch: str, cap: int, fp8: bool, fp4: bool) -> None:
    hw = parse_nvidia_smi(line).hardware  # type: ignore[union-attr]
    assert hw is not None and hw.kind == "cuda" and hw.assumed
    assert (hw.arch, hw.capability, hw.fp8_native, hw.fp4_native) == (arch, cap, fp8, fp4)


def test_a_table_product_at_another_sm_is_not_the_table_entry() -> None:
    hw = parse_nvidia_smi("NVIDIA H100, 8.0, 81559").hardware  # type: ignore[union-attr]
    assert hw is not None and hw.capability == 80 and not hw.fp8_native
    assert hw.name not in HARDWARE and get_hardware("h100").capability == 90
    assert "matches the table's h100" in hw.assumed


def test_reported_memory_wins_over_the_table() -> None:
    hw = parse_nvidia_smi("NVIDIA A100-PCIE-40GB, 8.0, 40960").hardware  # type: ignore[union-attr]
    assert hw is not None and (hw.name, hw.memory_gib) == ("a100", 40.0) and not hw.assumed
    assert HARDWARE["a100"].memory_gib == 80.0


def test_unified_memory_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """GB10 (DGX Spark) reports memory.total as [N/A]: the table's figure; an unknown one takes the host's RAM."""
    gb10 = parse_nvidia_smi("NVIDIA GB10, 12.1, [N/A]")
    assert gb10 is not None and gb10.memory_gib is None and gb10.hardware is HARDWARE["gb10"]
    assert HARDWARE["gb10"].max_tp == 1
    monkeypatch.setattr(hardware, "host_memory_bytes", lambda: 64 * 2**30)
    hw = parse_nvidia_smi("NVIDIA GB20, 12.1, [N/A]").hardware  # type: ignore[union-attr]
    assert hw is not None and (hw.capability, hw.memory_gib, hw.max_tp) == (121, 64.0, 1)
    assert "unified memory" in hw.assumed


@pytest.mark.parametrize("name,cap,mem", [("sm90", 90, 79.6), ("sm_89", 89, 22.5), ("SM120", 120, 31.8),
                                          ("sm-121", 121, 119.7), ("sm90:80", 90, 80.0), ("sm110:64", 110, 64.0)])
def test_hardware_named_by_capability(name: str, cap: int, mem: float) -> None:
    hw = get_hardware(name)
    assert (hw.kind, hw.capability, hw.memory_gib) == ("cuda", cap, mem)
    assert get_hardware(hw.name) == hw  # the name round-trips (reports store it)
    assert bool(hw.assumed) == (":" not in name)  # memory from the table is an assumption, and says so


def test_capability_name_errors() -> None:
    with pytest.raises(UnknownNameError, match="sm110:80"):
        get_hardware("sm110")  # no table GPU at SM 11.0 to take the memory from
    with pytest.raises(UnknownNameError, match="sm120:96") as err:
        get_hardware("v100")
    assert "h100" in str(err.value)


@pytest.mark.parametrize("name", ["rtx5090", "rtxpro6000", "gb10", "sm120", "sm121", "sm110:64"])
def test_support_answers_on_every_blackwell(name: str) -> None:
    hw = get_hardware(name)
    verdicts = {s.name: support(s, hw) for s in SCHEMES.values()}
    assert verdicts["fp8-dynamic"].native and verdicts["nvfp4"].native
    assert not verdicts["w4a8-int"].runs


# ------------------------------------------------------------------------------ end to end: a fake nvidia-smi


def _fake_nvidia_smi(bin_dir: Path, rows: str, *, has_compute_cap: bool = True) -> None:
    """An ``nvidia-smi`` that answers the query quantkit sends with ``rows`` (an old driver refuses
    ``compute_cap`` the way R470 does: "Field ... is not a valid field to query", exit 2)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        + ('' if has_compute_cap else
           'case "$*" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;; esac\n')
        + f"cat <<'ROWS'\n{rows}\nROWS\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def real_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Undo conftest's pinned machine: the real query, reading an ``nvidia-smi`` first on PATH."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(hardware, "query_local_gpu", real_query_local_gpu)
    real_query_local_gpu.cache_clear()
    yield bin_dir
    real_query_local_gpu.cache_clear()


def _assert_cuda_settings(args: dict, env: dict) -> None:
    for key in CPU_ENGINE_DEFAULTS:
        assert key not in args, f"CPU engine setting {key} on a CUDA machine"
    for key in CPU_ENV_DEFAULTS:
        assert key not in env, f"CPU environment variable {key} on a CUDA machine"


def test_unknown_gpu_is_planned_and_served_as_cuda(real_detection: Path,
                                                   arch_dir: Callable[[str], Path]) -> None:
    _fake_nvidia_smi(real_detection, FUTURE)
    assert hardware.default_hardware().name == "xyz9000"
    p = plan(arch_dir("llama3"))
    assert (p.hardware.name, p.hardware.kind, p.hardware.capability) == ("xyz9000", "cuda", 110)
    assert p.scheme.name == "nvfp4"  # datacenter-Blackwell rules (SM 10.x-11.x), not the CPU's w8a8-int8
    assert any(w.startswith("[hardware]") and "NVIDIA XYZ 9000" in w for w in p.warnings), p.warnings
    _assert_cuda_settings(p.vllm_args, p.vllm_env)
    assert get_hardware(p.to_dict()["hardware"]) == p.hardware  # a report's stored name resolves here

    sp = serve_plan(arch_dir("llama3"), max_model_len=512, max_num_seqs=4)
    assert sp.hardware == "xyz9000"
    assert any(w.startswith("[hardware]") for w in sp.warnings), sp.warnings
    _assert_cuda_settings(sp.engine_args, sp.env)


def test_known_gpu_plans_without_a_hardware_warning(real_detection: Path,
                                                    arch_dir: Callable[[str], Path]) -> None:
    _fake_nvidia_smi(real_detection, "NVIDIA H20, 9.0, 97871\n" * 8)
    p = plan(arch_dir("llama3"))
    assert p.hardware is HARDWARE["h20"] and p.scheme.name == "fp8-dynamic"
    assert not any(w.startswith("[hardware]") for w in p.warnings)


def test_old_driver_without_compute_cap_is_still_cuda(real_detection: Path,
                                                     arch_dir: Callable[[str], Path]) -> None:
    _fake_nvidia_smi(real_detection, "NVIDIA XYZ 9000, 98304", has_compute_cap=False)
    found = hardware.query_local_gpu()
    assert found is not None and found.capability is None and found.memory_gib == 96.0
    p = plan(arch_dir("llama3"))
    assert p.hardware.kind == "cuda" and p.hardware.capability == hardware.ASSUMED_SM
    assert any("did not report its compute capability" in w for w in p.warnings), p.warnings
    _assert_cuda_settings(p.vllm_args, p.vllm_env)


def test_no_gpu_is_cpu(real_detection: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_detection.mkdir()
    monkeypatch.setenv("PATH", str(real_detection))  # neither nvidia-smi nor rocm-smi
    assert hardware.query_local_gpu() is None
    assert hardware.default_hardware() is HARDWARE["cpu"]


def test_cli_plans_for_a_capability(arch_dir: Callable[[str], Path], capsys: pytest.CaptureFixture) -> None:
    import json

    from quantkit.cli import main

    assert main(["plan", str(arch_dir("llama3")), "-H", "sm120:96", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hardware"] == "sm120:96" and data["scheme"] == "fp8-dynamic"  # the SM 12.x rules
    assert not any(w.startswith("[hardware]") for w in data["warnings"])  # nothing assumed: memory was given
    assert main(["plan", str(arch_dir("llama3")), "-H", "sm90", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(w.startswith("[hardware]") and "79.6 GiB" in w for w in data["warnings"])
    assert main(["plan", str(arch_dir("llama3")), "-H", "sm110"]) == 2
    assert "sm110:80" in capsys.readouterr().err


#: ``nvidia-smi --query-gpu=name,compute_cap,memory.total`` rows of parts the hardware table did not have when
#: issue 11 was filed (H800 ... GB10 are table rows now, the rest are planned from their SM)
MISSING_PARTS = [
    ("NVIDIA H800, 9.0, 81559", 90), ("NVIDIA A800-SXM4-80GB, 8.0, 81920", 80), ("NVIDIA H20, 9.0, 97871", 90),
    ("NVIDIA L40, 8.9, 46068", 89), ("NVIDIA RTX A6000, 8.6, 49140", 86),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition, 12.0, 97887", 120), ("NVIDIA GB10, 12.1, [N/A]", 121),
    ("NVIDIA RTX 6000 Ada Generation, 8.9, 49140", 89), ("NVIDIA A40, 8.6, 46068", 86),
    ("NVIDIA A2, 8.6, 15356", 86), ("NVIDIA Jetson AGX Orin, 8.7, 62800", 87),
]


@pytest.mark.parametrize("row,cap", MISSING_PARTS)
def test_missing_parts_get_gpu_settings_and_a_scheme_their_sm_runs(real_detection: Path, row: str, cap: int,
                                                                   arch_dir: Callable[[str], Path]) -> None:
    from quantkit.hardware import support

    _fake_nvidia_smi(real_detection, row)
    p = plan(arch_dir("llama3"))
    assert p.hardware.kind == "cuda" and p.hardware.capability == cap, p.hardware
    _assert_cuda_settings(p.vllm_args, p.vllm_env)
    assert support(p.scheme, p.hardware).runs, (p.scheme.name, cap)
    if cap >= 89:  # FP8 (or FP4) tensor cores: never the INT8 path of older parts
        assert p.scheme.weights.type == "float", (p.scheme.name, cap)
    elif cap < 89:  # no FP8 tensor cores: no FP8-activation scheme
        assert p.scheme.activations is None or p.scheme.activations.type != "float", (p.scheme.name, cap)
