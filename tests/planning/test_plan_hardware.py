"""The hardware table, lookup, local GPU detection and what each class can run."""

from __future__ import annotations

import pytest

from quantkit import hardware
from quantkit.errors import UnknownNameError
from quantkit.hardware import (
    HARDWARE,
    cpu_has_avx512,
    detect_local_gpu,
    device_memory_bytes,
    get_hardware,
    parse_nvidia_smi,
    support,
)
from quantkit.schemes import SCHEMES

ISSUE_TARGETS = ("h100", "h200", "b200", "b300", "gb200", "a100", "l40s", "l4", "rtx4090", "rtx5090", "mi300x", "cpu",
                 # issue 11, "any NVIDIA GPU"
                 "h800", "a800", "h20", "l40", "rtxa6000", "rtxpro6000", "gb10")


def test_table_covers_the_issue_targets() -> None:
    assert set(ISSUE_TARGETS) <= set(HARDWARE)


@pytest.mark.parametrize("name", sorted(HARDWARE))
def test_entries_are_consistent(name: str) -> None:
    hw = HARDWARE[name]
    if hw.kind == "cuda":
        assert hw.capability is not None and hw.memory_gib > 0
        assert hw.fp8_native == (hw.capability >= 89)
        assert hw.fp4_native == (hw.capability >= 100)
        assert hw.match, "a CUDA entry needs a product-name pattern for detection"
        assert hw.arch == hardware.ARCH_BY_SM[hw.capability]
        assert not hw.assumed, "a table entry is facts, not assumptions"
    else:
        assert hw.capability is None
    if hw.kind == "cpu":
        assert hw.max_tp == 1 and not hw.fp8_native


def test_literal_matches_the_table() -> None:
    import typing

    assert set(typing.get_args(hardware.HardwareName)) == set(HARDWARE)


@pytest.mark.parametrize("spelling,name", [("H100", "h100"), ("rtx-4090", "rtx4090"), ("RTX 5090", "rtx5090"),
                                           (" gb200 ", "gb200"), ("MI300X", "mi300x")])
def test_lookup_normalises(spelling: str, name: str) -> None:
    assert get_hardware(spelling).name == name
    assert get_hardware(HARDWARE[name]) is HARDWARE[name]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_hardware("v100")
    for name in ISSUE_TARGETS:
        assert name in str(err.value)


@pytest.mark.parametrize("line,name", [
    ("NVIDIA H100 80GB HBM3, 9.0, 81559", "h100"),
    ("NVIDIA H100 PCIe, 9.0, 81559", "h100"),
    ("NVIDIA H200, 9.0, 143771", "h200"),
    ("NVIDIA B200, 10.0, 183359", "b200"),
    ("NVIDIA GB200, 10.0, 189471", "gb200"),
    ("NVIDIA B300 SXM6 AC, 10.3, 275040", "b300"),
    ("NVIDIA A100-SXM4-80GB, 8.0, 81920", "a100"),
    ("NVIDIA L40S, 8.9, 46068", "l40s"),
    ("NVIDIA L4, 8.9, 23034", "l4"),
    ("NVIDIA GeForce RTX 4090, 8.9, 24564", "rtx4090"),
    ("NVIDIA GeForce RTX 5090, 12.0, 32607", "rtx5090"),
    ("Tesla T4, 7.5, 15360", "t4"),
    # issue 11: \b keeps H20 off H200, L40 off L40S, A800 off A100
    ("NVIDIA H800, 9.0, 81559", "h800"),
    ("NVIDIA H800 PCIe, 9.0, 81559", "h800"),
    ("NVIDIA H20, 9.0, 97871", "h20"),
    ("NVIDIA L40, 8.9, 46068", "l40"),
    ("NVIDIA A800-SXM4-80GB, 8.0, 81920", "a800"),
    ("NVIDIA RTX A6000, 8.6, 49140", "rtxa6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition, 12.0, 97887", "rtxpro6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition, 12.0, 97887", "rtxpro6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition, 12.0, 97887", "rtxpro6000"),
    ("NVIDIA GB10, 12.1, [N/A]", "gb10"),
])
def test_parse_nvidia_smi_maps_products(line: str, name: str) -> None:
    found = parse_nvidia_smi(line + "\n")
    assert found is not None and found.hardware is not None
    assert found.hardware is HARDWARE[name]  # the entry itself: same memory, nothing assumed
    assert found.count == 1


def test_parse_nvidia_smi_counts_gpus_and_reads_capability() -> None:
    found = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0, 81559\n" * 8)
    assert found is not None
    assert (found.count, found.capability, found.memory_gib) == (8, 90, 79.6)


def test_empty_output_is_no_gpu() -> None:
    assert parse_nvidia_smi("") is None
    assert parse_nvidia_smi("\n\n") is None


def test_detection_uses_the_query_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_local_gpu() is None  # conftest: no GPU
    monkeypatch.setattr(hardware, "query_local_gpu",
                        lambda: parse_nvidia_smi("NVIDIA L40S, 8.9, 46068"))
    assert detect_local_gpu() is HARDWARE["l40s"]
    assert hardware.default_hardware() is HARDWARE["l40s"]
    monkeypatch.setenv("QUANTKIT_HARDWARE", "b200")
    assert detect_local_gpu() is HARDWARE["b200"]


def test_detection_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import quantkit.hardware as h; h.query_local_gpu(); h.detect_local_gpu(); "
            "import quantkit.planning.planner; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_support_follows_avx512(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = HARDWARE["cpu"]
    assert not cpu_has_avx512()
    runs = {s.name for s in SCHEMES.values() if support(s, cpu).runs}
    assert runs == {"fp8-dynamic", "w8a8-int8", "w4a8-int"}
    monkeypatch.setenv("QUANTKIT_ASSUME_AVX512", "1")
    runs = {s.name for s in SCHEMES.values() if support(s, cpu).runs}
    assert {"w4a16", "w4a16-awq"} <= runs


def test_device_memory() -> None:
    assert device_memory_bytes(HARDWARE["h100"]) == int(79.6 * 2**30)
    assert device_memory_bytes(HARDWARE["cpu"]) > 0  # the host's RAM
