"""Rules about the quantization config itself: method, ModelOpt algorithm, sidecar, sources, schemes, ties."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantkit.schemes import SCHEMES
from quantkit.validation.checks import check
from quantkit.validation.context import Context
from quantkit.validation.qconfig import Source, modelopt_algo, sources
from quantkit.validation.vllm_registry import parse_version
from quantkit.vllm_facts import (
    MODELOPT_ALGOS,
    MODELOPT_KV_ALGOS,
    scheme_for_modelopt_algo,
)

#: which ModelOpt config class (vLLM method) accepts which quant_algo (the facts table)
MODELOPT_OWNER = {a: m.method for a, m in MODELOPT_ALGOS.items() if m.method and m.loads}
#: vLLM releases that fail on a ModelOpt checkpoint with tied embeddings (vllm#45543, fixed by PR #45544)
TIED_MODELOPT_LAST_BROKEN = (0, 24)
NVFP4_SIDECAR_FIELDS = ("group_size", "kv_cache_quant_algo", "exclude_modules")


def _listing(names: list[str] | tuple[str, ...], limit: int = 40) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@check("quant-method-known")
def quant_method_known(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None or not isinstance(spec.source.data, Mapping):
        return  # quant-config-source reports a missing or malformed config
    if spec.method is None:
        ctx.findings.add("quant-method-known",
                         f"{spec.source.where} has no quant_method: vLLM does not recognise it as a quantization "
                         "config and loads the weights as 16-bit.",
                         fix="Add the producer's quant_method (\"compressed-tensors\" for llm-compressor, "
                             "\"modelopt\" for ModelOpt) or re-export the checkpoint.")
        return
    method = spec.vllm_method or ""
    facts = ctx.facts
    if method not in facts.methods:
        ctx.findings.add("quant-method-known",
                         f"quant_method {spec.method!r} is not a quantization method vLLM {facts.version} knows "
                         f"(from {facts.source}). Known: {_listing(sorted(facts.methods))}.")
    elif method in facts.deprecated:
        ctx.findings.add("quant-method-known",
                         f"quant_method {method!r} is deprecated in vLLM {facts.version}: it loads only with "
                         "--allow-deprecated-quantization and will be removed.", severity="warning",
                         fix="Re-export with llm-compressor (compressed-tensors) or ModelOpt.")


@check("modelopt-algo-loadable")
def modelopt_algo_loadable(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None:
        return
    for problem in spec.problems:
        if problem.startswith("vLLM's legacy ModelOpt"):
            ctx.findings.add("modelopt-algo-loadable", problem + ".")
    if spec.style != "modelopt":
        return
    algo = spec.modelopt_algo
    allowed = ctx.facts.modelopt_algos
    if not algo:
        ctx.findings.add("modelopt-algo-loadable",
                         f"{spec.source.where} declares a ModelOpt checkpoint without quant_algo: vLLM raises "
                         f"`Missing 'quant_algo'`. vLLM loads: {', '.join(allowed)}.")
        return
    if algo not in allowed:
        made_by = [s for s in SCHEMES.values() if s.modelopt is not None and s.name == scheme_for_modelopt_algo(algo)]
        hint = ""
        if made_by:
            s = made_by[0]
            hint = (f" This is what ModelOpt's {s.modelopt.config} exports (quantkit scheme {s.name}); "  # type: ignore[union-attr]
                    + (f"produce {s.name} with llm-compressor instead." if s.llmcompressor else ""))
        ctx.findings.add("modelopt-algo-loadable",
                         f"ModelOpt quant_algo {algo!r} is rejected by vLLM {ctx.facts.version}'s ModelOpt loader "
                         f"(it loads {', '.join(allowed)}).{hint}")
        return
    owner = MODELOPT_OWNER.get(algo)
    if owner and spec.vllm_method and spec.vllm_method != owner and spec.vllm_method.startswith("modelopt"):
        ctx.findings.add("modelopt-algo-loadable",
                         f"quant_method {spec.method!r} with quant_algo {algo!r}: vLLM's {spec.vllm_method} config "
                         f"refuses it (`Unsupported ModelOpt quant_algo`); {algo} belongs to {owner}.",
                         fix=f"Set quant_method to \"modelopt\" (vLLM picks {owner} from quant_algo).")


@check("nvfp4-sidecar-fields")
def nvfp4_sidecar_fields(ctx: Context) -> None:
    side = ctx.view.hf_quant_config
    for src in sources(ctx.config, side):
        data = src.data
        quant = data.get("quantization") if isinstance(data, Mapping) else None
        if not isinstance(quant, Mapping):
            continue
        algo = str(quant.get("quant_algo") or "").upper()
        entry = MODELOPT_ALGOS.get(algo)
        if entry is None or entry.layout != "mo-nvfp4":
            continue
        missing = [f for f in NVFP4_SIDECAR_FIELDS if f not in quant]
        if not missing:
            continue
        read_by_vllm = ctx.spec is not None and ctx.spec.source.where == src.where
        ctx.findings.add(
            "nvfp4-sidecar-fields",
            f"{src.where} declares {algo} but its 'quantization' block lacks {', '.join(missing)}: "
            + ("vLLM raises `NVFP4 quantization requires the following fields in hf_quant_config.json`."
               if read_by_vllm else
               "vLLM reads config.json instead, but TensorRT-LLM, SGLang and older vLLM read this file."),
            severity="error" if read_by_vllm else "warning")


def _norm_modelopt(data: Mapping[str, Any]) -> dict[str, Any]:
    quant = data.get("quantization") if isinstance(data.get("quantization"), Mapping) else data
    excl = quant.get("exclude_modules", quant.get("ignore", data.get("ignore")))
    kv = quant.get("kv_cache_quant_algo")
    if kv is None and isinstance(data.get("kv_cache_scheme"), Mapping):
        kv = MODELOPT_KV_ALGOS["fp8"] if data["kv_cache_scheme"].get("num_bits") == 8 else "?"
    return {"quant_algo": modelopt_algo(data),
            "exclude": sorted(map(str, excl)) if isinstance(excl, list) else excl,
            "kv": str(kv).upper() if kv else None,
            "group_size": quant.get("group_size")}


def _disagreement(a: Source, b: Source) -> str | None:
    da, db = a.data, b.data
    if not isinstance(da, Mapping) or not isinstance(db, Mapping):
        return None
    mo_a = "quantization" in da or str(da.get("quant_method", "")).startswith("modelopt")
    mo_b = "quantization" in db or str(db.get("quant_method", "")).startswith("modelopt")
    if mo_a != mo_b:
        return (f"{a.where} is {da.get('quant_method') or 'not ModelOpt'} but {b.where} is a ModelOpt config")
    if mo_a:
        na, nb = _norm_modelopt(da), _norm_modelopt(db)
        diffs = [f"{k}: {na[k]!r} vs {nb[k]!r}" for k in na
                 if na[k] != nb[k] and not (k == "group_size" and (na[k] is None or nb[k] is None))]
        return "; ".join(diffs) or None
    if dict(da) != dict(db):
        keys = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
        return f"they differ in {', '.join(map(str, keys[:8]))}"
    return None


@check("quant-config-source")
def quant_config_source(ctx: Context) -> None:
    found = sources(ctx.config, ctx.view.hf_quant_config)
    if not found:
        stored = ctx.layout.quantized
        if stored:
            ctx.findings.add("quant-config-source",
                             f"No quantization config (config.json quantization_config or hf_quant_config.json), "
                             f"yet {len(stored)} modules are stored quantized (e.g. {stored[0]}): vLLM would load "
                             "packed or FP8 weights as 16-bit and fail or serve garbage.")
        else:
            ctx.findings.add("quant-config-source",
                             "No quantization config and no quantized tensors: this is a 16-bit checkpoint, not a "
                             "quantized one.",
                             fix="Quantize it first (`quantkit quantize`), or point at the quantized output.")
        return
    for src in found:
        if not isinstance(src.data, Mapping):
            ctx.findings.add("quant-config-source",
                             f"{src.where} is a JSON {type(src.data).__name__}, not an object: vLLM cannot read it.")
    first = found[0]
    for other in found[1:]:
        why = _disagreement(first, other)
        if why:
            ctx.findings.add("quant-config-source",
                             f"{first.where} and {other.where} disagree ({why}): vLLM uses {first.where}, other "
                             "runtimes the other one, so they serve different models.",
                             fix=f"Make {other.where} match {first.where}, or delete it.")


@check("scheme-resolves")
def scheme_resolves(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None:
        return
    for problem in spec.problems:
        if not problem.startswith("vLLM's legacy ModelOpt"):
            ctx.findings.add("scheme-resolves", f"{spec.source.where}: {problem}.")
    if spec.style == "ct" and not spec.groups and ctx.layout.quantized:
        ctx.findings.add("scheme-resolves",
                         "The compressed-tensors config has no config_groups, so vLLM quantizes no layer, yet "
                         f"{len(ctx.layout.quantized)} modules are stored quantized.")
    for name, res in ctx.resolved.items():
        if isinstance(res, str):
            ctx.findings.add("scheme-resolves", f"config group {name!r}: {res}.",
                             problem=f"group-{name}")
    if spec.style == "ct" and spec.kv_scheme is not None:
        kv = spec.kv_scheme
        why = []
        if kv.get("type") != "float" or kv.get("num_bits") != 8:
            why.append(f"vLLM supports num_bits=8, type=float only (got num_bits={kv.get('num_bits')!r}, "
                       f"type={kv.get('type')!r})")
        if kv.get("strategy") not in ("tensor", "attn_head"):
            why.append(f"strategy must be 'tensor' or 'attn_head' (got {kv.get('strategy')!r})")
        if kv.get("symmetric") is not True:
            why.append(f"only symmetric KV scales are supported (got symmetric={kv.get('symmetric')!r})")
        if why:
            ctx.findings.add("scheme-resolves", "kv_cache_scheme is not one vLLM implements: " + "; ".join(why) + ".",
                             fix="Use kv_cache_scheme {num_bits: 8, type: float, strategy: tensor, symmetric: true}.")


@check("tied-embeddings-modelopt")
def tied_embeddings_modelopt(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None or not (spec.vllm_method or "").startswith("modelopt") or not ctx.tied_embeddings:
        return
    t = ctx.target
    version = parse_version(t.vllm_version)
    affected = bool(version) and version[:2] <= TIED_MODELOPT_LAST_BROKEN
    if affected:
        ctx.findings.add("tied-embeddings-modelopt",
                         f"ModelOpt checkpoint with tie_word_embeddings: true: vLLM {t.vllm_version} "
                         f"({t.vllm_version_source}) raises NotImplementedError in tie_weights (vllm#45543, fixed "
                         "after 0.24 by PR #45544).", module="lm_head")
    elif t.vllm_version_source == "newest known":
        ctx.findings.add("tied-embeddings-modelopt",
                         f"ModelOpt checkpoint with tie_word_embeddings: true: fine on vLLM {t.vllm_version} (the "
                         "newest quantkit knows), but vLLM <= 0.24 fails to load it (vllm#45543). Pass "
                         "--vllm-version to check the version you serve with.", module="lm_head", severity="warning")
