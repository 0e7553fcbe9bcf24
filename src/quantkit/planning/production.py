"""The production path: load the whole model into host RAM, quantize it shard by shard without instantiating it,
or load it offloaded (weights on disk beyond a RAM budget) and calibrate one decoder layer at a time.

Three ways to produce a checkpoint (:data:`PRODUCTION_PATHS`):

* ``in-memory``: transformers loads the whole model, the backend quantizes it (calibrated or not) and saves it.
  Any scheme; the host holds every weight at once.
* ``model-free``: the backend reads, quantizes and writes one safetensors shard at a time without building the
  model (llm-compressor's ``model_free_ptq``). Data-free weight schemes only (no calibration, no KV-cache
  scales); the host holds about one shard per worker.
* ``offloaded``: transformers loads the model through compressed-tensors' ``load_offloaded_model`` with
  ``device_map="auto_offload"`` and a ``max_memory`` budget for the CPU: the weights beyond the budget stay on
  disk, and llm-compressor's sequential pipeline onloads one decoder layer at a time to calibrate and quantize
  it. Any llm-compressor scheme (GPTQ, AWQ, SmoothQuant, static scales, KV-cache scales); the host holds the
  budget, one layer and its work tensors, and the calibration activations llm-compressor caches between layers.

:func:`choose_production` is the decision ``plan()`` records; the estimates are stated in the plan so a user
can see why a path was picked or refused. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

ProductionPath = Literal["in-memory", "model-free", "offloaded"]

#: the production paths and what each does (CLI choices, docs and errors derive from this table)
PRODUCTION_PATHS: dict[str, str] = {
    "in-memory": "transformers loads the whole model into host RAM; the backend quantizes it (calibration "
                 "included) and saves it",
    "model-free": "the backend reads, quantizes and writes one safetensors shard at a time, never building the "
                  "model (llm-compressor model_free_ptq; data-free schemes, no KV-cache calibration)",
    "offloaded": "transformers loads the model offloaded (compressed-tensors load_offloaded_model, "
                 "device_map='auto_offload', a host-RAM budget; the rest on disk); llm-compressor's sequential "
                 "pipeline calibrates and quantizes one decoder layer at a time (any llm-compressor scheme)",
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
#: offloaded: torch, transformers and llm-compressor, the save buffers (as in-memory)
OFFLOADED_OVERHEAD_GIB = 2.0
#: offloaded: the onloaded layer and its quantized copy (llm-compressor quantizes in place, then compresses on save)
OFFLOADED_LAYER_FACTOR = 2
#: offloaded: llm-compressor's IntermediatesCache keeps every calibration sample's layer input on the offload
#: device (``sequential_offload_device="cpu"``) in the model's dtype; a layer's outputs replace its inputs, so
#: both exist while one layer runs
ACTIVATION_COPIES = 2
#: GPTQ keeps one float32 Hessian of in_features x in_features per Linear of the layer being calibrated
#: (llmcompressor/modifiers/gptq/helpers.py, ``make_empty_hessian``)
HESSIAN_BYTES_PER_ELEMENT = 4
#: then quantizes the Linears one by one, and for one Linear holds up to three float32 Hessians at once (its own,
#: normalized and stacked in ``prepare_batch``, permuted twice by ``torch.gather`` in
#: ``apply_activation_ordering``) and three float32 copies of its weight (stacked, permuted, the quantized
#: output). Measured on a hidden-2048 Llama with disk offload on CPU (docs/benchmarks.md, big models): the step
#: that quantizes ``down_proj`` (in_features 5632) peaks 726 MB above the floor between layers; this model
#: gives 699 MB for it (the layer twice, 3 Hessians, 3 weights)
GPTQ_HESSIAN_COPIES = 3
GPTQ_WEIGHT_COPIES = 3
GPTQ_WEIGHT_BYTES_PER_ELEMENT = 4
_GIB = 2**30
_LAYER_RE = re.compile(r"^(.*?\.layers\.\d+)\.")


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

    def where(self) -> str:
        """Disk and accelerator memory the path needs, for the plan's ``produce`` line."""
        parts = [f"disk ~{self.disk_bytes / _GIB:.1f} GiB"
                 + (" (output + offloaded weights)" if self.path == "offloaded" else " (output)")]
        if self.path == "offloaded" and self.cpu_budget is not None:
            parts.append(f"RAM budget for weights {self.cpu_budget / _GIB:.1f} GiB")
        if self.device_bytes:
            parts.append(f"~{self.device_bytes / _GIB:.1f} GiB per GPU")
        return ", ".join(parts)

    path: str
    reason: str
    workers: int
    needs: tuple[HostMemoryNeed, ...]
    host_bytes: int
    blocked: str = ""
    #: offloaded: the host-RAM budget for weights (``max_memory={"cpu": ...}``; the rest goes to disk); None:
    #: RAM unknown, compressed-tensors' own budget (available RAM less 5 GB)
    cpu_budget: int | None = None
    #: disk the path writes: the output checkpoint, and on the offloaded path the weights beyond the budget
    disk_bytes: int = 0
    #: memory one accelerator needs when the producer runs on GPUs (0: CPU producer)
    device_bytes: int = 0
    offload_blocked: str = ""  # why the offloaded path cannot run here (empty when it can)

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


@dataclass(frozen=True)
class LayerProfile:
    """The largest decoder layer of a checkpoint, from its headers: what one sequential step holds."""

    weight_bytes: int  # the layer's weights in the checkpoint's dtype
    hessian_bytes: int  # GPTQ: float32 in_features^2 per quantizable 2-D weight of the layer
    count: int  # decoder layers
    dtype_bytes: int = 2  # bytes per element of its weights (the activations' dtype too: dtype="auto")
    widest_in: int = 0  # the largest in_features of the layer's 2-D weights
    widest_numel: int = 0  # elements of that weight
    #: the largest tensor outside the decoder layers (the embedding or lm_head): llm-compressor's sequential
    #: pipeline cuts the traced model at the decoder layers, so its first subgraph runs ``embed_tokens`` with
    #: layer 0 (and the last one the final norm and ``lm_head``), all onloaded together
    outside_bytes: int = 0

    @property
    def gptq_bytes(self) -> int:
        """GPTQ's working set on the execution device for this layer: every Hessian while the layer calibrates,
        or, while the widest Linear is quantized, its Hessian and weight in their float32 copies; the larger."""
        one = (GPTQ_HESSIAN_COPIES * HESSIAN_BYTES_PER_ELEMENT * self.widest_in ** 2
               + GPTQ_WEIGHT_COPIES * GPTQ_WEIGHT_BYTES_PER_ELEMENT * self.widest_numel)
        return max(self.hessian_bytes, one)


def layer_profile(tensors: Mapping[str, Any]) -> LayerProfile:
    """Bytes of the largest ``*.layers.N`` block and the GPTQ Hessians of its 2-D weights, from the headers."""
    weights: dict[str, int] = {}
    hessians: dict[str, int] = {}
    numel: dict[str, int] = {}
    widest: dict[str, tuple[int, int]] = {}  # layer -> (in_features, numel) of its widest 2-D weight
    outside = 0
    for name, info in tensors.items():
        m = _LAYER_RE.match(name)
        start, end = getattr(info, "offsets", (0, 0))
        if m is None:
            outside = max(outside, int(end) - int(start))
            continue
        weights[m.group(1)] = weights.get(m.group(1), 0) + int(end) - int(start)
        shape = tuple(getattr(info, "shape", ()))
        numel[m.group(1)] = numel.get(m.group(1), 0) + math.prod(shape)
        if name.endswith(".weight") and len(shape) == 2:
            hessians[m.group(1)] = hessians.get(m.group(1), 0) + HESSIAN_BYTES_PER_ELEMENT * shape[1] ** 2
            widest[m.group(1)] = max(widest.get(m.group(1), (0, 0)), (shape[1], math.prod(shape)))
    if not weights:
        return LayerProfile(0, 0, 0)
    largest = max(weights, key=lambda k: weights[k])
    per = round(weights[largest] / numel[largest]) if numel.get(largest) else 2
    wide_in, wide_numel = widest.get(largest, (0, 0))
    return LayerProfile(weights[largest], hessians.get(largest, 0), len(weights), max(per, 1), wide_in, wide_numel,
                        outside)


def activation_bytes(samples: int, seq_len: int, hidden: int, dtype_bytes: int) -> int:
    """Calibration activations llm-compressor caches on the CPU between decoder layers."""
    return samples * seq_len * hidden * dtype_bytes * ACTIVATION_COPIES


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


def offloaded_need(layer: LayerProfile, activations: int, *, gptq: bool, ranks: int = 1) -> HostMemoryNeed:
    """The least host RAM the offloaded path runs in: every weight on disk, one layer onloaded (and its quantized
    copy), GPTQ's working set for that layer, the cached calibration activations, the libraries. A budget for
    weights kept in RAM (:attr:`ProductionChoice.cpu_budget`) comes on top.

    With ``ranks`` processes (distributed oneshot) the weights are shared (rank 0 reads them into shared memory,
    the others map them) and the activations are split between the ranks, but every rank is a process of its own
    with the libraries, and accumulates the whole layer's GPTQ statistics before they are summed
    (``GPTQModifier`` reduces each Hessian to the rank that quantizes it): those count once per rank."""
    work = layer.gptq_bytes if gptq else 0
    libs = int(OFFLOADED_OVERHEAD_GIB * _GIB)
    total = layer.weight_bytes * OFFLOADED_LAYER_FACTOR + ranks * (work + libs) + activations
    per = f" per rank x {ranks} ranks" if ranks > 1 else ""
    hess = f" + GPTQ Hessians and float32 copies {work / _GIB:.2f} GiB{per}" if work else ""
    return HostMemoryNeed("offloaded", total, f"largest layer {layer.weight_bytes / _GIB:.2f} GiB x "
                                              f"{OFFLOADED_LAYER_FACTOR}{hess} + calibration activations "
                                              f"{activations / _GIB:.2f} GiB + {OFFLOADED_OVERHEAD_GIB:g} GiB for the "
                                              f"libraries{per}; weights beyond the RAM budget on disk")


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
                      shards: Mapping[str, int], device: str, host_bytes: int,
                      offload_blocked: str = "the backend has no offloaded path",
                      layer: LayerProfile = LayerProfile(0, 0, 0), activations: int = 0,
                      gptq: bool = False, ranks: int = 1) -> ProductionChoice:
    """Pick the production path.

    ``requested`` is ``auto`` or a path; ``blocked`` is why model-free cannot run (empty when it can: a
    checkpoint directory, a data-free scheme, no KV-cache calibration, a backend that declares a model-free
    path); ``offload_blocked`` the same for the offloaded path (a checkpoint directory and a backend that
    declares one). ``auto`` keeps in-memory while it fits comfortably in ``host_bytes``, then takes model-free
    when possible, then offloaded. A requested path is taken as asked (``plan()`` refuses a requested path
    that is blocked). With ``ranks`` above 1 (distributed oneshot, whose ranks load through compressed-tensors'
    offloaded loader) ``auto`` takes the offloaded path whenever it can run, with every rank's share counted.
    """
    largest = max(shards.values(), default=0)
    workers = _workers(largest, len(shards), device, host_bytes)
    mem = in_memory_need(checkpoint_bytes, quantized_bytes)
    free = model_free_need(largest, workers) if not blocked else None
    off = offloaded_need(layer, activations, gptq=gptq, ranks=ranks) if not offload_blocked else None
    comfort = int(host_bytes * HOST_RAM_COMFORT)
    ram = f"{host_bytes / _GIB:.1f} GiB of host RAM" if host_bytes else "unknown host RAM"
    # one GPU: the first subgraph (the embedding with layer 0), its quantized copy and GPTQ's working set
    sequential_device = (layer.weight_bytes * OFFLOADED_LAYER_FACTOR + (layer.gptq_bytes if gptq else 0)
                         + layer.outside_bytes)

    def choice(path: str, reason: str) -> ProductionChoice:
        first = {"in-memory": mem, "model-free": free, "offloaded": off}[path]
        needs = (first, *(n for n in (mem, free, off) if n is not first))
        budget: int | None = None
        disk = quantized_bytes
        if path == "offloaded" and off is not None:
            budget = max(0, min(checkpoint_bytes, comfort - off.bytes)) if host_bytes else None
            disk += checkpoint_bytes - (budget or 0)
        dev = 0
        if device == "cuda":
            dev = int(largest * MODEL_FREE_SHARD_FACTOR) if path == "model-free" else sequential_device
        return ProductionChoice(path, reason, workers if path == "model-free" else 1,
                                tuple(n for n in needs if n is not None), host_bytes, blocked,
                                cpu_budget=budget, disk_bytes=disk, device_bytes=dev,
                                offload_blocked=offload_blocked)

    alts = [f"model-free would need ~{free.bytes / _GIB:.1f} GiB" if free else f"model-free cannot run: {blocked}"]
    if off is not None:
        alts.append(f"offloaded would need ~{off.bytes / _GIB:.1f} GiB")
    alt = "; ".join(alts)
    if requested == "model-free":
        assert free is not None  # plan() refuses a blocked request before asking
        return choice("model-free", f"model-free (requested), shard by shard: needs {free.amount()}; in-memory "
                                    f"would need ~{mem.bytes / _GIB:.1f} GiB; {ram}")
    if requested == "offloaded":
        assert off is not None  # plan() refuses a blocked request before asking
        return choice("offloaded", f"offloaded (requested), one layer at a time: needs {off.amount()}; in-memory "
                                   f"would need ~{mem.bytes / _GIB:.1f} GiB; {ram}")
    if requested == "in-memory":
        return choice("in-memory", f"in-memory (requested): needs {mem.amount()}; {ram}; {alt}")
    if ranks > 1 and off is not None:
        return choice("offloaded", f"offloaded: {ranks} ranks load the checkpoint through compressed-tensors' "
                                   f"load_offloaded_model (the weights once, in shared memory); needs "
                                   f"{off.amount()}; {ram}")
    if not host_bytes or mem.bytes <= comfort:
        why = f"within {HOST_RAM_COMFORT:.0%} of {ram}" if host_bytes else ram
        return choice("in-memory", f"in-memory: needs {mem.amount()}, {why}; {alt}")
    too_big = f"in-memory would need ~{mem.bytes / _GIB:.1f} GiB, more than {HOST_RAM_COMFORT:.0%} of {ram}"
    if free is not None:
        return choice("model-free", f"model-free, shard by shard: {too_big}; model-free needs {free.amount()}")
    if off is not None:
        return choice("offloaded", f"offloaded, one decoder layer at a time (model-free cannot run: {blocked}): "
                                   f"{too_big}; offloaded needs {off.amount()}")
    return choice("in-memory", f"in-memory: needs {mem.amount()}, more than {HOST_RAM_COMFORT:.0%} of {ram}; "
                               f"{alt}; offloaded cannot run: {offload_blocked}")


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
    elif need.path == "offloaded":
        data_free = (f"; a data-free scheme ({', '.join(model_free_schemes)}) runs model-free, shard by shard"
                     if blocked and model_free_schemes else "")
        fix = ("The offloaded path keeps the weights it cannot hold on disk, but the calibration activations "
               "llm-compressor caches between layers stay in RAM: fewer or shorter calibration samples shrink "
               f"them{data_free}; or use a machine with at least {math.ceil(need.bytes / _GIB)} GiB of RAM.")
    else:
        fix = f"Use a machine with at least {math.ceil(need.bytes / _GIB)} GiB of RAM."
    return message, fix
