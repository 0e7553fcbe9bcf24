"""``quantize()``: plan → produce with a backend → write atomically → validate → publish.

This module is the path of a checkpoint through quantkit; each step lives in its own package
(``planning/``, ``backends/``, ``checkpoint/``, ``validation/``).
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import re
import resource
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from quantkit import progress
from quantkit.backends import ModelFreeJob, ProduceJob, all_backends, distributed, get_backend
from quantkit.backends.base import Backend
from quantkit.calibration import (
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_NUM_SAMPLES,
    builtin_text_warning,
    check_calibration,
    check_enough,
    describe_calibration,
    eval_source_name,
    eval_text,
    tokenize_samples,
)
from quantkit.checkpoint import atomic
from quantkit.errors import (
    CalibrationDataError,
    DeviceMemoryError,
    HostMemoryError,
    PlanOptionError,
    QualityBudgetError,
    ValidationFailedError,
)
from quantkit.hardware import HardwareName, support
from quantkit.models.embedded import is_embedded
from quantkit.planning.mixed import MIXED_ALGORITHM, tighter
from quantkit.planning.planner import EXPLICIT_RULE, Plan, plan
from quantkit.schemes import KvCacheDtype, SchemeName

log = logging.getLogger(__name__)

MANIFEST = "quantkit.json"


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize()`` produced. Sizes are bytes of ``*.safetensors``; timings are seconds."""

    output_dir: Path
    scheme: str
    backend: str
    hardware: str
    kv_cache: str
    group_size: int | None
    ignore: tuple[str, ...]
    num_calibration_samples: int
    timings: dict[str, float]
    original_bytes: int | None
    quantized_bytes: int
    peak_rss_bytes: int
    notes: tuple[str, ...] = ()
    findings: tuple[dict[str, Any], ...] = field(default=())
    plan: Plan | None = field(default=None, repr=False, compare=False)

    @property
    def compression_ratio(self) -> float | None:
        return self.original_bytes / self.quantized_bytes if self.original_bytes and self.quantized_bytes else None

    def summary(self) -> str:
        """A few readable lines: what was written, its size and time, what stayed 16-bit, notes, the verdict."""
        ratio = f", {self.compression_ratio:.2f}x smaller" if self.compression_ratio else ""
        lines = [f"wrote {self.output_dir} ({self.scheme} via {self.backend}, {self.quantized_bytes / 1e6:.1f} MB"
                 f"{ratio}) in {self.timings.get('total_s', 0.0):.1f} s"]
        group = f"group size {self.group_size}; " if self.group_size else ""
        lines.append(f"  {group}kept 16-bit: {', '.join(self.ignore)}")
        mixed = self.plan.mixed if self.plan is not None else None
        if mixed is not None:
            lines += [f"  {mixed.summary()}", *mixed.table()]
        lines += [f"  note: {n}" for n in self.notes]
        warnings = [f for f in self.findings if f.get("severity") != "error"]
        lines.append(f"  validated for {self.hardware}: OK" + (f" with {len(warnings)} warning(s)" if warnings else ""))
        lines += [f"    {f['severity']} [{f['rule']}] {f['message']}" for f in self.findings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "plan"}
        d["plan"] = self.plan.to_dict() if self.plan is not None else None
        d["output_dir"] = str(self.output_dir)
        d["compression_ratio"] = self.compression_ratio
        return d


def _device() -> str:
    """Where the producer runs in this process: ``cuda`` when torch sees a GPU."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _safetensors_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) or None


def _versions() -> dict[str, str]:
    """Versions of Python, quantkit, torch, transformers and every package a registered backend requires."""
    out = {"python": platform.python_version()}
    required = [re.split(r"[=<>!~\[ ]", req, maxsplit=1)[0] for b in all_backends() for req in b.requires.values()]
    for pkg in dict.fromkeys(["quantkit", "torch", "transformers", *required]):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def quantize(
    model: Any = "embedded",
    scheme: SchemeName | Literal["auto"] | str | Plan = "auto",
    *,
    hardware: HardwareName | str | None = None,
    output_dir: str | Path | None = None,
    backend: str | None = None,
    kv_cache: KvCacheDtype | str | None = None,
    calibration: Any = None,
    num_calibration_samples: int | None = None,
    max_seq_length: int | None = None,
    group_size: int | None = None,
    ignore: list[str] | tuple[str, ...] = (),
    tokenizer: Any = None,
    overwrite: bool = False,
    for_vllm: bool = True,
    production: str = "auto",
    max_quality_loss: float | None = None,
    eval_data: str | Path | None = None,
    nproc: int = 1,
    host_memory: float | None = None,
) -> QuantizeResult:
    """Execute a plan: quantize a model into a checkpoint vLLM loads on the target, validate it, publish it.

    ``quantize()`` makes no decision of its own. With a scheme name (or ``"auto"``) it asks
    :func:`quantkit.plan` -- passing ``backend``, ``kv_cache``, ``group_size``, ``ignore`` and ``for_vllm`` as
    overrides -- and executes the :class:`~quantkit.planning.planner.Plan`; given a ``Plan``, it executes that
    one (then the override arguments must be left unset).

    Args:
        model: a local checkpoint directory, ``"embedded"`` for the built-in SmolLM2-135M, or a loaded
            transformers model (then pass ``tokenizer`` too unless its source directory is known).
        scheme: a name from ``quantkit.SCHEMES`` (``quantkit schemes``), ``"auto"`` to let the plan choose, or
            a :class:`Plan` from :func:`quantkit.plan`.
        hardware: the serving target (``quantkit hardware``); None detects the local GPU, else ``cpu`` (the
            same default as ``plan()`` and ``load()``).
        output_dir: where the checkpoint goes; defaults to ``./<model>-<scheme>``. Never overwritten
            unless ``overwrite=True``.
        backend: force a registered backend (``"llmcompressor"``, ``"modelopt"``); by default the plan asks
            every backend.
        kv_cache: ``"fp8"`` to add a calibrated FP8 KV-cache scheme, ``"auto"`` for none; None lets the plan
            decide.
        calibration: list of strings, a ``datasets.Dataset``, a .txt/.jsonl path, or None for the shipped text.
        num_calibration_samples: calibration samples (windows of ``max_seq_length`` tokens); None takes the
            plan's (the producer's recommendation, 512; 32 for the embedded demo).
        max_seq_length: tokens per calibration sample; None takes the plan's (2048 for llm-compressor, 512 for
            ModelOpt; 256 for the embedded demo).
        group_size: force a 4-bit group size; by default the largest of 128/64/32 that divides every layer.
        ignore: extra module names or ``re:`` patterns to keep unquantized, on top of the planned list.
        overwrite: replace an existing ``output_dir``.
        for_vllm: False allows formats vLLM cannot load (e.g. ModelOpt INT4_AWQ for TensorRT-LLM).
        production: ``"in-memory"`` (load the whole model), ``"model-free"`` (quantize the checkpoint shard by
            shard without building the model; data-free schemes only), ``"offloaded"`` (load it with the weights
            beyond a RAM budget on disk, calibrate one decoder layer at a time; any llm-compressor scheme) or
            ``"auto"``: the plan takes model-free, else offloaded, when the model does not fit comfortably in
            host RAM (docs/big-models.md).
        max_quality_loss: mixed precision within a budget: the perplexity rise allowed on the calibration text,
            as a fraction (0.1 = +10 %). Starts from w4a16, measures each layer's sensitivity, keeps the fewest
            layers at w8a16 / 16-bit that meet it, checks the written checkpoint against it (searching again
            below the budget when it misses) and lists each layer's choice in ``result.plan.mixed``
            (docs/quality.md).
        eval_data: with ``max_quality_loss``, the text the budget is scored on (a .txt, or a .jsonl of
            ``{"text": ...}`` rows; keep it out of the calibration data) instead of the calibration text: the
            sensitivity search and the check of the written checkpoint score its first 2,048 tokens.
        nproc: processes that produce the checkpoint together: above 1, quantkit launches itself under torchrun
            with ``nproc`` ranks (one per GPU; gloo on CPU) that each calibrate on their share of the samples,
            and rank 0 publishes (llm-compressor GPTQ and SmoothQuant + GPTQ, AWQ on GPUs; a checkpoint
            directory; docs/big-models.md).
        host_memory: GiB of host RAM the job may use (``plan(host_memory=)``); None: this machine's, or its
            container's limit.

    Returns:
        A :class:`QuantizeResult` with the path, the plan executed, timings, sizes and validator findings.

    Raises:
        UnknownNameError: unknown scheme, hardware or backend.
        ModelNotFoundError: the model path is missing or not a checkpoint.
        OutputExistsError: ``output_dir`` exists and ``overwrite`` is False.
        UnsupportedSchemeError: the target cannot serve the scheme, or no backend can produce it here.
        PlanOptionError: a Plan was passed together with override arguments, or ``production="model-free"``/``"offloaded"``
            where it cannot run.
        HostMemoryError: the production path needs more host RAM than this machine has (before any loading).
        DeviceMemoryError: it needs more on one GPU than this machine's GPU has (before any loading).
        MissingDependencyError: the backend's packages are not installed in this environment.
        BackendError: the producer failed (original exception chained).
        ValidationFailedError: the checkpoint has error findings; it is kept at ``<output_dir>.rejected``.
        QualityBudgetError: a mixed-precision checkpoint missed ``max_quality_loss`` after every search.
    """
    t_start = time.perf_counter()
    if isinstance(scheme, Plan):
        given = {"hardware": hardware, "backend": backend, "kv_cache": kv_cache, "group_size": group_size,
                 "ignore": tuple(ignore) or None, "for_vllm": None if for_vllm else False,
                 "production": None if production == "auto" else production,
                 "max_quality_loss": max_quality_loss, "nproc": None if nproc == 1 else nproc,
                 "host_memory": host_memory}
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise PlanOptionError(f"quantize() got a Plan and also {', '.join(clash)}: the plan already decided them.",
                                  fix="Pass the choices to quantkit.plan(...) instead, then quantize(model, that_plan).")
        chosen = scheme
    else:
        chosen = plan(model, hardware, scheme=scheme, backend=backend, group_size=group_size, ignore=ignore,
                      kv_cache=kv_cache, for_vllm=for_vllm, production=production,
                      max_quality_loss=max_quality_loss, nproc=nproc, host_memory=host_memory)
    return execute(chosen, model, output_dir=output_dir, calibration=calibration,
                   num_calibration_samples=num_calibration_samples, max_seq_length=max_seq_length,
                   tokenizer=tokenizer, overwrite=overwrite, t_start=t_start, eval_data=eval_data)


def execute(chosen: Plan, model: Any = None, *, output_dir: str | Path | None = None, calibration: Any = None,
            num_calibration_samples: int | None = None, max_seq_length: int | None = None,
            tokenizer: Any = None, overwrite: bool = False, t_start: float | None = None,
            eval_data: str | Path | None = None) -> QuantizeResult:
    """Run a :class:`Plan`: load the model (or, on the plan's model-free path, read it shard by shard), produce
    with the plan's backend, validate against the plan, publish atomically. Every choice comes from ``chosen``;
    ``model`` defaults to the plan's model path."""
    t_start = time.perf_counter() if t_start is None else t_start
    if chosen.online:
        raise PlanOptionError(f"This plan is online ({chosen.online}): vLLM quantizes the 16-bit checkpoint at load, "
                              "there is nothing to produce.",
                              fix="Serve it: quantkit.load(path, quantization=plan.vllm_args['quantization']), or "
                                  "plan without online=True to produce a checkpoint.", rule="QK016")
    sch, hw = chosen.scheme, chosen.hardware
    notes: list[str] = []
    if chosen.rule != EXPLICIT_RULE:
        notes.append(f"scheme 'auto' → {sch.name} (rule {chosen.rule})")
    sup = support(sch, hw)
    if chosen.for_vllm and not sup.native:
        notes.append(f"{hw.name} serves {sch.name} through a fallback: {sup.reason}")
    if chosen.group_size and chosen.group_size != sch.group_candidates[0] and "group_size" not in chosen.overrides:
        notes.append(chosen.group_reason)  # the preferred group does not divide every layer
    log.info("plan: %s", chosen.summary())
    runner = get_backend(chosen.backend)
    runner.check_environment()

    from quantkit.checkpoint.reader import check_source
    from quantkit.models.loading import load_model

    model = chosen.model if model is None else model
    model_is_path = not hasattr(model, "named_modules")
    name = (Path(str(model)).name if model_is_path and model not in (None, "embedded")
            else "smollm2-135m" if model_is_path else Path(str(model.config._name_or_path)).name or "model")
    out = Path(output_dir) if output_dir is not None else Path.cwd() / f"{name}-{sch.name}"
    atomic.check_output_dir(out, overwrite=overwrite)  # fail before any expensive work
    if chosen.needs_calibration and calibration is not None:
        check_calibration(calibration)  # a missing file or a bad row: before the model is loaded
    if eval_data is not None:
        if chosen.max_ppl_rise is None:
            raise PlanOptionError("eval_data scores a mixed-precision budget, and this plan has none.",
                                  fix="Pass max_quality_loss=... (CLI --max-ppl-rise) with it, or drop it "
                                      "(roundtrip and report take --eval-data for their perplexity).")
        eval_text(eval_data)  # a missing or unreadable file: before the model is loaded

    problem = chosen.host_memory_problem() if model_is_path else None  # a model object is loaded already
    if problem is not None:  # refuse before loading anything: an OOM kill an hour in helps nobody
        raise HostMemoryError(f"Cannot quantize {name} with {sch.name} here: {problem[0]}.", fix=problem[1])
    gpu_problem = chosen.device_memory_problem()
    if gpu_problem is not None and _device() == "cuda":  # the same, for the GPU each layer is onloaded to
        raise DeviceMemoryError(f"Cannot quantize {name} with {sch.name} here: {gpu_problem[0]}.",
                                fix=gpu_problem[1])
    ranks = chosen.production_nproc
    if ranks > 1 and not distributed.is_worker():
        if not model_is_path or tokenizer is not None:
            raise PlanOptionError(f"The plan runs on {ranks} processes, which load the checkpoint themselves; "
                                  "quantize() got a model or tokenizer object.",
                                  fix="Pass the checkpoint directory and no tokenizer, or plan with nproc=1.")
        return _launch(chosen, dict(model=model, output_dir=out, calibration=calibration,
                                    num_calibration_samples=num_calibration_samples, max_seq_length=max_seq_length,
                                    overwrite=overwrite), t_start)
    rank = distributed.rank() if ranks > 1 else 0

    steps = progress.current()
    offload_folder: Path | None = None
    if chosen.production == "model-free":
        if not model_is_path:
            raise PlanOptionError("The plan is model-free (it reads the checkpoint files), but quantize() got a "
                                  "model object, which may differ from its files.",
                                  fix="Pass the checkpoint directory, or plan with production='in-memory'.")
        from quantkit.models.loading import resolve_model_path

        source = resolve_model_path(model)
        check_source(source)
        t_load, samples, max_seq_length = 0.0, (), max_seq_length or 0
        source_name = str(source)
        mjob = ModelFreeJob(source=source, scheme=sch, ignore=chosen.ignore, group_size=chosen.group_size,
                            workers=chosen.production_workers, device=_device(),
                            options={"for_vllm": chosen.for_vllm, "hardware": hw.name}, output_dir=out)

        def produce(tmp: Path) -> Any:
            return runner.produce_model_free(mjob, tmp)
    else:
        offload = None
        # offloaded, and every distributed run (a checkpoint directory, checked above): with ranks, rank 0 reads
        # the weights into shared memory and the other ranks map them (docs/big-models.md)
        if chosen.production == "offloaded" or ranks > 1:
            if not model_is_path:
                raise PlanOptionError("The plan is offloaded (it loads the checkpoint files offloaded), but "
                                      "quantize() got a model object, which is in memory already.",
                                      fix="Pass the checkpoint directory, or plan with production='in-memory'.")
            from quantkit.models.loading import Offload

            offload = Offload(atomic.offload_dir(out), chosen.production_cpu_budget)
            offload_folder = offload.folder
        steps.step(f"loading {name}" + (" offloaded" if offload else ""))
        t0 = time.perf_counter()
        try:
            with steps.library_output():
                loaded = load_model("embedded" if model is None else model, tokenizer, offload=offload,
                                    on_gpus=chosen.production_placement == "gpus" and _device() == "cuda")
        except BaseException:
            if offload_folder is not None:
                atomic.discard(offload_folder)
            raise
        t_load = time.perf_counter() - t0
        source, source_name = loaded.source, str(loaded.source or loaded.name)

        num_calibration_samples = num_calibration_samples or chosen.calibration_samples or DEFAULT_NUM_SAMPLES
        max_seq_length = max_seq_length or chosen.calibration_seq_len or DEFAULT_MAX_SEQ_LENGTH
        samples = tokenize_samples(calibration, loaded.tokenizer, num_samples=num_calibration_samples,
                                   max_seq_length=max_seq_length) if chosen.needs_calibration else ()
        if samples:
            check_enough(samples, num_samples=num_calibration_samples, max_seq_length=max_seq_length)
        if samples and calibration is None and not is_embedded(loaded.source):
            warning = builtin_text_warning(str(loaded.source or name))
            log.warning("%s", warning)
            notes.append(warning)
        scoring: tuple[tuple[int, ...], ...] = samples
        if chosen.max_ppl_rise is not None and eval_data is not None:
            scoring = _scoring_samples(eval_data, loaded.tokenizer, max_seq_length)
        scored_on = eval_source_name(eval_data) if eval_data is not None else "the calibration text"
        if chosen.max_ppl_rise is not None:
            chosen = _search_mixed(chosen, loaded.model, scoring, scored_on=scored_on)

        def job_for(current: Plan, model_obj: Any) -> ProduceJob:
            mixed = current.mixed
            return ProduceJob(
                model=model_obj, tokenizer=loaded.tokenizer, scheme=sch,
                ignore=current.ignore + (tuple(mixed.ignore_entries()) if mixed else ()),
                kv_cache=_producer_kv(current), calibration=samples, max_seq_length=max_seq_length,
                group_size=current.group_size, options={"for_vllm": current.for_vllm, "hardware": hw.name,
                                                        **({"algorithm": MIXED_ALGORITHM} if mixed else {})},
                layer_schemes=mixed.layer_schemes() if mixed else ())

        job = job_for(chosen, loaded.model)
        if ranks > 1:  # this rank's share of the samples; the Hessians are summed over the ranks
            start, end = distributed.rank_slice(len(samples), rank, ranks)
            job = replace(job, calibration=samples[start:end])
        if offload is not None and source is not None:
            # saving an offloaded model gathers one output shard in RAM at a time (transformers'
            # save_pretrained; llm-compressor's wrapper defaults to 20 GB shards): shard like the source
            job.options["max_shard_size"] = max((f.stat().st_size for f in source.glob("*.safetensors")), default=0)
        runner.check_job(job, device=_device())

        def produce(tmp: Path) -> Any:
            nonlocal chosen
            result = runner.produce(job, tmp)
            if chosen.mixed is None:
                return result
            # the written checkpoint against the budget, on the tokens the search scored; a miss searches
            # again below the budget (round-to-nearest predicted it; the producer's GPTQ usually does better)
            from quantkit.eval.sensitivity import checkpoint_rise

            mixed = chosen.mixed
            history: list[tuple[float, float]] = []  # (predicted, measured) of the attempts before this one
            for attempt in range(1, MIXED_ATTEMPTS + 1):
                steps.step(f"measuring the mixed checkpoint (attempt {attempt})")
                measured = checkpoint_rise(tmp, scoring, mixed.original_ppl)
                mixed = replace(mixed, measured_pct=measured, attempts=attempt)
                log.info("mixed precision attempt %d: predicted %+.2f %%, measured %+.2f %%", attempt,
                         mixed.predicted_pct, measured)
                if measured <= mixed.budget_pct or attempt == MIXED_ATTEMPTS:
                    break
                for child in list(tmp.iterdir()):  # the staging dir is ours: start it again
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
                with steps.library_output():
                    reloaded = load_model("embedded" if model is None else model, tokenizer).model
                target = tighter(mixed, measured, history)
                history.append((mixed.predicted_pct, measured))
                chosen = _search_mixed(chosen, reloaded, scoring, scored_on=scored_on, target_pct=target,
                                       sensitivity={c.unit: c.sensitivity_pct for c in mixed.choices})
                mixed = chosen.mixed
                result = runner.produce(job_for(chosen, reloaded), tmp)
            chosen = replace(chosen, mixed=mixed)
            if mixed.measured_pct is not None and mixed.measured_pct > mixed.budget_pct:
                raise QualityBudgetError(
                    f"Mixed precision missed its budget: the checkpoint raises perplexity by "
                    f"{mixed.measured_pct:+.2f} % on {mixed.scored_on} (budget +{mixed.budget_pct:g} %) after "
                    f"{mixed.attempts} searches; nothing was published.",
                    fix="Allow a larger max_quality_loss, calibrate on more in-domain text, or quantize uniformly "
                        "with w8a16.")
            return result

    tmp = atomic.staging_dir(out)
    try:
        produced = produce(tmp)
        notes.extend(produced.notes)
        timings = {"load_model_s": t_load, **produced.timings}
        if rank != 0:  # rank 0 writes, validates and publishes; this rank's staging directory stays empty
            atomic.discard(tmp)
            timings["total_s"] = time.perf_counter() - t_start
            return QuantizeResult(output_dir=out, scheme=sch.name, backend=runner.name, hardware=hw.name,
                                  kv_cache=chosen.kv_cache_dtype, group_size=chosen.group_size, ignore=chosen.ignore,
                                  num_calibration_samples=len(samples), timings=timings, original_bytes=None,
                                  quantized_bytes=0, peak_rss_bytes=0, notes=(f"rank {rank}: rank 0 publishes",),
                                  plan=chosen)
        manifest = {
            "scheme": sch.name, "backend": runner.name, "hardware": hw.name, "kv_cache": chosen.kv_cache_dtype,
            "group_size": chosen.group_size, "ignore": list(chosen.ignore), "num_calibration_samples": len(samples),
            "max_seq_length": max_seq_length if samples else None,
            "calibration": {"source": describe_calibration(calibration) if samples else None,
                            "tokens": sum(len(x) for x in samples)},
            "source": source_name, "production": chosen.production,
            "for_vllm": chosen.for_vllm, "plan": {"rule": chosen.rule, "overrides": list(chosen.overrides),
                                                  "production_workers": chosen.production_workers,
                                                  "production_cpu_budget": chosen.production_cpu_budget,
                                                  "production_nproc": chosen.production_nproc,
                                                  "tensor_parallel_size": chosen.tensor_parallel_size,
                                                  "vllm_args": dict(chosen.vllm_args)},
            "versions": _versions(), "notes": notes,
            **({"mixed_precision": chosen.mixed.to_dict()} if chosen.mixed else {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        t1 = time.perf_counter()
        steps.step(f"validating for {hw.name} (headers only) and publishing")
        findings = _validate(tmp, out, chosen, runner)
        timings["validate_s"] = time.perf_counter() - t1
        atomic.publish(tmp, out, overwrite=overwrite)
        if chosen.production == "model-free":  # published: the finished shards kept for a resume are done with
            atomic.discard_partials(out)
    except BaseException:
        if tmp.exists():
            atomic.discard(tmp)
        raise
    finally:
        if offload_folder is not None:
            atomic.discard(offload_folder)
    timings["total_s"] = time.perf_counter() - t_start
    result = QuantizeResult(
        output_dir=out, scheme=sch.name, backend=runner.name, hardware=hw.name, kv_cache=chosen.kv_cache_dtype,
        group_size=chosen.group_size, ignore=chosen.ignore, num_calibration_samples=len(samples), timings=timings,
        original_bytes=_safetensors_bytes(source), quantized_bytes=_safetensors_bytes(out) or 0,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, notes=tuple(notes),
        findings=tuple(findings), plan=chosen,
    )
    log.info("wrote %s (%.1f MB) in %.1f s", out, result.quantized_bytes / 1e6, timings["total_s"])
    return result


def _launch(chosen: Plan, kwargs: dict[str, Any], t_start: float) -> QuantizeResult:
    """Execute ``chosen`` on its ``production_nproc`` ranks under torchrun (backends/distributed.py) and return
    rank 0's result, its total time counted from this process's start."""
    import tempfile

    steps = progress.current()
    steps.step(f"quantizing on {chosen.production_nproc} processes (torchrun)")
    with tempfile.TemporaryDirectory(prefix="quantkit-nproc-") as work, steps.library_output():
        result = distributed.launch(chosen, kwargs, Path(work))
    timings = {**result.timings, "ranks_total_s": result.timings.get("total_s", 0.0),
               "total_s": time.perf_counter() - t_start}
    return replace(result, timings=timings)


#: searches (and productions) a mixed-precision quantize may spend before it gives up on the budget
MIXED_ATTEMPTS = 4


def _scoring_samples(eval_data: str | Path, tokenizer: Any, max_seq_length: int) -> tuple[tuple[int, ...], ...]:
    """The first :data:`SENSITIVITY_TOKENS` tokens of ``eval_data`` in windows of ``max_seq_length``."""
    from quantkit.planning.mixed import SENSITIVITY_TOKENS

    windows = -(-SENSITIVITY_TOKENS // max_seq_length)
    scoring = tokenize_samples([eval_text(eval_data)], tokenizer, num_samples=windows, max_seq_length=max_seq_length)
    have = sum(len(x) for x in scoring)
    if have < SENSITIVITY_TOKENS // 4:
        raise CalibrationDataError(f"The eval data {eval_source_name(eval_data)} gave only {have} tokens; scoring "
                                   f"a mixed-precision budget needs at least {SENSITIVITY_TOKENS // 4}.",
                                   fix=f"Pass more held-out text (the search scores up to {SENSITIVITY_TOKENS}).")
    return scoring


def _search_mixed(chosen: Plan, model: Any, samples: Any, *, scored_on: str,
                  sensitivity: dict[str, float] | None = None, target_pct: float | None = None) -> Plan:
    """The plan with its per-layer choices, measured on the loaded model (``chosen.max_ppl_rise`` is set)."""
    from quantkit.eval.sensitivity import search_mixed

    assert chosen.max_ppl_rise is not None
    if not samples:
        raise PlanOptionError("Mixed precision needs calibration data to measure layer sensitivity.",
                              fix="Pass calibration= (or leave it None for the built-in text).")
    steps = progress.current()
    steps.step("measuring layer sensitivity for mixed precision")
    decision = replace(search_mixed(model, samples, ignore=chosen.ignore, group_size=chosen.group_size,
                                    steps=chosen.mixed_steps, steps_reason=chosen.mixed_reason,
                                    budget_pct=chosen.max_ppl_rise, target_pct=target_pct,
                                    sensitivity=sensitivity), scored_on=scored_on, target_pct=target_pct)
    log.info("%s", decision.summary())
    return replace(chosen, mixed=decision)


def _producer_kv(chosen: Plan) -> str:
    """The KV-cache dtype the producer calibrates into the checkpoint: the plan's when its scales are calibrated
    (``fp8``), else ``auto`` -- the other dtypes are serve-time choices (``vllm_args``) with runtime scales."""
    from quantkit.vllm_facts import KV_CACHE_DTYPE_FACTS

    fact = KV_CACHE_DTYPE_FACTS[chosen.kv_cache_dtype]
    return (fact.alias_of or fact.name) if fact.produced else "auto"


def _plan_mismatches(path: Path, chosen: Plan, runner: Backend) -> list[str]:
    """What the written checkpoint says that the plan did not: the vLLM method, the KV-cache scheme."""
    from quantkit.checkpoint.reader import CheckpointView
    from quantkit.planning.kv import checkpoint_kv_scheme, with_sidecar_quant_config
    from quantkit.serve.engine import detect_quant_method

    view = CheckpointView(path)
    try:
        method = detect_quant_method(view)
        kv_declared = bool(checkpoint_kv_scheme(with_sidecar_quant_config(view.config, view.hf_quant_config)))
    finally:
        view.close()
    out = []
    expected = runner.vllm_method(chosen.scheme)
    if expected is not None and method != expected:
        out.append(f"the plan expects vLLM method {expected!r} for {chosen.scheme.name}, the checkpoint declares "
                   f"{method!r}")
    if kv_declared != (_producer_kv(chosen) != "auto"):
        out.append(f"the plan's KV-cache dtype is {chosen.kv_cache_dtype!r} but the checkpoint "
                   f"{'declares' if kv_declared else 'lacks'} a KV-cache scheme")
    return out


def _validate(tmp: Path, out: Path, chosen: Plan, runner: Backend) -> list[dict[str, Any]]:
    """Validate the staged checkpoint for the plan's target and TP size, and against the plan itself; on error
    findings move it aside and raise."""
    from quantkit.validation import validate

    for_vllm = chosen.for_vllm
    report = validate(tmp, hardware=chosen.hardware if for_vllm else None,
                      tensor_parallel_size=chosen.tensor_parallel_size if for_vllm else None)
    findings = [f.to_dict() if hasattr(f, "to_dict") else dict(vars(f)) for f in report.findings]
    findings += [{"rule": "plan-mismatch", "severity": "error", "message": m + ".",
                  "fix": "The backend wrote something other than the plan: report it with the plan "
                         "(quantkit plan --json) and the checkpoint's config.json."}
                 for m in _plan_mismatches(tmp, chosen, runner)]
    for f in findings:
        if f.get("severity") == "warning":
            log.warning("validate %s: %s", f.get("rule"), f.get("message"))
    errors = [f for f in findings if f.get("severity") == "error"]
    if errors and for_vllm:
        kept = atomic.reject(tmp, out)
        lines = "; ".join(f"[{f.get('rule')}] {f.get('message')}" for f in errors[:5])
        raise ValidationFailedError(
            f"The checkpoint failed validation with {len(errors)} error(s): {lines}. It was kept at {kept}, "
            f"not published at {out}.",
            fix=errors[0].get("fix") or "See `quantkit validate` on the kept directory.",
            report=report,
        )
    return findings
