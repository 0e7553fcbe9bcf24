"""Rules about names: patterns, ignore entries, fused shards, layers that stay 16-bit, config vs disk."""

from __future__ import annotations

import re
from collections import defaultdict
from fnmatch import fnmatchcase

from quantkit.planning.architectures import mtp_layer_indices
from quantkit.planning.ignore import FUSED_MODULES, IGNORE_RULES, ROUTER_RULES
from quantkit.validation.checks import check
from quantkit.validation.context import Context
from quantkit.validation.matching import compile_pattern, pattern_problem
from quantkit.validation.report import wildcard

#: ignore rules whose every match must stay 16-bit; for the broad hybrid rules only these leaves are errors
#: (the rest of a linear-attention / Mamba block is quantkit's preference, reported as a warning)
_HYBRID_RULES = {"linear-attn": {"conv1d", "in_proj_a", "in_proj_b", "in_proj_ba"},
                 "mamba-mixer": {"conv1d"}}
#: ignore rules whose layers vLLM loads only for speculative decoding, with the model's quantization config
#: (qwen3_next_mtp.py Qwen3NextMultiTokenPredictor, deepseek_mtp.py DeepSeekMTP): quantized MTP weights load,
#: so storing them quantized is quantkit's preference (a warning), not a vLLM failure
_WARNING_RULES = {"mtp"}
#: where vLLM skips MTP weights when it loads the main model
_MTP_SKIPPED = ("vllm/model_executor/models/deepseek_v2.py (DeepseekV2ForCausalLM.load_weights skips "
                "get_spec_layer_idx_from_weight_name layers) and qwen3_next.py (Qwen3NextModel.load_weights "
                "skips mtp.*)")
_MTP_PREFIX = re.compile(r"^(model\.)?(language_model\.)?mtp\.")
_SHARD_TO_FUSED = {shard: fused for fused, shards in FUSED_MODULES.items() for shard in shards if shard != fused}


def _patterns(ctx: Context) -> list[tuple[str, str]]:
    """(where, entry) for every name pattern in a compressed-tensors config."""
    spec = ctx.spec
    if spec is None or spec.style != "ct":
        return []
    out = [(spec.ignore_key, e) for e in spec.ignore]
    for g in spec.groups:
        out += [(f"config_groups.{g.name}.targets", t) for t in g.targets]
    return out


@check("pattern-valid")
def pattern_valid(ctx: Context) -> None:
    names = ctx.layout.match_names
    for where, entry in _patterns(ctx):
        if not entry.startswith("re:"):
            continue
        problem = pattern_problem(entry)
        if problem is not None:
            ctx.findings.add("pattern-valid", f"{where} entry {entry!r} is {problem}.", problem=problem[:20])
            continue
        pat = compile_pattern(entry)
        if pat is None:
            continue
        unanchored = entry[3:].startswith((".*", "^"))
        if unanchored:  # only whether it matches anything matters: stop at the first hit
            hits, searched = int(any(pat.match(n) for n in names)), 0
        else:
            hits = sum(1 for n in names if pat.match(n))
            searched = sum(1 for n in names if pat.search(n))
        if hits == 0 and searched:
            ctx.findings.add("pattern-valid",
                             f"{where} entry {entry!r} matches no module with re.match (anchored at the start of "
                             f"the name) but {searched} with a leading '.*': it does nothing as written.",
                             fix=f"Write it as 're:.*{entry[3:]}'.", problem="anchored")
        elif hits == 0:
            ctx.findings.add("pattern-valid", f"{where} entry {entry!r} matches no module of this checkpoint.",
                             severity="warning", problem="no-match")
        elif searched > hits:
            ctx.findings.add("pattern-valid",
                             f"{where} entry {entry!r} has no leading '.*': re.match anchors it at the start, so it "
                             f"matches {hits} modules where a leading '.*' would match {searched}.",
                             severity="warning", fix=f"Write 're:.*{entry[3:]}' or anchor it with '^' on purpose.",
                             problem="partly-anchored")


def _exists(ctx: Context, entry: str, style: str) -> bool:
    lay = ctx.layout
    names = lay.match_names
    if style in ("ct", "fp8"):  # exact layer names
        return entry in lay.match_name_set or lay.to_vllm(entry) in lay.match_name_set
    if style == "modelopt":
        probes = [entry[:-1], entry[:-1] + ".*"] if len(entry) >= 2 and entry.endswith("*") and entry[-2] != "." \
            else [entry]
        for p in probes:
            p = lay.to_vllm(p) if "." in p else p
            for n in names:
                if p == n or p in n or fnmatchcase(n, p):
                    return True
        return False
    return any(entry in n for n in names)  # GPTQ/AWQ: substring


@check("ignore-names-exist")
def ignore_names_exist(ctx: Context) -> None:
    spec = ctx.spec
    if spec is None or spec.style == "other":
        return
    lay = ctx.layout
    entries = [(spec.ignore_key, e) for e in spec.ignore if not e.startswith("re:")]
    if spec.style == "ct":
        entries += [(f"config_groups.{g.name}.targets", t) for g in spec.groups for t in g.targets
                    if not t.startswith("re:") and "." in t]
    for where, entry in entries:
        if entry == "" and spec.style == "modelopt":
            ctx.findings.add("ignore-names-exist",
                             f"{where} has an empty entry: vLLM matches ModelOpt entries as substrings, so it excludes "
                             "every layer and loads the quantized weights into 16-bit layers.",
                             fix="Remove the empty entry.", severity="error", problem="empty")
            continue
        if _exists(ctx, entry, spec.style):
            continue
        # an entry that names nothing does nothing in vLLM (nvidia's DeepSeek-R1-FP4 excludes self_attn.q_proj, which
        # R1 does not have): a warning. What it was meant to keep 16-bit, if stored 16-bit, is config-matches-disk's
        # error; if stored quantized, vLLM serves it quantized as the config says.
        sev = "warning"
        parent, _, leaf = entry.rpartition(".")
        fused_leaf = _SHARD_TO_FUSED.get(leaf)
        if fused_leaf and f"{parent}.{fused_leaf}" in lay.modules:
            ctx.findings.add("ignore-names-exist",
                             f"{where} entry {entry!r} names the split shard {leaf!r}, but this checkpoint stores the "
                             f"fused {fused_leaf!r} ({parent}.{fused_leaf}): the entry ignores nothing and vLLM "
                             "quantizes the layer it was meant to skip (vllm#40252).",
                             module=entry, fix=f"Name the on-disk module {parent}.{fused_leaf!r} instead.",
                             severity=sev, problem="split-name")
        elif spec.style == "ct" and entry in lay.all_names:
            ctx.findings.add("ignore-names-exist",
                             f"{where} entry {entry!r} names a parent module, not a layer: vLLM compares whole layer "
                             "names, so it matches nothing.", module=entry, severity=sev,
                             fix=f"Use 're:{re.escape(entry)}\\..*' to cover every layer under it.",
                             problem="parent-name")
        else:
            ctx.findings.add("ignore-names-exist",
                             f"{where} entry {entry!r} names no module of this checkpoint (after vLLM's name "
                             "mapping), so it does nothing.", module=entry, severity=sev, problem="no-module")


@check("fused-shards-consistent")
def fused_shards_consistent(ctx: Context) -> None:
    if ctx.spec is None:
        return
    lay, statuses = ctx.layout, ctx.statuses
    problems: dict[str, list[str]] = defaultdict(list)
    matcher = ctx.matcher
    for fused, shards in lay.fused:
        sts = [statuses.get(s) for s in shards]
        if matcher is None or any(st is None or st.quantized is None for st in sts):
            continue
        own = [matcher.shard_status(s) for s in shards]  # each shard on its own, as the producer saw it
        leaves = "/".join(s.rsplit(".", 1)[-1] for s in shards)
        fleaf = fused.rsplit(".", 1)[-1]
        if any(st.mixed_shards for st in sts) or len({st.quantized for st in own}) > 1:  # type: ignore[union-attr]
            kept = [s.rsplit(".", 1)[-1] for s, st in zip(shards, own) if not st.quantized]
            # compressed-tensors: CompressedTensorsConfig._get_scheme_from_parts; every other method goes
            # through quantization/utils/quant_utils.py is_layer_skipped
            raised = ("Found different quantization schemes for the shards" if ctx.spec.style == "ct"
                      else "Detected some but not all shards of ... are quantized")
            problems[f"the config keeps {', '.join(kept)} 16-bit but quantizes the other shards of {fleaf} "
                     f"({leaves}): vLLM raises `{raised}`"].append(fused)
        elif len({st.group for st in own}) > 1:
            groups = ", ".join(f"{s.rsplit('.', 1)[-1]}={st.group}" for s, st in zip(shards, own))
            problems[f"the shards of {fleaf} are in different config groups ({groups}): vLLM applies "
                     f"{sts[0].group} to the whole fused layer"].append(fused)  # type: ignore[union-attr]
        formats = {lay.modules[s].disk_format() for s in shards}
        if len(formats) > 1:
            problems[f"the shards of {fleaf} ({leaves}) are stored in different formats "
                     f"({', '.join(sorted(formats))}): vLLM loads them into one tensor"].append(fused)
    for prefix, members in lay.experts.items():
        distinct = list({id(st): st for st in (statuses.get(m) for m in members)}.values())  # memoized: few
        if any(st is None or st.quantized is None for st in distinct):
            continue
        kinds = {(st.quantized, st.group) for st in distinct}  # type: ignore[union-attr]
        if len(kinds) > 1:
            problems["the experts of one MoE layer are not all quantized with one scheme (vLLM runs them as one "
                     "fused layer): " + ", ".join(f"{g or ('16-bit' if not q else '?')}" for q, g in sorted(
                         kinds, key=str))].append(prefix)
        by_leaf: dict[str, set[str]] = defaultdict(set)
        seen: set[tuple] = set()
        for m in members:
            mod = lay.modules[m]
            sig = mod.signature()
            if sig not in seen:
                seen.add(sig)
                by_leaf[mod.leaf].add(mod.disk_format())
        mixed = {leaf: f for leaf, f in by_leaf.items() if len(f) > 1}
        if mixed:
            leaf, fmts = next(iter(mixed.items()))
            problems[f"experts store {leaf} in different formats ({', '.join(sorted(fmts))})"].append(prefix)
    for message, layers in problems.items():
        ctx.findings.add_grouped("fused-shards-consistent", layers, message + ".", problem=message)


def _keep_rules() -> list[tuple[str, re.Pattern[str], str]]:
    return [(r.id, re.compile(r.pattern), r.upstream or r.why) for r in IGNORE_RULES]


def _keep_severity(rid: str, module: str) -> str:
    """Error where vLLM breaks (it builds the layer 16-bit, or quantizing it ruins a recurrence); warning where
    storing it quantized is only against quantkit's preference."""
    if rid in _WARNING_RULES:
        return "warning"
    if rid in _HYBRID_RULES and module.rsplit(".", 1)[-1] not in _HYBRID_RULES[rid]:
        return "warning"
    return "error"


@check("keep-16bit")
def keep_16bit(ctx: Context) -> None:
    lay = ctx.layout
    rules = _keep_rules()
    hits: dict[tuple[str, str], list[str]] = defaultdict(list)
    by_pattern: dict[str, str | None] = {}
    for m in lay.quantized:
        key = wildcard(m)
        if key not in by_pattern:
            names = {m, lay.to_vllm(m)}
            by_pattern[key] = next((rid for rid, rx, _ in rules if any(rx.match(n) for n in names)), None)
        rid = by_pattern[key]
        if rid is not None:
            hits[(rid, _keep_severity(rid, m))].append(m)
    why = {r.id: r for r in IGNORE_RULES}
    for (rid, sev), modules in sorted(hits.items()):
        r = why[rid]
        ref = f" ({r.upstream})" if r.upstream else ""
        if r.vllm:
            message = (f"stored quantized, but vLLM builds this layer unquantized ({r.vllm}): its quantized weights "
                       f"are loaded as 16-bit values or rejected as unexpected tensors. quantkit's ignore rule "
                       f"{rid!r}: {r.why}{ref}")
        elif rid in _WARNING_RULES:
            message = (f"stored quantized; vLLM loads it only for speculative decoding, with the checkpoint's "
                       f"quantization config, so it loads, but quantkit's ignore rule {rid!r} keeps it 16-bit: "
                       f"{r.why}{ref}")
        else:
            message = f"stored quantized, but quantkit's ignore rule {rid!r} keeps it 16-bit: {r.why}{ref}"
        ctx.findings.add_grouped("keep-16bit", modules, message + ".", severity=sev)  # type: ignore[arg-type]


def _mtp_matcher(ctx: Context):  # noqa: ANN202 - a small predicate
    """Whether an on-disk module belongs to an MTP head (``mtp.*``, or DeepSeek's ``model.layers.<n>`` extras)."""
    try:
        idx = mtp_layer_indices(ctx.text_config)
    except (TypeError, ValueError):
        idx = ()
    layer = re.compile(rf"^(model\.)?(language_model\.)?layers\.({'|'.join(map(str, idx))})\.") if idx else None
    return lambda m: bool(_MTP_PREFIX.match(m) or (layer is not None and layer.match(m)))


@check("config-matches-disk")
def config_matches_disk(ctx: Context) -> None:
    if ctx.spec is None:
        return
    lay = ctx.layout
    quantized = set(lay.quantized)
    is_mtp = _mtp_matcher(ctx)
    problems: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m, st in ctx.statuses.items():
        if st.quantized is None:
            continue
        on_disk = m in quantized
        if st.vllm_unquantized in ROUTER_RULES:
            # vLLM builds routers and shared-expert gates with quant_config=None: 16-bit on disk is what it loads
            # (stored quantized, keep-16bit reports the error). Loaders that apply the config to every Linear
            # follow the config instead, so say it when the config would quantize the layer.
            if not on_disk and st.config_quantized:
                problems[("warning", "the config's targets cover it and no ignore entry names it, but it is stored "
                          "16-bit: vLLM builds this router/gate unquantized whatever the config says, so it loads "
                          "and serves correctly; engines that apply the config to every Linear (e.g. transformers' "
                          "compressed-tensors integration) may expect it quantized")].append(m)
            continue
        mtp = is_mtp(m)
        if st.quantized and not on_disk:
            msg = f"the config quantizes it (group {st.group}) but it is stored 16-bit: vLLM expects packed " \
                  "weights and scales that are not there"
        elif on_disk and not st.quantized:
            why = f"ignored by {st.ignored_by!r}" if st.ignored_by else "matched by no config group"
            msg = (f"stored quantized but the config leaves it 16-bit ({why}): vLLM builds a 16-bit layer and "
                   "cannot load the quantized tensors")
        else:
            continue
        if mtp:
            msg += (f" -- but only when serving with MTP speculative decoding: the main model skips MTP weights "
                    f"({_MTP_SKIPPED})")
        problems[("warning" if mtp else "error", msg)].append(m)
    for (sev, message), modules in problems.items():
        fix = ("List the router/gate in the ignore list (quantkit's build_ignore emits it) so the config says what is "
               "on disk." if sev == "warning" and "router/gate" in message else None)
        ctx.findings.add_grouped("config-matches-disk", modules, message + ".", severity=sev,  # type: ignore[arg-type]
                                 fix=fix, problem=message)
