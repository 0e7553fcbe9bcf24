"""NVIDIA ModelOpt backend: ``mtq.quantize`` + ``export_hf_checkpoint``, for the TensorRT-LLM / SGLang / vLLM
``modelopt`` checkpoint format.

Which ModelOpt config makes which scheme, and whether vLLM loads the export, is data in the scheme table
(``Scheme.modelopt``, a :class:`~quantkit.schemes.ModelOptRecipe`). This module adds the three things ModelOpt
does not do on its own:

- refuse, before any work, what the target cannot use: an export vLLM's ModelOpt loader rejects (unless the
  user said ``for_vllm=False``), a config that needs CUDA on a machine without it, an unsupported KV dtype;
- make ModelOpt's default disabled quantizers and quantkit's ignore list agree: quantkit's entries are
  appended to the config as ``enable: False`` entries (later entries win in ModelOpt's ``quant_cfg`` list),
  and modules ModelOpt's own defaults keep in 16-bit beyond quantkit's list are reported;
- untie tied embeddings before export when the checkpoint is for vLLM: vLLM <= 0.24 raises
  ``NotImplementedError`` in ``tie_weights`` on a ModelOpt checkpoint with ``tie_word_embeddings: true``
  (vllm#45543); an explicit 16-bit ``lm_head.weight`` with ``tie_word_embeddings: false`` loads everywhere.

ModelOpt and llm-compressor share one produce environment. ``nvidia-modelopt[hf]`` pins transformers < 5.15 while
llm-compressor 0.14 needs 5.15-5.17, so quantkit installs plain ``nvidia-modelopt`` and enforces the window it
tested (:data:`TESTED_VERSIONS`) before ModelOpt is imported: :func:`check_versions`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from quantkit.backends.base import Backend, BackendSupport, ProduceJob, ProduceResult, SupportQuery, register_backend
from quantkit.errors import BackendError, MissingDependencyError, UnsupportedSchemeError
from quantkit.schemes import SCHEMES, ModelOptRecipe, Scheme
from quantkit.vllm_facts import MODELOPT_KV_ALGOS, modelopt_algo_for, modelopt_method

log = logging.getLogger(__name__)

#: distribution -> (lowest, highest) version quantkit ran this backend with, inclusive, compared on
#: (major, minor, patch). transformers: ModelOpt 0.47's own floor is 4.57; 5.15-5.17 are what llm-compressor
#: 0.14 accepts and what tests/backends ran (ModelOpt warns "not tested" above 5.14, and works).
#: nvidia-modelopt: 0.47 is the first with the list-of-dicts ``quant_cfg`` this module edits.
TESTED_VERSIONS: dict[str, tuple[str, str]] = {
    "nvidia-modelopt": ("0.47.0", "0.47.99"),
    "transformers": ("4.57.0", "5.17.0"),
}
#: set to 1 to run outside :data:`TESTED_VERSIONS` (a warning instead of an error), e.g. to try a new release
ALLOW_UNTESTED_ENV = "QUANTKIT_MODELOPT_ALLOW_UNTESTED"

#: quantkit KV-cache dtype -> the ModelOpt config whose ``quant_cfg`` entries add it (k/v BMM quantizers)
KV_CONFIGS: dict[str, str | None] = {"auto": None, "fp8": "FP8_KV_CFG"}

_BATCH_NOTE_EVERY = 16


def _vtuple(text: str) -> tuple[int, int, int]:
    nums = [int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple((nums + [0, 0, 0])[:3])  # type: ignore[return-value]


def check_versions(installed: dict[str, str | None] | None = None) -> list[str]:
    """Compare the installed nvidia-modelopt and transformers with :data:`TESTED_VERSIONS`.

    Args:
        installed: distribution -> version (None: not installed); read from package metadata when omitted,
            without importing anything.

    Returns:
        The mismatches as sentences (empty when all is well, or when ``$QUANTKIT_MODELOPT_ALLOW_UNTESTED=1``
        turned them into warnings).

    Raises:
        MissingDependencyError: a version outside the tested window, naming both and the install line.
    """
    if installed is None:
        installed = {}
        for dist in TESTED_VERSIONS:
            try:
                installed[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                installed[dist] = None
    problems = []
    for dist, (low, high) in TESTED_VERSIONS.items():
        have = installed.get(dist)
        if have is None:
            continue  # a missing package is check_environment's error, with its own install line
        if not _vtuple(low) <= _vtuple(have) <= _vtuple(high):
            problems.append(f"{dist} {have} is outside the range quantkit's ModelOpt backend was tested with "
                            f"({low} to {high})")
    if not problems:
        return []
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        for p in problems:
            log.warning("%s; continuing because %s=1", p, ALLOW_UNTESTED_ENV)
        return problems
    raise MissingDependencyError(
        "; ".join(problems) + ". ModelOpt and llm-compressor share the produce environment and pin different "
        "transformers ranges (nvidia-modelopt[hf] wants < 5.15, llm-compressor 0.14 wants 5.15 to 5.17), so "
        "quantkit runs plain nvidia-modelopt on the transformers llm-compressor needs.",
        fix="pip install nvidia-modelopt==0.47.0 'transformers>=5.15,<=5.17.0' -c envs/constraints-cpu.txt "
            "(or scripts/setup_envs.sh produce); to try other versions anyway, set "
            f"{ALLOW_UNTESTED_ENV}=1.")


def import_modelopt() -> tuple[Any, Callable[..., Any]]:
    """Check versions, then import ``modelopt.torch.quantization`` and ``export_hf_checkpoint``.

    ModelOpt warns on import about transformers versions it did not test; quantkit checked the version it
    tested instead, so that one warning is silenced.
    """
    check_versions()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"transformers .* is not tested with current version of modelopt")
        import modelopt.torch.quantization as mtq
        from modelopt.torch.export import export_hf_checkpoint
    return mtq, export_hf_checkpoint


def loadable_algos() -> tuple[str, ...]:
    """The ModelOpt ``quant_algo`` values vLLM loads (the installed vLLM's registry, else the facts table)."""
    from quantkit.validation.vllm_registry import vllm_facts

    return tuple(sorted(vllm_facts().modelopt_algos))


def _refusal(scheme: Scheme, *, device: str, for_vllm: bool) -> tuple[str, str] | None:
    """Why ModelOpt cannot give a usable checkpoint of ``scheme`` here, with the fix; None when it can."""
    recipe = scheme.modelopt
    if recipe is None:
        with_mo = [s.name for s in SCHEMES.values() if s.modelopt is not None]
        return (f"ModelOpt has no recipe for {scheme.name} in quantkit.",
                f"Use backend='llmcompressor', or a scheme ModelOpt makes: {', '.join(with_mo)}.")
    algo = modelopt_algo_for(scheme.name)
    if for_vllm and algo not in loadable_algos():
        alt = (f"produce {scheme.name} with backend='llmcompressor' (compressed-tensors, which vLLM loads)"
               if scheme.llmcompressor else "pick a scheme whose ModelOpt export vLLM loads")
        return (f"ModelOpt's {recipe.config} exports quant_algo {algo}, which vLLM's ModelOpt loader rejects "
                f"(it loads {', '.join(loadable_algos())}).",
                f"To serve with vLLM, {alt}; if the checkpoint is for TensorRT-LLM or another runtime, pass "
                "for_vllm=False (CLI: --not-for-vllm).")
    if recipe.needs_cuda and device != "cuda":
        return (f"ModelOpt's {recipe.config} ({scheme.name}) needs a CUDA GPU to quantize, and this machine has "
                f"none. {recipe.note}".rstrip(),
                "Run quantize on a machine with a CUDA GPU"
                + (", or use backend='llmcompressor', which produces it on CPU." if scheme.llmcompressor else "."))
    return None


def check_request(scheme: Scheme, *, device: str, kv_cache: str = "auto", for_vllm: bool = True) -> None:
    """Refuse, before any model is touched, a ModelOpt job that cannot give the user a usable checkpoint.

    Raises:
        UnsupportedSchemeError: no ModelOpt recipe; an export vLLM rejects while ``for_vllm``; a recipe that
            needs CUDA on a machine without it; a KV dtype ModelOpt has no config for. The message names the
            alternative (the llm-compressor route, a GPU, ``for_vllm=False``).
    """
    refused = _refusal(scheme, device=device, for_vllm=for_vllm)
    if refused is not None:
        raise UnsupportedSchemeError(refused[0], fix=refused[1])
    if kv_cache not in KV_CONFIGS:
        raise UnsupportedSchemeError(f"ModelOpt has no KV-cache config for {kv_cache!r} in quantkit.",
                                     fix=f"Use kv_cache in {sorted(KV_CONFIGS)}.")


@register_backend("modelopt")
class ModelOptBackend(Backend):
    """Drives ``modelopt.torch.quantization.quantize`` and ``export_hf_checkpoint``."""

    requires = {"modelopt": "nvidia-modelopt==0.47.0", "transformers": "transformers>=5.15,<=5.17.0"}
    # ModelOpt's examples/llm_ptq/hf_ptq.py: --calib_size 512, --calib_seq 512
    calibration_recommendation = (512, 512, "ModelOpt's hf_ptq.py: 512 samples x 512 tokens")
    # mtq.quantize calibrates the whole model in one forward loop: it runs where the weights are, so a CUDA
    # machine loads the model onto its GPUs the way ModelOpt's examples/llm_ptq (example_utils.get_model) does
    gpu_placement = ("gpus", "ModelOpt calibrates the whole model at once, so it is loaded onto the GPUs present "
                             "(device_map='auto' spreads it over them; when it does not fit, each GPU is capped at "
                             "80 % for calibration and the rest stays in host RAM, as ModelOpt's hf_ptq does)")

    def can_produce(self, scheme: Scheme) -> bool:
        return scheme.modelopt is not None

    def supports(self, query: SupportQuery) -> BackendSupport:
        """ModelOpt can when it has a recipe, vLLM loads the export (unless ``for_vllm`` is off) and, for CUDA-only
        configs, a GPU is here. It is preferred for NVFP4 on FP4-native GPUs (NVIDIA's own path, also read by
        TensorRT-LLM and SGLang), except for tied-embedding models: their exports need untying for vLLM
        (vllm#45543), which compressed-tensors output does not."""
        sch = query.scheme
        refused = _refusal(sch, device=query.device, for_vllm=query.for_vllm)
        if refused is not None:
            return BackendSupport(False, refused[0])
        recipe = sch.modelopt
        assert recipe is not None  # _refusal returns a reason when there is no recipe
        algo = modelopt_algo_for(sch.name)
        loaded_as = f"loaded by vLLM as {modelopt_method(algo)}" if query.for_vllm else "not for vLLM"
        if query.tied_embeddings and query.for_vllm:
            return BackendSupport(True, f"producer ModelOpt ({recipe.config}) possible, but ModelOpt exports of "
                                        "tied-embedding models must be untied to load in vLLM (vllm#45543); "
                                        "compressed-tensors output loads as is", preference=0)
        if sch.weights.format == "nvfp4" and query.hardware.fp4_native:
            return BackendSupport(True, f"producer ModelOpt ({recipe.config}): NVIDIA's path for {sch.name} on "
                                        f"{query.hardware.name}, {loaded_as}", preference=2)
        return BackendSupport(True, f"producer ModelOpt ({recipe.config}), {loaded_as}", preference=0)

    def vllm_method(self, scheme: Scheme) -> str | None:
        """ModelOpt exports say ``quant_method: modelopt``; vLLM picks the config class from ``quant_algo``
        (the facts table), but the checkpoint itself declares ``modelopt``."""
        return "modelopt"

    def check_environment(self) -> None:
        super().check_environment()
        check_versions()

    def check_request(self, scheme: Scheme, *, device: str, kv_cache: str = "auto", for_vllm: bool = True) -> None:
        """What :meth:`check_job` checks, from the request alone: callable before the model is loaded."""
        check_request(scheme, device=device, kv_cache=kv_cache, for_vllm=for_vllm)

    def check_job(self, job: ProduceJob, *, device: str) -> None:
        self.check_request(job.scheme, device=device, kv_cache=job.kv_cache,
                           for_vllm=job.options.get("for_vllm", True))

    # ------------------------------------------------------------------------------------------ the recipe

    def quant_config(self, job: ProduceJob, mtq: Any = None) -> dict[str, Any]:
        """The ``mtq.quantize`` config for ``job``: the scheme's ModelOpt config, its weight block set to
        quantkit's group size where the recipe says so, the KV-cache config appended, then one ``enable: False``
        entry per module quantkit ignores (public so benchmarks can run the very same config raw)."""
        if mtq is None:
            mtq, _ = import_modelopt()
        recipe = _recipe(job.scheme)
        cfg = _named_config(mtq, recipe.config)
        entries = list(cfg["quant_cfg"])
        if recipe.group_size and job.group_size:
            entries = [_with_block(e, job.group_size) for e in entries]
        kv_name = KV_CONFIGS[job.kv_cache]
        if kv_name:
            entries += list(_named_config(mtq, kv_name)["quant_cfg"])
        entries += [{"quantizer_name": _glob_escape(name) + ".*", "enable": False}
                    for name in ignored_modules(job.model, job.ignore)]
        cfg["quant_cfg"] = entries
        return cfg

    def forward_loop(self, job: ProduceJob) -> Callable[[Any], None] | None:
        """Feed the calibration samples (the same tokenized data llm-compressor gets) one at a time; None when
        the job is data-free, which ModelOpt calibrates from the weights alone."""
        if not job.calibration:
            return None
        samples = job.calibration

        def loop(model: Any) -> None:
            import torch

            device = next(model.parameters()).device
            with torch.no_grad():
                for i, ids in enumerate(samples):
                    model(torch.tensor([list(ids)], dtype=torch.long, device=device))
                    if (i + 1) % _BATCH_NOTE_EVERY == 0:
                        log.info("calibration sample %d/%d", i + 1, len(samples))

        return loop

    # ------------------------------------------------------------------------------------------ produce

    def produce(self, job: ProduceJob, out_dir: Path) -> ProduceResult:
        mtq, export_hf_checkpoint = import_modelopt()
        recipe = _recipe(job.scheme)
        result = ProduceResult()
        cfg = self.quant_config(job, mtq)
        loop = self.forward_loop(job)
        log.info("ModelOpt %s for %s (%s)", recipe.config, job.scheme.name,
                 f"{len(job.calibration)} calibration samples" if loop else "data-free")
        t0 = time.perf_counter()
        with _translated(f"ModelOpt mtq.quantize with {recipe.config} failed on {job.scheme.name}"):
            mtq.quantize(job.model, cfg, loop)
        result.timings["quantize_s"] = time.perf_counter() - t0

        extra = sorted(set(unquantized_linears(job.model)) - set(ignored_modules(job.model, job.ignore)))
        if extra:
            result.notes.append(f"ModelOpt's default disabled quantizers also keep {len(extra)} module(s) in 16-bit "
                                f"beyond quantkit's ignore list: {', '.join(extra[:8])}"
                                + (" ..." if len(extra) > 8 else ""))
        if job.options.get("for_vllm", True) and untie_embeddings(job.model):
            result.notes.append("tied embeddings untied for vLLM: lm_head.weight stored in 16-bit with "
                                "tie_word_embeddings false (vLLM <= 0.24 fails on tied ModelOpt checkpoints, "
                                "vllm#45543)")

        t1 = time.perf_counter()
        with _translated(f"ModelOpt export_hf_checkpoint failed on {job.scheme.name}"):
            export_hf_checkpoint(job.model, export_dir=out_dir)
        job.tokenizer.save_pretrained(out_dir)
        result.timings["save_s"] = time.perf_counter() - t1
        _check_export(out_dir, recipe, job.kv_cache, job.scheme.name)
        return result


# ---------------------------------------------------------------------------------------------- helpers

def _recipe(scheme: Scheme) -> ModelOptRecipe:
    if scheme.modelopt is None:
        check_request(scheme, device="cuda", for_vllm=False)  # raises the explained "no recipe" error
    return scheme.modelopt  # type: ignore[return-value]


def _named_config(mtq: Any, name: str) -> dict[str, Any]:
    cfg = getattr(mtq, name, None)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("quant_cfg"), list):
        version = getattr(__import__("modelopt"), "__version__", "?")
        raise BackendError(f"nvidia-modelopt {version} has no config {name} in the list-of-dicts form quantkit "
                           "edits (the scheme table names it).",
                           fix=f"Install nvidia-modelopt {TESTED_VERSIONS['nvidia-modelopt'][0]}.")
    return copy.deepcopy(cfg)


def _with_block(entry: dict[str, Any], group_size: int) -> dict[str, Any]:
    """Set the last-dimension block of a weight quantizer entry to quantkit's group size.

    ModelOpt's INT4 configs use 128, which cannot pack a layer whose input features are not a multiple of it
    (SmolLM2's 576: "partial blocks are not supported"); quantkit picks the largest group that divides every
    quantized layer, the same one llm-compressor uses.
    """
    cfg = entry.get("cfg")
    if not str(entry.get("quantizer_name", "")).endswith("weight_quantizer") or not isinstance(cfg, dict):
        return entry
    blocks = cfg.get("block_sizes")
    if not isinstance(blocks, dict) or not isinstance(blocks.get(-1), int):
        return entry
    return {**entry, "cfg": {**cfg, "block_sizes": {**blocks, -1: group_size}}}


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _linear_names(model: Any) -> list[str]:
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def ignored_modules(model: Any, ignore: tuple[str, ...] | list[str]) -> list[str]:
    """The model's linear modules covered by quantkit's ignore list (exact names and ``re:`` patterns)."""
    from quantkit.planning.ignore import ignore_matcher

    matcher = ignore_matcher(ignore)
    return [n for n in _linear_names(model) if matcher(n)]


def unquantized_linears(model: Any) -> list[str]:
    """Linear modules ModelOpt left in 16-bit: no enabled weight quantizer after ``mtq.quantize``."""
    import torch

    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            wq = getattr(module, "weight_quantizer", None)
            if wq is None or not getattr(wq, "is_enabled", False):
                out.append(name)
    return out


def untie_embeddings(model: Any) -> bool:
    """Give the output projection its own copy of the tied input embedding; True if there was a tie.

    The copy stays in the model's dtype (lm_head is never quantized); the config says
    ``tie_word_embeddings: false`` and transformers' tie map forgets the pair, so neither ModelOpt's export
    dedup nor ``save_pretrained`` drops ``lm_head.weight``.
    """
    import torch

    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None or getattr(out, "weight", None) is None:
        return False
    configs = {id(c): c for c in (model.config, model.config.get_text_config())}.values()
    declared = any(getattr(c, "tie_word_embeddings", False) for c in configs)
    shared = out.weight is inp.weight or out.weight.data_ptr() == inp.weight.data_ptr()
    if not (declared or shared):
        return False
    if shared:  # a tie declared in the config but not in memory keeps the lm_head it has
        out.weight = torch.nn.Parameter(inp.weight.detach().clone(), requires_grad=False)
    for c in configs:
        c.tie_word_embeddings = False
    head = next(n for n, m in model.named_modules() if m is out)
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop(f"{head}.weight", None)
    return True


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map a ModelOpt exception to a BackendError that says what to do, keeping it as ``__cause__``."""
    try:
        yield
    except MissingDependencyError:
        raise
    except Exception as exc:  # the boundary: everything ModelOpt raises
        text = f"{type(exc).__name__}: {exc}"
        if "must be a CUDA tensor" in text or ("CUDA" in text and "not available" in text):
            fix = "This ModelOpt path needs a CUDA GPU: run quantize on a GPU machine, or use backend='llmcompressor'."
        elif "partial blocks" in text:
            fix = "Pass a group_size that divides every quantized layer's input features, or ignore the odd layers."
        else:
            fix = "See the chained exception; check the scheme suits this model (`quantkit schemes`)."
        raise BackendError(f"{what}: {text}", fix=fix) from exc


def _check_export(out_dir: Path, recipe: ModelOptRecipe, kv_cache: str, scheme_name: str) -> None:
    """The export says what the table promised: the quant_algo vLLM dispatches on, and the KV algo."""
    side = out_dir / "hf_quant_config.json"
    if not side.is_file():
        raise BackendError(f"ModelOpt wrote no hf_quant_config.json in {out_dir}: nothing quantized?",
                           fix="Check that the model has nn.Linear layers outside the ignore list.")
    quant = json.loads(side.read_text()).get("quantization") or {}
    algo = str(quant.get("quant_algo") or "").upper()
    expected = modelopt_algo_for(scheme_name)
    if algo != expected:
        raise BackendError(f"ModelOpt's {recipe.config} exported quant_algo {algo or None!r}, but quantkit's facts "
                           f"table says {expected!r}: the table is out of date for this ModelOpt version.",
                           fix=f"Install nvidia-modelopt {TESTED_VERSIONS['nvidia-modelopt'][0]}, or update "
                               "MODELOPT_ALGOS in quantkit/vllm_facts.py.")
    kv = quant.get("kv_cache_quant_algo")
    if MODELOPT_KV_ALGOS.get(kv_cache) != (str(kv).upper() if kv else None):
        raise BackendError(f"kv_cache={kv_cache!r} was asked for but the export has kv_cache_quant_algo {kv!r}.",
                           fix="The model's attention may not be one ModelOpt instruments for KV quantization.")

