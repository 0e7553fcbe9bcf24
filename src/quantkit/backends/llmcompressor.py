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
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quantkit import progress
from quantkit.backends import distributed
from quantkit.backends.base import (
    Backend,
    BackendSupport,
    ModelFreeJob,
    ProduceJob,
    ProduceResult,
    SupportQuery,
    register_backend,
)
from quantkit.checkpoint import atomic
from quantkit.checkpoint.reader import read_safetensors_header
from quantkit.errors import BackendError, UnsupportedSchemeError
from quantkit.schemes import Scheme, get_scheme

log = logging.getLogger(__name__)

# The FP8 KV-cache scheme llm-compressor calibrates (per-tensor k/v scales); vLLM reads it from
# `quantization_config.kv_cache_scheme` and applies it even when `kv_cache_dtype="auto"`.
FP8_KV_CACHE_SCHEME: dict[str, Any] = {
    "num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True,
}
SMOOTHQUANT_STRENGTH = 0.8
# The recipes whose distributed oneshot (torchrun, one process per GPU) quantkit runs: algorithm -> (why it is
# sound, the devices it runs on). Each has an llm-compressor DDP example (examples/quantization_w4a16/
# llama3_ddp_example.py, examples/quantization_w8a8_int8/smoothquant_ddp_example.py, examples/awq/
# llama_example_ddp.py), which run on GPUs; what runs on CPU (gloo) was measured here against one process
# (tests/backends/test_distributed.py, docs/big-models.md).
# GPTQ: llm-compressor sums each module's Hessian over the ranks (GPTQModifier._reduce_hessian_to_target_rank),
# quantizes it on one rank and shares the result; on CPU two gloo ranks write the single-process checkpoint.
# SmoothQuant: the ranks all-reduce the activation min/max, then each applies the same smoothing to its weights;
# on CPU the weights are one shared copy, so quantkit lets rank 0 alone apply it (_smooth_once_on_cpu).
# AWQ: llm-compressor 0.14 all-reduces its statistics on the accelerator's device type (awq/base.py
# ``_allreduce_data_sum`` reads ``torch.accelerator.current_accelerator().type``), so it fails with no GPU.
DISTRIBUTED_ALGORITHMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gptq": ("llm-compressor GPTQ sums each Hessian over the ranks and quantizes each module on one rank",
             ("cuda", "cpu")),
    "smoothquant+gptq": ("llm-compressor SmoothQuant all-reduces the activation ranges over the ranks, GPTQ sums "
                         "each Hessian over them and quantizes each module on one rank", ("cuda", "cpu")),
    "awq": ("llm-compressor AWQ all-reduces its activation statistics and search losses over the ranks",
            ("cuda",)),
}
# AutoRound's own default and llm-compressor's examples/autoround example: 200 tuning steps per decoder layer
AUTOROUND_ITERS = 200


@register_backend("llmcompressor")
class LlmCompressorBackend(Backend):
    """Drives ``llmcompressor.oneshot`` and saves a compressed-tensors checkpoint."""

    requires = {"llmcompressor": "llmcompressor==0.14.0.1", "compressed_tensors": "compressed-tensors==0.19.0"}
    # llm-compressor's examples (examples/quantization_w8a8_int8, w4a16, ...): NUM_CALIBRATION_SAMPLES = 512,
    # MAX_SEQUENCE_LENGTH = 2048
    calibration_recommendation = (512, 2048, "llm-compressor's examples: 512 samples x 2048 tokens")
    # oneshot's sequential pipeline onloads one decoder layer at a time to the first accelerator itself
    # (pipelines/sequential/pipeline.py: set_onload_device(model, get_main_device())), so the model stays in RAM
    gpu_placement = ("host", "the model stays in host RAM and llm-compressor's sequential pipeline onloads one "
                             "decoder layer at a time to the first GPU")

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

        algorithm = _algorithm(job)
        common: dict[str, Any] = {"config_groups": self._config_groups(job), "ignore": list(job.ignore)}
        if job.kv_cache == "fp8":
            common["kv_cache_scheme"] = dict(FP8_KV_CACHE_SCHEME)
        if algorithm == "rtn":
            return [QuantizationModifier(**common)]
        if algorithm == "gptq":
            return [GPTQModifier(**common)]
        if algorithm == "smoothquant+gptq":
            return [SmoothQuantModifier(smoothing_strength=SMOOTHQUANT_STRENGTH, ignore=list(job.ignore)),
                    GPTQModifier(**common)]
        if algorithm == "awq":
            return [AWQModifier(duo_scaling="both"), QuantizationModifier(**common)]
        if algorithm == "autoround":
            from llmcompressor.modifiers.autoround import AutoRoundModifier

            return [AutoRoundModifier(**common, iters=AUTOROUND_ITERS)]
        raise UnsupportedSchemeError(f"Unknown llm-compressor algorithm {algorithm!r}.")

    def needs_data(self, job: ProduceJob) -> bool:
        return (job.scheme.needs_calibration and _algorithm(job) != "rtn") or job.kv_cache != "auto"

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
            with _library_output(OneshotSteps(recipe) if kwargs else None), _cpu_safe_awq(), \
                    _sync_gptq_ranks_on_cpu(), _smooth_once_on_cpu():
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
            # distributed: every rank compresses its share of the modules, rank 0 alone writes (llm-compressor's
            # save_pretrained wrapper: is_source_process())
            job.model.save_pretrained(out_dir, save_compressed=True, **shard)
            if distributed.rank() == 0:
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

    def distributed_support(self, scheme: Scheme, device: str = "cuda") -> BackendSupport:
        rec = scheme.llmcompressor
        if rec is None:
            return BackendSupport(False, f"llm-compressor has no recipe for {scheme.name}")
        entry = DISTRIBUTED_ALGORITHMS.get(rec.algorithm)
        if entry is None:
            return BackendSupport(False, f"{scheme.name} uses {rec.algorithm}, which has no distributed path in "
                                         f"quantkit (it has: {', '.join(DISTRIBUTED_ALGORITHMS)})")
        why, devices = entry
        if device not in devices:
            return BackendSupport(False, f"{scheme.name} uses {rec.algorithm}, whose distributed oneshot in "
                                         f"llm-compressor 0.14 needs a GPU per rank (its all-reduce runs on the "
                                         f"accelerator's device type); this host has none")
        return BackendSupport(True, why)

    def produce_model_free(self, job: ModelFreeJob, out_dir: Path) -> ProduceResult:
        """Run llm-compressor's ``model_free_ptq`` from ``job.source`` into ``out_dir``, resumably.

        The output is what one ``model_free_ptq`` call writes: one output shard per source shard under the same
        name, every other file of the checkpoint copied (config, tokenizer, generation config), the index
        rewritten and the ``quantization_config`` added to ``config.json``. llm-compressor 0.14 has no resume
        (its per-shard function ``_process_shard`` is private), so quantkit calls the public ``model_free_ptq``
        once per group of shards, each on a view of the source that lists only that group
        (:class:`ResumableModelFree`); finished shards wait in ``.NAME.quantkit-partial-KEY`` beside
        ``job.output_dir``, and a killed run re-run with the same plan and source skips them.
        """
        import torch
        from compressed_tensors.quantization import (
            QuantizationConfig,
            QuantizationStatus,
        )

        result = ProduceResult()
        ignore = [*job.ignore, *model_free_extra_ignore(job.source, job.ignore)]
        config = QuantizationConfig(config_groups=self._config_groups(job), ignore=ignore,
                                    quantization_status=QuantizationStatus.INITIALIZED)
        device: str | list[str] = ([f"cuda:{i}" for i in range(torch.cuda.device_count())]
                                   if job.device == "cuda" and torch.cuda.is_available() else "cpu")
        log.info("quantizing %s model-free (shard by shard, %d worker(s) on %s)", job.scheme.name, job.workers,
                 device)
        t0 = time.perf_counter()
        try:
            with _library_output():  # importing llm-compressor's model-free modules logs already
                run = ResumableModelFree(job.source, config, job.output_dir or out_dir)
                resumed = run.run(out_dir, workers=job.workers, device=device)
            if job.output_dir is None:  # nothing to resume into: the partial directory was only scratch
                atomic.discard_partials(out_dir)
        except Exception as exc:  # translate at the boundary, keep the cause
            raise BackendError(f"llm-compressor model_free_ptq failed on {job.scheme.name}: "
                               f"{type(exc).__name__}: {exc}",
                               fix="See the chained exception; production='in-memory' quantizes through the "
                                   "model instead.") from exc
        if resumed:
            result.notes.append(resumed)
        result.timings["quantize_s"] = time.perf_counter() - t0
        return result


#: the record of a resumable model-free run, in its partial directory
RESUME_MANIFEST = "quantkit-resume.json"


class ResumableModelFree:
    """A ``model_free_ptq`` run that survives being killed.

    The source's shards are split into groups closed under llm-compressor's own dependencies (NVFP4/MXFP4 load
    the fused partners of q/k/v and gate/up from other shards: ``ModelFreePtqConverter.get_dependencies``; FP8
    has none, so each shard is its own group). Each group runs through the public ``model_free_ptq`` on a view
    directory that symlinks the group's shards and holds an index listing only their tensors, so every shard
    job loads exactly the tensors it loads in one whole-checkpoint call and writes the same bytes. A finished
    shard is moved into the partial directory and recorded (size, sha256) in its manifest; the manifest also
    holds the key of the run: the quantization config, the library versions and each source shard's size,
    mtime and header hash. A run whose key differs discards the partial directory, and says so.
    """

    def __init__(self, source: Path, config: Any, output_dir: Path) -> None:
        from llmcompressor.entrypoints.model_free.validate import validate_config

        self.source = source
        # what model_free_ptq does to the config first (it swaps minmax observers in place), done here so the
        # key and the final quantization_config are the same whether or not this process quantized a shard
        self.config = validate_config(config, None, ())
        self.output_dir = output_dir
        self.shards = sorted(p.name for p in source.glob("*.safetensors"))
        self.fingerprint = self._fingerprint()
        self.key = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    def _fingerprint(self) -> dict[str, Any]:
        from importlib import metadata

        shards = {}
        for name in self.shards:
            path = self.source / name
            st = path.stat()
            with open(path, "rb") as fh:  # the header names every tensor, its dtype, shape and offsets
                size = int.from_bytes(fh.read(8), "little")
                header = hashlib.sha256(fh.read(size)).hexdigest()
            shards[name] = [st.st_size, st.st_mtime_ns, header]
        return {"config": self.config.model_dump(mode="json"), "source": str(self.source.resolve()),
                "shards": shards, "versions": {p: metadata.version(p) for p in ("llmcompressor", "compressed-tensors")}}

    def groups(self) -> list[list[str]]:
        """Shards that must be quantized together (union of each weight's shard with its partners'), in source
        order."""
        from llmcompressor.entrypoints.model_free.converter import ModelFreePtqConverter

        weight_map = self._weight_map
        parent = {s: s for s in self.shards}

        def root(s: str) -> str:
            while parent[s] != s:
                parent[s] = parent[parent[s]]
                s = parent[s]
            return s

        converter = ModelFreePtqConverter(self.config)
        for name, shard in weight_map.items():
            for dep in converter.get_dependencies(name):
                if dep in weight_map:
                    parent[root(weight_map[dep])] = root(shard)
        groups: dict[str, list[str]] = {}
        for s in self.shards:
            groups.setdefault(root(s), []).append(s)
        return list(groups.values())

    @functools.cached_property
    def _weight_map(self) -> dict[str, str]:
        index = sorted(self.source.glob("*.safetensors.index.json"))
        if index:
            return dict(json.loads(index[0].read_text())["weight_map"])
        return {name: shard for shard in self.shards for name in read_safetensors_header(self.source / shard).tensors}

    def _open_partial(self) -> tuple[Path, dict[str, Any]]:
        """The partial directory for this run's key, with its verified finished shards; others are discarded."""
        for other in atomic.partial_dirs(self.output_dir):
            if not other.name.endswith(f"-{self.key}"):
                log.warning("discarding %s: a partial model-free run for another plan or source (the scheme, "
                            "ignore list, library versions or a source shard changed)", other)
                shutil.rmtree(other, ignore_errors=True)
        partial = atomic.partial_dir(self.output_dir, self.key)
        manifest_path = partial / RESUME_MANIFEST
        manifest: dict[str, Any] = {"fingerprint": self.fingerprint, "done": {}}
        if manifest_path.is_file():
            try:
                old = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("fingerprint") == self.fingerprint:
                for name, rec in old.get("done", {}).items():
                    path = partial / name
                    if path.is_file() and path.stat().st_size == rec["size"] and _sha256(path) == rec["sha256"]:
                        manifest["done"][name] = rec
                    else:
                        log.warning("re-doing %s: the finished shard in %s does not match its record", name, partial)
            else:
                log.warning("discarding the shards in %s: its record is for another plan or source", partial)
        for child in partial.iterdir():  # anything unrecorded is a shard or a view cut short by a kill
            if child.name != RESUME_MANIFEST and child.name not in manifest["done"]:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        _write_json(manifest_path, manifest)
        return partial, manifest

    def run(self, out_dir: Path, *, workers: int, device: str | list[str]) -> str | None:
        """Quantize every shard not finished yet, then assemble the checkpoint in ``out_dir``; returns a note
        when it resumed."""
        from compressed_tensors.utils.safetensors_load import update_safetensors_index
        from llmcompressor.entrypoints.model_free import model_free_ptq
        from llmcompressor.entrypoints.model_free.save_utils import update_config

        partial, manifest = self._open_partial()
        done: dict[str, Any] = manifest["done"]
        total = len(self.shards)
        note = None
        if done:
            first = next((i for i, s in enumerate(self.shards) if s not in done), total)
            note = (f"resumed a killed model-free run: {len(done)} of {total} shard(s) already finished and verified "
                    f"in {partial.name}, restarting from shard {first + 1}")
            log.warning("%s", note)
        steps = progress.current()
        steps.step("quantizing shard by shard (model-free)", len(done), total)
        pending = [g for g in self.groups() if not all(s in done for s in g)]
        weight_map = self._weight_map
        # a batch of `workers` groups per model_free_ptq call keeps its threads busy; a kill loses at most one batch
        batch_size = max(workers, 1)
        for start in range(0, len(pending), batch_size):
            batch = [s for g in pending[start:start + batch_size] for s in g]
            view, work = partial / "view", partial / "work"
            for d in (view, work):
                shutil.rmtree(d, ignore_errors=True)
            view.mkdir()
            for s in batch:
                (view / s).symlink_to((self.source / s).resolve())
            wanted = set(batch)
            # the source's order: shard jobs load their tensors in index order
            (view / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {}, "weight_map": {k: v for k, v in weight_map.items() if v in wanted}}))
            model_free_ptq(str(view), str(work), config=self.config, max_workers=workers, device=device)
            for s in batch:
                os.replace(work / s, partial / s)
                done[s] = {"size": (partial / s).stat().st_size, "sha256": _sha256(partial / s)}
            _write_json(partial / RESUME_MANIFEST, manifest)
            shutil.rmtree(view)
            shutil.rmtree(work)
            log.debug("model-free: %d/%d shard(s) done", len(done), total)
            steps.step("quantizing shard by shard (model-free)", len(done), total)

        # the checkpoint, as one model_free_ptq call leaves it: the source's other files, the shards, the index
        # and the quantization config (written by llm-compressor's and compressed-tensors' own functions)
        for path in sorted(self.source.rglob("*")):
            rel = path.relative_to(self.source)
            if path.is_dir() or str(rel).endswith("safetensors") or str(rel).startswith((".cache", ".gitattributes")):
                continue
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out_dir / rel)
        out_map: dict[str, str] = {}
        total_size = 0
        for s in self.shards:
            try:
                os.link(partial / s, out_dir / s)  # a sibling on the same filesystem: no copy
            except OSError:
                shutil.copyfile(partial / s, out_dir / s)
            for name, info in read_safetensors_header(out_dir / s).tensors.items():
                out_map[name] = s
                total_size += info.offsets[1] - info.offsets[0]
        update_safetensors_index(str(out_dir), total_size, out_map)
        update_config(str(out_dir), self.config)
        return note


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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


def _algorithm(job: ProduceJob) -> str:
    """The scheme's algorithm, or the one the plan set for this job (a mixed-precision checkpoint is produced
    round-to-nearest: planning/mixed.py MIXED_ALGORITHM)."""
    recipe = job.scheme.llmcompressor
    assert recipe is not None
    return str(job.options.get("algorithm") or recipe.algorithm)


def _distributed_on_cpu() -> bool:
    """Whether this process is a rank of an initialised torch.distributed group on a host with no accelerator."""
    import torch
    import torch.distributed as dist

    return not torch.accelerator.is_available() and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """``owner.name`` set to ``value`` for the duration of the block, then restored."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _sync_gptq_ranks_on_cpu() -> Iterator[None]:
    """Distributed GPTQ with no accelerator: a barrier after each layer's GPTQ, for the duration of one oneshot.

    llm-compressor 0.14 quantizes each module on one rank, then shares it with ``broadcast_qparams_and_cleanup``
    (llmcompressor/utils/dist.py), which skips modules whose execution device is the CPU (``skip_cpu=True``):
    their weights live in the shared CPU memory every rank maps, so no copy is needed. But then nothing waits
    for the owning rank to finish writing them: the other ranks go on to propagate the calibration data through
    the layer (and, after the last layer, to compress it for saving) while its GPTQ weights are still being
    written, and read them half-written. On a GPU each module executes on the GPU, the broadcast runs and its
    ``wait()`` is the synchronisation; on CPU this barrier restores it."""
    if not _distributed_on_cpu():
        yield
        return
    import torch.distributed as dist
    from llmcompressor.modifiers.gptq import GPTQModifier

    original = GPTQModifier.compress_modules

    def compress_modules(self: Any) -> None:
        original(self)
        dist.barrier()

    with _patched(GPTQModifier, "compress_modules", compress_modules):
        yield


@contextlib.contextmanager
def _smooth_once_on_cpu() -> Iterator[None]:
    """Distributed SmoothQuant with no accelerator: rank 0 alone applies each layer's smoothing, for the duration
    of one oneshot.

    llm-compressor 0.14's ``SmoothQuantModifier._apply_smoothing`` all-reduces the activation ranges, then every
    rank divides the norm weights and multiplies the following Linears' weights by the same scales, in place
    ("avoiding the need for a broadcast of the final weight tensors"). On a GPU each rank does that to its own
    onloaded copy and writes the same values back. On CPU the onloaded weights are the one copy in the shared
    memory every rank maps, so each rank applies the scales again to what another rank already scaled (measured:
    norm weights 0.73x off a single process). Here every rank takes part in the all-reduce, rank 0 alone scales,
    and the others drop their statistics as ``_apply_smoothing`` does and wait for it."""
    if not _distributed_on_cpu():
        yield
        return
    import torch.distributed as dist
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    original = SmoothQuantModifier._apply_smoothing

    def apply_smoothing(self: Any, model: Any) -> None:
        self._reduce_activation_scales()  # a collective: every rank
        if dist.get_rank() == 0:
            with _patched(SmoothQuantModifier, "_reduce_activation_scales", lambda self: None):
                original(self, model)
        else:
            self.scales_.clear()
        dist.barrier()

    with _patched(SmoothQuantModifier, "_apply_smoothing", apply_smoothing):
        yield


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

    with _patched(IntermediatesCache, "pin_memory", lambda self, *a, **k: None):
        yield
