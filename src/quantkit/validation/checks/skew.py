"""Version skew: the config was written by a newer producer than the reader the target vLLM runs.

compressed-tensors: vLLM's ``CompressedTensorsConfig._quantization_scheme_map_from_config``
(``vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py``) calls
``QuantizationArgs.model_validate`` on every config group's ``weights``, ``input_activations`` and (when set)
``output_activations``, and ``TransformConfig.model_validate`` on a non-empty ``transform_config``; those models
are ``extra="forbid"`` and their enum fields raise on a value they do not know, so one field a newer
compressed-tensors writes fails the whole load (llm-compressor#2057, #2234: ``scale_dtype  Extra inputs are not
permitted``). Everything else -- the top level (``QuantizationConfig`` is ``extra="ignore"`` and vLLM reads it by
key), a group's other keys, ``kv_cache_scheme`` -- vLLM reads by key and silently drops what it does not know;
that is a warning, or an error where the dropped key changes what the tensors mean (``moe_sparsity_config``).

ModelOpt: vLLM maps ``kv_cache_quant_algo`` through ``MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP``
(``vllm/utils/torch_utils.py`` ``get_kv_cache_quant_algo_string``) and falls back to a 16-bit KV cache for any
other value; a ``MIXED_PRECISION`` layer whose ``quant_algo`` is not in ``LINEAR_ALGOS`` gets
``UnquantizedLinearMethod`` (``modelopt.py`` ``ModelOptMixedPrecisionConfig.get_quant_method``). The top-level
``quant_algo`` is rule ``modelopt-algo-loadable``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from quantkit.validation.checks import check
from quantkit.validation.context import Context
from quantkit.validation.ct_schema import reader_schema
from quantkit.validation.vllm_registry import parse_version
from quantkit.vllm_facts import (
    COMPRESSED_TENSORS_SCHEMAS,
    CT_ACTORDER_STRATEGIES,
    CT_EXTRA_TOP_LEVEL_KEYS,
    CT_SEMANTIC_TOP_LEVEL_KEYS,
    LLMCOMPRESSOR_COMPRESSED_TENSORS_PINS,
    MODELOPT_KV_ALGOS_READ,
    MODELOPT_MIXED_ALGO,
    VLLM_COMPRESSED_TENSORS_PINS,
    CtModelSchema,
    CtSchema,
    modelopt_kv_algo_read,
)

RULE = "config-schema-known"
ARGS_PARTS = ("weights", "input_activations", "output_activations")


def _where(locations: list[str]) -> str:
    return ", ".join(locations[:4]) + (f" and {len(locations) - 4} more" if len(locations) > 4 else "")


def _pins_for(ct_version: str) -> str:
    """Which llm-compressor / vLLM releases pair with ``ct_version`` (for the fix text)."""
    minor = parse_version(ct_version)[:2]
    lc = [v for v, ct in LLMCOMPRESSOR_COMPRESSED_TENSORS_PINS.items() if parse_version(ct)[:2] == minor]
    if lc:
        return f"llm-compressor {', '.join(lc)} pins compressed-tensors {'.'.join(map(str, minor))}.x"
    return f"llm-compressor with `pip install compressed-tensors=={ct_version}` forced beside it"


def _readers_that_accept(accepts: Callable[[CtSchema], bool]) -> str:
    """The known vLLM releases whose pinned compressed-tensors accepts it (for the fix text)."""
    ok = [v for v, ct in VLLM_COMPRESSED_TENSORS_PINS.items() if accepts(COMPRESSED_TENSORS_SCHEMAS[ct])]
    if not ok:
        return "a vLLM whose compressed-tensors reads it (no release quantkit knows does yet)"
    first = min(ok, key=parse_version)
    return f"vLLM {first} or newer (compressed-tensors {VLLM_COMPRESSED_TENSORS_PINS[first]})"


def _fix(schema: CtSchema, drop: str, accepts: Callable[[CtSchema], bool]) -> str:
    return (f"Re-export with compressed-tensors {schema.version}, the reader's version ({_pins_for(schema.version)}), "
            f"or serve with {_readers_that_accept(accepts)}; or {drop}.")


def _check_args(args: Mapping[str, Any], model: CtModelSchema, where: str,
                unknown: dict[str, list[str]], bad: dict[tuple[str, str], list[str]]) -> None:
    for key, value in args.items():
        if key not in model.fields:
            unknown.setdefault(key, []).append(where)
            continue
        allowed = model.enums.get(key)
        if allowed is None or value is None:
            continue
        if isinstance(value, bool):
            if key not in model.bool_ok:
                bad.setdefault((key, repr(value)), []).append(where)
        elif not isinstance(value, str) or value.lower() not in allowed:
            bad.setdefault((key, repr(value)), []).append(where)


def _check_ct(ctx: Context, data: Mapping[str, Any], where: str) -> None:
    t = ctx.target
    schema = reader_schema(t.vllm_version, t.vllm_version_source)
    writer = data.get("version") if isinstance(data.get("version"), str) else None
    reader = f"compressed-tensors {schema.version}, which vLLM {t.vllm_version} reads it with ({schema.source})"
    wrote = f"written by compressed-tensors {writer}" if writer else "without a `version` field"
    args_model = schema.models["QuantizationArgs"]
    scheme_model = schema.models["QuantizationScheme"]
    config_model = schema.models["QuantizationConfig"]

    # QuantizationArgs: validated by vLLM with extra="forbid" -> errors
    unknown: dict[str, list[str]] = {}
    bad: dict[tuple[str, str], list[str]] = {}
    group_extra: dict[str, list[str]] = {}
    bad_format: dict[str, list[str]] = {}
    actorder_bad: dict[tuple[str, str], list[str]] = {}
    groups = data.get("config_groups")
    for name, group in (groups.items() if isinstance(groups, Mapping) else ()):
        if not isinstance(group, Mapping):
            continue
        for key in group:
            if key not in scheme_model.fields:
                group_extra.setdefault(key, []).append(f"config_groups.{name}")
        for part in ARGS_PARTS:
            args = group.get(part)
            if isinstance(args, Mapping) and args:
                _check_args(args, args_model, f"config_groups.{name}.{part}", unknown, bad)
        weights = group.get("weights")
        if isinstance(weights, Mapping) and schema.version in CT_ACTORDER_STRATEGIES:
            constrained, strategies = CT_ACTORDER_STRATEGIES[schema.version]
            order, strategy = weights.get("actorder"), weights.get("strategy")
            key = "true" if order is True else (order.lower() if isinstance(order, str) else None)
            if key in constrained and str(strategy).lower() not in strategies:
                actorder_bad.setdefault((repr(order), str(strategy)), []).append(f"config_groups.{name}.weights")
        fmt = group.get("format")
        if isinstance(fmt, str) and fmt not in schema.formats:
            bad_format.setdefault(fmt, []).append(f"config_groups.{name}.format")
    # the global format only counts for groups without their own (``is_activation_quantization_format``)
    fmt = data.get("format")
    if (isinstance(fmt, str) and fmt not in schema.formats and isinstance(groups, Mapping)
            and any(isinstance(g, Mapping) and not g.get("format") for g in groups.values())):
        bad_format.setdefault(fmt, []).append("format")

    for key, locations in unknown.items():
        ctx.findings.add(
            RULE, f"{where} ({wrote}) has `{key}` in {_where(locations)}: {reader} does not know that field, and "
                  f"vLLM validates each config group's args with its QuantizationArgs (extra='forbid'), so loading "
                  f"fails with `{key}  Extra inputs are not permitted` (llm-compressor#2057).",
            fix=_fix(schema, f"delete `{key}` from those entries of config.json where it is null (its default); "
                             "a non-null value needs a reader that knows it",
                     lambda s, k=key: k in s.models["QuantizationArgs"].fields),
            problem=f"args-field-{key}")
    for (key, value), locations in bad.items():
        allowed = ", ".join(args_model.enums.get(key, ()))
        ctx.findings.add(
            RULE, f"{where} ({wrote}) sets {key}={value} in {_where(locations)}: {reader} accepts {allowed}"
                  f"{' or a bool' if key in args_model.bool_ok else ''} there, so QuantizationArgs.model_validate "
                  "raises and vLLM does not load the checkpoint.",
            fix=_fix(schema, f"choose a {key} the reader knows and re-quantize",
                     lambda s, k=key, v=value: v.strip("'").lower() in s.models["QuantizationArgs"].enums.get(k, ())),
            problem=f"args-value-{key}-{value}")
    for (order, strategy), locations in actorder_bad.items():
        allowed_strategies = " or ".join(CT_ACTORDER_STRATEGIES[schema.version][1])
        ctx.findings.add(
            RULE, f"{where} ({wrote}) sets actorder={order} with strategy {strategy!r} in {_where(locations)}: "
                  f"{reader} allows that ordering only with strategy {allowed_strategies}, "
                  "so QuantizationArgs.model_validate raises `Must use group quantization strategy in order to apply "
                  "activation ordering` and vLLM does not load the checkpoint (llm-compressor#2805).",
            fix=_fix(schema, "set `actorder` to null there (GPTQModifier(actorder=None)); a weight/static ordering "
                             "only changed the calibration order, so the stored weights stay valid",
                     lambda s, o=order, st=strategy: s.version in CT_ACTORDER_STRATEGIES and not (
                         ("true" if o == "True" else o.strip("'").lower()) in CT_ACTORDER_STRATEGIES[s.version][0]
                         and st.lower() not in CT_ACTORDER_STRATEGIES[s.version][1])),
            problem=f"actorder-{order}-{strategy}")
    for value, locations in bad_format.items():
        ctx.findings.add(
            RULE, f"{where} ({wrote}) uses format {value!r} in {_where(locations)}: it is not a CompressionFormat "
                  f"of {reader} ({', '.join(schema.formats)}); vLLM raises `No compressed-tensors compatible scheme "
                  "was found` for those layers (checked for compressed-tensors 0.20's mxfp6-pack-quantized on "
                  "vLLM 0.32).",
            fix=_fix(schema, "produce a format the reader knows", lambda s, v=value: v in s.formats),
            problem=f"format-{value}")

    # transform_config: TransformConfig.model_validate (extra="forbid") when non-empty -> errors
    transform = data.get("transform_config")
    tc_model, ts_model = schema.models.get("TransformConfig"), schema.models.get("TransformScheme")
    if isinstance(transform, Mapping) and transform and tc_model is not None and ts_model is not None:
        extra = [f"transform_config.{k}" for k in transform if k not in tc_model.fields]
        tgroups = transform.get("config_groups")
        for name, scheme in (tgroups.items() if isinstance(tgroups, Mapping) else ()):
            if isinstance(scheme, Mapping):
                extra += [f"transform_config.config_groups.{name}.{k}" for k in scheme if k not in ts_model.fields]
        if extra:
            ctx.findings.add(
                RULE, f"{where} ({wrote}) has {_where(extra)}, unknown to {reader}: vLLM validates transform_config "
                      "with TransformConfig (extra='forbid') and fails to load.",
                fix=_fix(schema, "apply the transforms with the reader's compressed-tensors", lambda s: False),
                problem="transform-fields")

    # top level and the rest of a group: read by key, unknown keys dropped -> warning, or error when they matter
    for key, value in data.items():
        if key in config_model.fields or key in CT_EXTRA_TOP_LEVEL_KEYS:
            continue
        semantic = CT_SEMANTIC_TOP_LEVEL_KEYS.get(key)
        if semantic is not None and value not in (None, {}, []):
            added, effect = semantic
            ctx.findings.add(
                RULE, f"{where} ({wrote}) has `{key}` (added in compressed-tensors {added}), which {reader} does not "
                      f"know: QuantizationConfig ignores unknown keys and vLLM's CompressedTensorsConfig.from_config "
                      f"never reads it, yet it is {effect}.",
                fix=_fix(schema, f"rebuild the checkpoint without what `{key}` describes",
                         lambda s, k=key: k in s.models["QuantizationConfig"].fields),
                problem=f"top-{key}")
        elif semantic is None:
            ctx.findings.add(
                RULE, f"{where} ({wrote}) has `{key}`, which {reader} does not know: vLLM reads the config by key and "
                      "ignores it (QuantizationConfig is extra='ignore'). Check that it does not change what the "
                      "tensors mean.", severity="warning",
                fix=_fix(schema, f"drop `{key}` if it is informational",
                         lambda s, k=key: k in s.models["QuantizationConfig"].fields), problem=f"top-{key}")
    for key, locations in group_extra.items():
        ctx.findings.add(
            RULE, f"{where} ({wrote}) has `{key}` in {_where(locations)}, which {reader}'s QuantizationScheme does not "
                  "know: vLLM reads a group's targets/weights/input_activations/output_activations/format by key and "
                  "ignores it, but compressed-tensors' own loader (transformers) rejects it (extra='forbid').",
            severity="warning", problem=f"group-{key}",
            fix=_fix(schema, f"drop `{key}` from those groups",
                     lambda s, k=key: k in s.models["QuantizationScheme"].fields))
    kv = data.get("kv_cache_scheme")
    if isinstance(kv, Mapping):
        kv_unknown = [k for k in kv if k not in args_model.fields]
        if kv_unknown:
            ctx.findings.add(
                RULE, f"{where} ({wrote}) has {', '.join(f'`{k}`' for k in kv_unknown)} in kv_cache_scheme, unknown "
                      f"to {reader}: vLLM reads kv_cache_scheme by key and ignores them.", severity="warning",
                fix=_fix(schema, "drop them if they are informational",
                         lambda s: all(k in s.models["QuantizationArgs"].fields for k in kv_unknown)),
                problem="kv-fields")


def _kv_string(data: Mapping[str, Any]) -> Any:
    """What ``get_kv_cache_quant_algo_string`` reads (sidecar ``quantization`` block or config.json style)."""
    inner = data.get("quantization") if isinstance(data.get("quantization"), Mapping) else data
    return (inner.get("kv_cache_scheme") or data.get("kv_cache_scheme") or inner.get("kv_cache_quant_algo")
            or data.get("kv_cache_quant_algo"))


def _check_modelopt(ctx: Context, data: Mapping[str, Any], where: str) -> None:
    t = ctx.target
    producer = data.get("producer") if isinstance(data.get("producer"), Mapping) else {}
    version = producer.get("version")
    wrote = f"written by ModelOpt {version}" if version else "with no producer.version"
    kv = modelopt_kv_algo_read(_kv_string(data))
    if isinstance(kv, Mapping):
        kv = f"kv_cache_scheme {dict(kv)}"
    if isinstance(kv, str) and kv.upper() not in MODELOPT_KV_ALGOS_READ:
        ctx.findings.add(
            RULE, f"{where} ({wrote}) declares KV-cache quantization {kv!r}, which vLLM {t.vllm_version} does not "
                  f"map (it maps {', '.join(MODELOPT_KV_ALGOS_READ)}): get_kv_cache_quant_algo_string warns and "
                  "falls back to `auto`, a 16-bit KV cache, so the KV scales are unused and the KV memory is twice "
                  "or four times what the export planned.", severity="warning",
            fix="Export the KV cache with ModelOpt's FP8_KV_CFG (FP8 is what every vLLM reads), or serve knowing the "
                "KV cache is 16-bit.", problem="mo-kv")
    quant = data.get("quantization") if isinstance(data.get("quantization"), Mapping) else data
    layers = quant.get("quantized_layers")
    if isinstance(layers, Mapping):
        loads = set(ctx.facts.modelopt_algos) - {MODELOPT_MIXED_ALGO}
        odd: dict[str, list[str]] = {}
        for prefix, info in layers.items():
            algo = str(info.get("quant_algo", "")).upper() if isinstance(info, Mapping) else ""
            if algo not in loads:
                odd.setdefault(algo or "(none)", []).append(str(prefix))
        for algo, prefixes in odd.items():
            ctx.findings.add_grouped(
                RULE, prefixes,
                f"{where} ({wrote}) quantizes this layer with quant_algo {algo!r}, which vLLM {t.vllm_version}'s "
                f"MIXED_PRECISION loader does not know (it knows {', '.join(sorted(loads))}): it builds the layer "
                "unquantized (UnquantizedLinearMethod), so its quantized tensors fail to load or are read as 16-bit.",
                fix=f"Export those layers with an algorithm vLLM {t.vllm_version} loads, or serve with a vLLM that "
                    f"reads {algo}.", problem=f"mo-layer-{algo}")


@check(RULE)
def config_schema_known(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None or not isinstance(spec.source.data, Mapping):
        return
    method = spec.vllm_method or ""
    if method == "compressed-tensors":
        _check_ct(ctx, spec.source.data, spec.source.where)
    elif method.startswith("modelopt"):
        _check_modelopt(ctx, spec.source.data, spec.source.where)
