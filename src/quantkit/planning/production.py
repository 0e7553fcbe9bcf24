"""The production path: load the whole model into host RAM, or quantize it shard by shard without instantiating it.

Two ways to produce a checkpoint (:data:`PRODUCTION_PATHS`):

* ``in-memory``: transformers loads the whole model, the backend quantizes it (calibrated or not) and saves it.
  Any scheme; the host holds every weight at once.
* ``model-free``: the backend reads, quantizes and writes one safetensors shard at a time without building the
  model (llm-compressor's ``model_free_ptq``). Data-free weight schemes only (no calibration, no KV-cache
  scales); the host holds about one shard per worker.

:func:`choose_production` is the decision ``plan()`` records; the estimates are stated in the plan so a user
can see why a path was picked or refused. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

ProductionPath = Literal["in-memory", "model-free"]

#: the production paths and what each does (CLI choices, docs and errors derive from this table)
PRODUCTION_PATHS: dict[str, str] = {
    "in-memory": "transformers loads the whole model into host RAM; the backend quantizes it (calibration "
                 "included) and saves it",
    "model-free": "the backend reads, quantizes and writes one safetensors shard at a time, never building the "
                  "model (llm-compressor model_free_ptq; data-free schemes, no KV-cache calibration)",
}
#: ``production=`` values: a path, or ``auto`` to let the plan choose
PRODUCTION_CHOICES = ("auto", *PRODUCTION_PATHS)

#: "fits comfortably": the share of host RAM a path may plan to use before the plan prefers the other one
#: (the page cache, the shell, a second process); a path is refused only when it needs more than all of it
HOST_RAM_COMFORT = 0.75
#: in-memory: torch, transformers and llm-compressor themselves, the save buffers
IN_MEMORY_OVERHEAD_GIB = 2.0
#: model-free: each shard job holds its input tensors, their quantized output and one layer's work tensors;
#: 2.5 x the shard's bytes is the estimate llm-compressor itself falls back to
#: (llmcompressor/entrypoints/model_free/__init__.py, ``_validate_shard``)
MODEL_FREE_SHARD_FACTOR = 2.5
#: model-free: torch and compressed-tensors in the process
MODEL_FREE_OVERHEAD_GIB = 1.5
#: model-free on GPU: concurrent shard jobs (compressed-tensors runs them one at a time on CPU whatever it is
#: told: ``exec_jobs_dynamic``'s CPU path)
MODEL_FREE_MAX_WORKERS = 4
_GIB = 2**30


@dataclass(frozen=True)
class HostMemoryNeed:
    """Host RAM one production path needs for this checkpoint, and how the figure is made up."""

    path: str
    bytes: int
    how: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def amount(self) -> str:
        return f"~{self.bytes / _GIB:.1f} GiB of host RAM ({self.how})"

    def text(self) -> str:
        return f"{self.path} needs {self.amount()}"


@dataclass(frozen=True)
class ProductionChoice:
    """The path ``plan()`` picked, why, its worker count, and the RAM every path needs (the chosen first).

    ``host_bytes`` is this machine's RAM (0: unknown, then nothing is refused); ``blocked`` says why model-free
    cannot be used here (empty when it can)."""

    path: str
    reason: str
    workers: int
    needs: tuple[HostMemoryNeed, ...]
    host_bytes: int
    blocked: str = ""

    @property
    def need(self) -> HostMemoryNeed:
        return self.needs[0]

    @property
    def fits(self) -> bool:
        """Whether the chosen path fits this host's RAM at all (unknown RAM: assumed to)."""
        return not self.host_bytes or not self.needs or self.need.bytes <= self.host_bytes


def shard_bytes(tensors: Mapping[str, Any]) -> dict[str, int]:
    """Bytes of tensor data per shard file, from the headers (``TensorInfo.shard`` and ``offsets``)."""
    out: dict[str, int] = {}
    for info in tensors.values():
        shard = getattr(info, "shard", "")
        start, end = getattr(info, "offsets", (0, 0))
        out[shard] = out.get(shard, 0) + int(end) - int(start)
    return out


def in_memory_need(checkpoint_bytes: int, quantized_bytes: int) -> HostMemoryNeed:
    """The whole model as transformers loads it (``dtype="auto"``: the checkpoint's own dtype), the quantized
    copy ``save_pretrained`` writes from, and the libraries."""
    total = checkpoint_bytes + quantized_bytes + int(IN_MEMORY_OVERHEAD_GIB * _GIB)
    return HostMemoryNeed("in-memory", total, f"weights {checkpoint_bytes / _GIB:.1f} GiB + quantized copy "
                                              f"{quantized_bytes / _GIB:.1f} GiB + {IN_MEMORY_OVERHEAD_GIB:g} GiB "
                                              "for the libraries")


def model_free_need(largest_shard: int, workers: int) -> HostMemoryNeed:
    """``workers`` shard jobs of the largest shard at once, and the libraries."""
    per_job = int(largest_shard * MODEL_FREE_SHARD_FACTOR)
    total = per_job * workers + int(MODEL_FREE_OVERHEAD_GIB * _GIB)
    return HostMemoryNeed("model-free", total, f"{workers} worker(s) x largest shard {largest_shard / _GIB:.2f} GiB "
                                               f"x {MODEL_FREE_SHARD_FACTOR:g} + {MODEL_FREE_OVERHEAD_GIB:g} GiB for "
                                               "the libraries")


def _workers(largest_shard: int, n_shards: int, device: str, host_bytes: int) -> int:
    """Shard jobs at once: 1 on CPU (compressed-tensors runs them in turn there); on GPU as many as the shards,
    :data:`MODEL_FREE_MAX_WORKERS` and a comfortable share of host RAM allow."""
    if device != "cuda" or n_shards <= 1:
        return 1
    cap = min(MODEL_FREE_MAX_WORKERS, n_shards)
    if not host_bytes or not largest_shard:
        return cap
    room = host_bytes * HOST_RAM_COMFORT - MODEL_FREE_OVERHEAD_GIB * _GIB
    return max(1, min(cap, math.floor(room / (largest_shard * MODEL_FREE_SHARD_FACTOR))))


def choose_production(requested: str, *, blocked: str, checkpoint_bytes: int, quantized_bytes: int,
                      shards: Mapping[str, int], device: str, host_bytes: int) -> ProductionChoice:
    """Pick the production path.

    ``requested`` is ``auto`` or a path; ``blocked`` is why model-free cannot run (empty when it can: a
    checkpoint directory, a data-free scheme, no KV-cache calibration, a backend that declares a model-free
    path). ``auto`` keeps in-memory while it fits comfortably in ``host_bytes`` and takes model-free when it
    does not and model-free is possible. A requested path is taken as asked (``plan()`` refuses a requested
    model-free that is blocked).
    """
    largest = max(shards.values(), default=0)
    workers = _workers(largest, len(shards), device, host_bytes)
    mem = in_memory_need(checkpoint_bytes, quantized_bytes)
    free = model_free_need(largest, workers) if not blocked else None
    comfort = int(host_bytes * HOST_RAM_COMFORT)
    ram = f"{host_bytes / _GIB:.1f} GiB of host RAM" if host_bytes else "unknown host RAM"

    def choice(path: str, reason: str) -> ProductionChoice:
        needs = (mem, free) if path == "in-memory" else (free, mem)
        return ProductionChoice(path, reason, workers if path == "model-free" else 1,
                                tuple(n for n in needs if n is not None), host_bytes, blocked)

    alt = f"model-free would need ~{free.bytes / _GIB:.1f} GiB" if free else f"model-free cannot run: {blocked}"
    if requested == "model-free":
        assert free is not None  # plan() refuses a blocked request before asking
        return choice("model-free", f"model-free (requested), shard by shard: needs {free.amount()}; in-memory "
                                    f"would need ~{mem.bytes / _GIB:.1f} GiB; {ram}")
    if requested == "in-memory":
        return choice("in-memory", f"in-memory (requested): needs {mem.amount()}; {ram}; {alt}")
    if not host_bytes or mem.bytes <= comfort:
        why = f"within {HOST_RAM_COMFORT:.0%} of {ram}" if host_bytes else ram
        return choice("in-memory", f"in-memory: needs {mem.amount()}, {why}; {alt}")
    if free is None:
        return choice("in-memory", f"in-memory: needs {mem.amount()}, more than {HOST_RAM_COMFORT:.0%} of {ram}; "
                                   f"{alt}")
    return choice("model-free", f"model-free, shard by shard: in-memory would need ~{mem.bytes / _GIB:.1f} GiB, "
                                f"more than {HOST_RAM_COMFORT:.0%} of {ram}; model-free needs {free.amount()}")


def host_memory_problem(needs: tuple[HostMemoryNeed, ...], host_bytes: int, blocked: str,
                        model_free_schemes: list[str]) -> tuple[str, str] | None:
    """``(message, fix)`` when the chosen path (``needs[0]``) needs more than all of ``host_bytes``, else None."""
    if not needs or not host_bytes or needs[0].bytes <= host_bytes:
        return None
    need = needs[0]
    message = f"{need.text()}, more than this host's {host_bytes / _GIB:.1f} GiB"
    others = [n for n in needs[1:] if n.bytes <= host_bytes]
    if others:
        fix = f"Pass production='{others[0].path}' ({others[0].text()})."
    elif need.path == "in-memory" and blocked:
        fix = (f"Model-free is not possible: {blocked}. A data-free scheme ({', '.join(model_free_schemes) or 'none'}) "
               f"without kv_cache='fp8' runs model-free, shard by shard; or use a machine with at least "
               f"{math.ceil(need.bytes / _GIB)} GiB of RAM.")
    else:
        fix = f"Use a machine with at least {math.ceil(need.bytes / _GIB)} GiB of RAM."
    return message, fix
