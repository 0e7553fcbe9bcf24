"""llm-compressor backend: compressed-tensors checkpoints that vLLM detects with no flag.

Recipes per scheme (see ``LlmCompressorRecipe`` in the scheme table):
- ``rtn``: one data-free ``QuantizationModifier`` (FP8 dynamic/block, NVFP4A16, MXFP4A16); with a calibrated
  scheme (NVFP4, FP8 static, an FP8 KV cache) the same modifier observes the calibration data.
- ``gptq``: ``GPTQModifier`` (W4A16, W4A8).
- ``smoothquant+gptq``: ``SmoothQuantModifier(0.8)`` then ``GPTQModifier`` (W8A8 INT8).
- ``awq``: ``AWQModifier`` then ``QuantizationModifier`` (W4A16 asymmetric).

The data-free ``rtn`` schemes also have a model-free path (:meth:`LlmCompressorBackend.produce_model_free`):
llm-compressor's ``model_free_ptq`` reads, quantizes and writes one safetensors shard at a time without
building the model, for checkpoints bigger than host RAM.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantkit import progress
from quantkit.backends.base import (
    Backend,
    BackendSupport,
    ModelFreeJob,
    ProduceJob,
    ProduceResult,
    SupportQuery,
    register_backend,
)
from quantkit.errors import BackendError, UnsupportedSchemeError
from quantkit.schemes import Scheme, get_scheme

log = logging.getLogger(__name__)

# The FP8 KV-cache scheme llm-compressor calibrates (per-tensor k/v scales); vLLM reads it from
# `quantization_config.kv_cache_scheme` and applies it even when `kv_cache_dtype="auto"`.
FP8_KV_CACHE_SCHEME: dict[str, Any] = {
    "num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True,
}
SMOOTHQUANT_STRENGTH = 0.8
# AutoRound's own default and llm-compressor's examples/autoround example: 200 tuning steps per decoder layer
AUTOROUND_ITERS = 200


@register_backend("llmcompressor")
class LlmCompressorBackend(Backend):
    """Drives ``llmcompressor.oneshot`` and saves a compressed-tensors checkpoint."""

    requires = {"llmcompressor": "llmcompressor==0.14.0.1", "compressed_tensors": "compressed-tensors==0.19.0"}
    # llm-compressor's examples (examples/quantization_w8a8_int8, w4a16, ...): NUM_CALIBRATION_SAMPLES = 512,
    # MAX_SEQUENCE_LENGTH = 2048
    calibration_recommendation = (512, 2048, "llm-compressor's examples: 512 samples x 2048 tokens")

    def can_produce(self, scheme: Scheme) -> bool:
        return scheme.llmcompressor is not None

    def supports(self, query: SupportQuery) -> BackendSupport:
        rec = query.scheme.llmcompressor
        if rec is None:
            return BackendSupport(False, f"llm-compressor has no recipe for {query.scheme.name}")
        data = "data-free" if not query.scheme.needs_calibration else f"{rec.algorithm} with calibration data"
        return BackendSupport(True, f"producer llm-compressor ({rec.preset}, {data}): compressed-tensors output "
                                    "that vLLM detects without flags", preference=1)

    def vllm_method(self, scheme: Scheme) -> str | None:
        return "compressed-tensors"

    def check_job(self, job: ProduceJob, *, device: str) -> None:
        if not self.can_produce(job.scheme):
            raise UnsupportedSchemeError(f"llm-compressor has no recipe for {job.scheme.name}.",
                                         fix="Use backend='modelopt' or another scheme.")

    def _config_groups(self, job: ProduceJob | ModelFreeJob) -> dict[str, Any]:
        from compressed_tensors.quantization import preset_name_to_scheme

        groups: dict[str, Any] = {}
        # named (``re:``) targets win over the class target on both sides (compressed-tensors match_targets,
        # vLLM find_matched_target), so layer_schemes override the base scheme for the layers they name
        for name, targets in ((job.scheme.name, ("Linear",)), *getattr(job, "layer_schemes", ())):
            recipe = get_scheme(name).llmcompressor
            if recipe is None:
                raise UnsupportedSchemeError(f"llm-compressor has no recipe for {name}.",
                                             fix="Use a scheme from `quantkit schemes` with llmcompressor.")
            qscheme = preset_name_to_scheme(recipe.preset, list(targets))
            if job.group_size is not None and qscheme.weights is not None and qscheme.weights.group_size:
                qscheme.weights.group_size = job.group_size
            groups[f"group_{len(groups)}"] = qscheme
        return groups

    def recipe(self, job: ProduceJob) -> list[Any]:
        """The llm-compressor modifiers for ``job`` (public so benchmarks can run the same recipe raw)."""
        from llmcompressor.modifiers.quantization import (
            GPTQModifier,
            QuantizationModifier,
        )
        from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

        recipe = job.scheme.llmcompressor
        assert recipe is not None
        common: dict[str, Any] = {"config_groups": self._config_groups(job), "ignore": list(job.ignore)}
        if job.kv_cache == "fp8":
            common["kv_cache_scheme"] = dict(FP8_KV_CACHE_SCHEME)
        if recipe.algorithm == "rtn":
            return [QuantizationModifier(**common)]
        if recipe.algorithm == "gptq":
            return [GPTQModifier(**common)]
        if recipe.algorithm == "smoothquant+gptq":
            return [SmoothQuantModifier(smoothing_strength=SMOOTHQUANT_STRENGTH, ignore=list(job.ignore)),
                    GPTQModifier(**common)]
        if recipe.algorithm == "awq":
            return [AWQModifier(duo_scaling="both"), QuantizationModifier(**common)]
        if recipe.algorithm == "autoround":
            from llmcompressor.modifiers.autoround import AutoRoundModifier

            return [AutoRoundModifier(**common, iters=AUTOROUND_ITERS)]
        raise UnsupportedSchemeError(f"Unknown llm-compressor algorithm {recipe.algorithm!r}.")

    def needs_data(self, job: ProduceJob) -> bool:
        return job.scheme.needs_calibration or job.kv_cache != "auto"

    def produce(self, job: ProduceJob, out_dir: Path) -> ProduceResult:
        result = ProduceResult()
        with _library_output():  # importing llm-compressor already logs ("No accelerator available!")
            from llmcompressor import oneshot

            recipe = self.recipe(job)
        kwargs: dict[str, Any] = {}
        if self.needs_data(job):
            kwargs = {"dataset": calibration_dataset(job), "num_calibration_samples": len(job.calibration),
                      "max_seq_length": job.max_seq_length, "shuffle_calibration_samples": False}
            log.info("calibrating %s on %d samples x %d tokens", job.scheme.name, len(job.calibration),
                     job.max_seq_length)
        else:
            log.info("quantizing %s (data-free)", job.scheme.name)
        t0 = time.perf_counter()
        steps = progress.current()
        try:
            with _library_output(OneshotSteps(recipe) if kwargs else None), _cpu_safe_awq():
                oneshot(model=job.model, tokenizer=job.tokenizer, recipe=recipe, **kwargs)
        except Exception as exc:  # translate at the boundary, keep the cause
            raise BackendError(f"llm-compressor failed on {job.scheme.name}: {type(exc).__name__}: {exc}",
                               fix="See the chained exception; check the scheme suits this model "
                                   "(`quantkit schemes`) and the calibration data.") from exc
        result.timings["quantize_s"] = time.perf_counter() - t0
        log.info("saving compressed-tensors checkpoint")
        steps.step("saving the compressed-tensors checkpoint")
        t1 = time.perf_counter()
        with _library_output():
            shard = {"max_shard_size": job.options["max_shard_size"]} if job.options.get("max_shard_size") else {}
            job.model.save_pretrained(out_dir, save_compressed=True, **shard)
            job.tokenizer.save_pretrained(out_dir)
        result.timings["save_s"] = time.perf_counter() - t1
        return result


    def model_free_support(self, scheme: Scheme) -> BackendSupport:
        rec = scheme.llmcompressor
        if rec is None:
            return BackendSupport(False, f"llm-compressor has no recipe for {scheme.name}")
        # model_free_ptq quantizes weights only and refuses static activation scales ("Model Free PTQ cannot
        # calibrate activations"); GPTQ/AWQ/SmoothQuant need the model's forward pass
        if scheme.needs_calibration or rec.algorithm != "rtn":
            return BackendSupport(False, f"{scheme.name} is calibrated ({rec.algorithm} with data): model_free_ptq "
                                         "only does data-free round-to-nearest weight schemes")
        return BackendSupport(True, f"llm-compressor model_free_ptq ({rec.preset}, data-free) quantizes it shard "
                                    "by shard")

    def offloaded_support(self, scheme: Scheme) -> BackendSupport:
        if scheme.llmcompressor is None:
            return BackendSupport(False, f"llm-compressor has no recipe for {scheme.name}")
        # oneshot's sequential pipeline onloads one subgraph (decoder layer) at a time from compressed-tensors'
        # offload (llmcompressor/pipelines/sequential/pipeline.py: set_onload_device, disable_offloading per
        # subgraph); a data-free recipe runs through the same pipeline without data
        return BackendSupport(True, "llm-compressor's sequential pipeline on a model loaded by compressed-tensors' "
                                    "load_offloaded_model (device_map='auto_offload')")

    def produce_model_free(self, job: ModelFreeJob, out_dir: Path) -> ProduceResult:
        """Run llm-compressor's ``model_free_ptq`` from ``job.source`` into ``out_dir``.

        ``model_free_ptq`` copies every other file of the checkpoint (config, tokenizer, generation config),
        writes one output shard per source shard under the same name, rewrites the index and adds the
        ``quantization_config`` to ``config.json``. It has no resume: all shards run in one call, with no way to
        skip finished ones (``_process_shard`` is private), so a killed run starts again from the first shard;
        its staging directory is swept by the next run (``checkpoint/atomic.py``), never published.
        """
        import torch
        from compressed_tensors.quantization import (
            QuantizationConfig,
            QuantizationStatus,
        )
        from llmcompressor.entrypoints.model_free import model_free_ptq

        result = ProduceResult()
        ignore = [*job.ignore, *model_free_extra_ignore(job.source, job.ignore)]
        config = QuantizationConfig(config_groups=self._config_groups(job), ignore=ignore,
                                    quantization_status=QuantizationStatus.INITIALIZED)
        device: str | list[str] = ([f"cuda:{i}" for i in range(torch.cuda.device_count())]
                                   if job.device == "cuda" and torch.cuda.is_available() else "cpu")
        log.info("quantizing %s model-free (shard by shard, %d worker(s) on %s)", job.scheme.name, job.workers,
                 device)
        progress.current().step(f"quantizing {job.source.name} shard by shard (model-free)")
        t0 = time.perf_counter()
        try:
            with _library_output():
                model_free_ptq(str(job.source), str(out_dir), config=config, max_workers=job.workers,
                               device=device)
        except Exception as exc:  # translate at the boundary, keep the cause
            raise BackendError(f"llm-compressor model_free_ptq failed on {job.scheme.name}: "
                               f"{type(exc).__name__}: {exc}",
                               fix="See the chained exception; production='in-memory' quantizes through the "
                                   "model instead.") from exc
        result.timings["quantize_s"] = time.perf_counter() - t0
        return result


def model_free_extra_ignore(source: Path, ignore: tuple[str, ...] | list[str]) -> list[str]:
    """Modules model_free_ptq must be told to skip that the in-memory path skips by type.

    Without a model, compressed-tensors takes every ``*.weight`` of a module whose name does not end in
    ``norm`` for a Linear (``match_quantizable_tensors``): an embedding would be quantized, and a 1-D or 4-D
    weight (``ln_1``, a vision conv) makes it raise. The in-memory path targets ``Linear`` modules only; these
    are the weights of this checkpoint outside quantkit's Linear list (:func:`checkpoint_module_names`) that the
    plan's ignore list does not already cover.
    """
    from quantkit.checkpoint.reader import CheckpointView
    from quantkit.planning.ignore import checkpoint_module_names, ignore_matcher

    view = CheckpointView(source)
    try:
        tensors = view.tensors
    finally:
        view.close()
    linear = set(checkpoint_module_names(tensors))
    ignored = ignore_matcher(ignore)
    out = {name[: -len(".weight")] for name in tensors if name.endswith(".weight")}
    return sorted(m for m in out if m not in linear and not m.endswith("norm") and not ignored(m))


class OneshotSteps:
    """Per-layer progress from oneshot's own output: each calibrating modifier runs one sequential pass over
    the decoder layers (llm-compressor's IndependentPipeline logs "Inferred `SequentialPipeline` for
    `GPTQModifier`", then the pass draws "(k/N): Calibrating" bars). Names the pass, so GPTQ's counter starting
    again at 1 after SmoothQuant's reads as the next pass, not a restart. Output it does not recognise is only
    logged: a new llm-compressor wording costs the per-layer line, nothing else."""

    _PASS = re.compile(r"Inferred `\w+` for `(\w+?)(?:Modifier)?`")
    _LAYER = re.compile(r"^\((\d+)/(\d+)\): Calibrating")

    def __init__(self, recipe: list[Any]) -> None:
        self.passes = max(len(recipe), 1)
        self.index = 0
        self.name = ""
        self.layer = 0

    def __call__(self, line: str) -> progress.StepInfo | None:
        m = self._PASS.search(line)
        if m:
            self.index, self.name, self.layer = self.index + 1, m.group(1), 0
            return None
        m = self._LAYER.match(line)
        if not m or int(m.group(1)) == self.layer:
            return None
        self.layer, total = int(m.group(1)), int(m.group(2))
        index = max(self.index, 1)
        where = f"{self.name} " if self.name else ""
        return progress.StepInfo(f"{where}pass {index}/{self.passes}: calibrating layer", self.layer, total,
                                 fraction=min((index - 1 + (self.layer - 1) / total) / self.passes, 1.0))


@contextlib.contextmanager
def _library_output(parser: progress.LineParser | None = None) -> Iterator[None]:
    """While a progress is active, llm-compressor's output goes to the run log (steps parsed from it).

    Its loguru console sink keeps the ``sys.stdout`` of the moment it was configured, so llm-compressor's own
    ``configure_logger`` is re-run inside the capture (the sink follows it there) and again after it."""
    if not progress.is_active():
        yield
        return
    try:
        with progress.current().library_output(parser):
            from llmcompressor.logger import configure_logger  # its first import logs: inside the capture

            configure_logger()
            yield
    finally:
        from llmcompressor.logger import configure_logger

        configure_logger()


def calibration_dataset(job: ProduceJob) -> Any:
    """A ``datasets.Dataset`` of already tokenized samples, which oneshot uses as is."""
    from datasets import Dataset

    ids = [list(s) for s in job.calibration]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids]})


@contextlib.contextmanager
def _cpu_safe_awq() -> Iterator[None]:
    """AWQ pins cached activations for faster host-to-device copies; with no accelerator, pinning raises
    "Cannot access accelerator device". Pinning is only an optimisation, so skip it while no accelerator
    exists, for the duration of one oneshot call."""
    import torch

    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *a, **k: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]
