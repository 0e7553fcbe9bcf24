"""The ignore list: layers that must stay in 16-bit for vLLM to load the checkpoint and serve it well.

Rules are data: each entry is an anchored regular expression on module names (``re.match`` semantics, the
same as compressed-tensors' ``re:`` targets and vLLM's ignore matching), why the layer stays unquantized, and
the upstream report behind it. The list is built from module names alone (``named_modules()`` of a loaded
model, or a checkpoint's tensor names read from safetensors headers), and only patterns that match at least
one module are emitted.

Names matter (vllm#40252): vLLM matches ``quantization_config.ignore`` against the names in the checkpoint
it loads, mapping them onto its own fused layers (``qkv_proj``, ``in_proj_qkvz``, ...). An ignore list
written for other names silently quantizes what it meant to skip. So plain entries here are always exact
names found in the model, patterns are prefix-agnostic (``model.`` / ``language_model.`` / none), and
:func:`check_ignore` verifies that every entry matches something and that the shards vLLM fuses into one
layer are either all ignored or all quantized.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantkit.planning.architectures import mtp_layer_indices, text_config


@dataclass(frozen=True)
class IgnoreRule:
    """One reason to keep layers unquantized: an anchored regex on module names, why, and where it came from.

    ``vllm`` is set when vLLM's model code builds every matching layer with ``quant_config=None`` (it names the
    file and class): such a layer loads 16-bit whatever the quantization config says, and quantized tensors
    stored for it are read as 16-bit garbage or rejected. It is empty where vLLM honours the config for the
    layer and keeping it 16-bit is quantkit's choice. ``families`` are the transformers ``model_type`` values
    whose on-disk names the pattern was checked against.
    """

    id: str
    pattern: str
    why: str
    upstream: str = ""
    vllm: str = ""
    families: tuple[str, ...] = ()


LM_HEAD = re.compile(r"^(.*\.)?lm_head$")

#: The one table of layers to keep 16-bit. The router and gate entries (``vllm`` set) were checked against the
#: transformers modeling file of each family (on-disk names) and the vLLM model file that serves it.
IGNORE_RULES: tuple[IgnoreRule, ...] = (
    IgnoreRule("lm-head", LM_HEAD.pattern,
               "the output projection is small per token and very sensitive; when embeddings are tied, "
               "quantizing it would quantize the embedding too"),
    IgnoreRule("moe-router", r".*\.mlp\.gate$", "MoE routers pick experts; quantizing them shifts routing",
               "llm-compressor#2163",
               vllm="vllm/model_executor/models/deepseek_v2.py (DeepseekV2MoE: GateLinear, which passes "
                    "quant_config=None), qwen3_moe.py (Qwen3MoeSparseMoeBlock), qwen2_moe.py "
                    "(Qwen2MoeSparseMoeBlock), qwen3_next.py, olmoe.py, glm4_moe.py, ernie45_moe.py: "
                    "gate = ReplicatedLinear/GateLinear(..., quant_config=None)",
               families=("qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe", "deepseek_v2", "deepseek_v3",
                         "glm4_moe", "olmoe", "ernie4_5_moe", "dots1")),
    IgnoreRule("moe-router-named", r".*\.(router|gate\.wg)$",
               "MoE routers (Llama-4 and Jamba feed_forward.router, GPT-OSS mlp.router, HunYuan mlp.gate.wg)",
               vllm="vllm/model_executor/models/llama4.py (Llama4MoE), jamba.py (JambaMoE): router = "
                    "ReplicatedLinear(..., quant_config=None); gpt_oss.py (MLPBlock): router = GateLinear",
               families=("llama4", "llama4_text", "jamba", "gpt_oss", "hunyuan_v1_moe")),
    IgnoreRule("moe-router-layer", r".*\.router\.layer$",
               "MoE routers stored one level down (Granite MoE / Granite-4 block_sparse_moe.router.layer, DBRX "
               "ffn.router.layer)",
               vllm="vllm/model_executor/models/granitemoe.py (GraniteMoeMoE: gate = ReplicatedLinear(..., "
                    "quant_config=None); load_weights renames block_sparse_moe.router.layer.weight to "
                    "block_sparse_moe.gate.weight, and granitemoehybrid.py GraniteMoeHybridModel.load_weights "
                    "does the same), dbrx.py (DbrxRouter: layer = ReplicatedLinear(..., quant_config=None))",
               families=("granitemoe", "granitemoeshared", "granitemoehybrid", "dbrx")),
    IgnoreRule("moe-router-mixtral", r".*\.block_sparse_moe\.gate$",
               "MoE routers (Mixtral, PhiMoE, MiniMax naming)",
               vllm="vllm/model_executor/models/mixtral.py (MixtralMoE), phimoe.py (PhiMoE), minimax_m2.py: "
                    "gate = ReplicatedLinear(..., quant_config=None)",
               families=("mixtral", "phimoe", "minimax", "minimax_m2")),
    IgnoreRule("moe-router-mixer", r".*\.mixer\.gate$", "MoE routers of Nemotron-H MoE layers ('E' in the pattern)",
               vllm="vllm/model_executor/models/nemotron_h.py (NemotronHMoE: gate = ReplicatedLinear(..., "
                    "params_dtype=torch.float32, quant_config=None))",
               families=("nemotron_h",)),
    IgnoreRule("shared-expert-gate", r".*\.shared_expert_gate$",
               "Qwen MoE shared-expert gate: a 1-row linear feeding a sigmoid",
               vllm="vllm/model_executor/models/qwen2_moe.py (Qwen2MoeSparseMoeBlock: shared_expert_gate = "
                    "torch.nn.Linear), qwen3_next.py (Qwen3NextSparseMoeBlock: ReplicatedLinear(..., "
                    "quant_config=None))",
               families=("qwen2_moe", "qwen3_next", "qwen3_5_moe")),
    IgnoreRule("linear-attn", r".*\.linear_attn\..*",
               "hybrid (Qwen3-Next/Qwen3.5) Gated-DeltaNet blocks: the recurrence accumulates quantization "
               "error, and vLLM silently produced garbage when these were quantized", "vllm#40252"),
    # Mamba-2 mixers (Nemotron-H backbone.layers.N.mixer, Granite-4 hybrid and Falcon-H1 model.layers.N.mamba):
    # only the depthwise conv1d stays 16-bit. in_proj/out_proj, the largest matrices of these layers, are
    # quantized: vLLM's MambaMixer2 builds them with the quant config, llm-compressor quantizes every Linear
    # (conv1d is an nn.Conv1d), and ModelOpt's default config disables only "*mixer.conv1d*".
    IgnoreRule("mamba-mixer", r".*\.(mixer|mamba)\.conv1d$",
               "Mamba depthwise causal convolution: vLLM always builds it 16-bit (in_proj/out_proj are quantized, "
               "as llm-compressor and ModelOpt do)",
               vllm="vllm/model_executor/layers/mamba/mamba_mixer2.py (MambaMixer2: conv1d = "
                    "MergedColumnParallelLinear/ColumnParallelLinear(..., quant_config=None), while in_proj and "
                    "out_proj get the model's quant_config), used by nemotron_h.py, granitemoehybrid.py, "
                    "falcon_h1.py; mamba_mixer.py (MambaMixer, Mamba-1) builds every layer without one",
               families=("nemotron_h", "granitemoehybrid", "falcon_h1", "jamba", "mamba", "mamba2")),
    # Mamba-1 mixers (Jamba model.layers.N.mamba, Mamba backbone.layers.N.mixer) are told apart by x_proj/dt_proj,
    # which Mamba-2 has not; their in_proj/out_proj are added by _mamba1_rule, since by name alone they look like
    # Mamba-2's, which vLLM quantizes.
    IgnoreRule("mamba1-mixer", r".*\.(mixer|mamba)\.(x_proj|dt_proj)$",
               "Mamba-1 mixers (Jamba, Mamba): vLLM builds every projection 16-bit",
               vllm="vllm/model_executor/layers/mamba/mamba_mixer.py (MambaMixer takes no quant_config: "
                    "in_proj, x_proj, dt_proj, out_proj and conv1d are built unquantized), used by jamba.py "
                    "(JambaMambaDecoderLayer) and mamba.py",
               families=("jamba", "mamba")),
    IgnoreRule("vision-tower",
               r"^(model\.)?(visual|vision_tower|vision_model|multi_modal_projector|audio_tower)\..*",
               "vision/audio encoders and projectors: small, sensitive, and not served by the text kernels",
               "llm-compressor#2714"),
    IgnoreRule("mtp", r"^(model\.)?mtp\..*", "multi-token-prediction heads used for speculative decoding"),
)

IGNORE_RULES_BY_ID: dict[str, IgnoreRule] = {r.id: r for r in IGNORE_RULES}

#: ids of the rules for routers and gates that vLLM builds unquantized (the validator's "router" rules)
ROUTER_RULES: frozenset[str] = frozenset(r.id for r in IGNORE_RULES if r.vllm)


def vllm_unquantized_rule(name: str) -> IgnoreRule | None:
    """The router/gate rule whose layers vLLM builds with ``quant_config=None``, if ``name`` is one of them."""
    for rule in _VLLM_UNQUANTIZED:
        if rule[1].match(name):
            return rule[0]
    return None


_VLLM_UNQUANTIZED = tuple((r, re.compile(r.pattern)) for r in IGNORE_RULES if r.vllm)

#: vLLM fuses these on-disk shards into one layer (its ``packed_modules_mapping``); vLLM refuses a checkpoint
#: whose shards of one fused layer differ in precision ("must have the same precision").
FUSED_MODULES: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "fused_qkv_a_proj": ("q_a_proj", "kv_a_proj_with_mqa"),  # DeepSeek MLA with q_lora_rank
    "in_proj_qkvz": ("in_proj_qkv", "in_proj_z"),  # Qwen3.5 Gated DeltaNet
    "in_proj_ba": ("in_proj_b", "in_proj_a"),  # Qwen3.5 Gated DeltaNet
}


@dataclass(frozen=True)
class IgnoreEntry:
    """One emitted ignore entry, the rule behind it and how many modules it covers."""

    entry: str
    rule: str
    why: str
    matches: int
    upstream: str = ""


def matches(entry: str, name: str) -> bool:
    """compressed-tensors / vLLM semantics: ``re:`` entries use ``re.match``; others must equal the name."""
    if entry.startswith("re:"):
        return re.match(entry[3:], name) is not None
    return entry == name


def ignore_matcher(ignore: Iterable[str]) -> Callable[[str], bool]:
    """A predicate telling whether a module name is covered by an ignore list (compiled once)."""
    entries = list(ignore)
    plain = {e for e in entries if not e.startswith("re:")}
    regexes = [re.compile(e[3:]) for e in entries if e.startswith("re:")]
    return lambda name: name in plain or any(rx.match(name) for rx in regexes)


def _mtp_rule(config: Mapping[str, Any] | None) -> IgnoreRule | None:
    idx = mtp_layer_indices(text_config(config)) if config else ()
    if not idx:
        return None
    alt = "|".join(str(i) for i in idx)
    layers = f"({alt})" if len(idx) > 1 else alt
    return IgnoreRule("mtp-layer", rf"^(model\.)?layers\.{layers}\..*",
                      "DeepSeek-style MTP layer stored as an extra decoder layer (num_nextn_predict_layers)")


_MAMBA1_MARK = re.compile(r".*\.(mixer|mamba)\.(x_proj|dt_proj)$")


def _mamba1_rule(names: Sequence[str]) -> IgnoreRule | None:
    """in_proj/out_proj of Mamba-1 mixers, for checkpoints that have them (x_proj/dt_proj present)."""
    if not any(_MAMBA1_MARK.match(n) for n in names):
        return None
    return IgnoreRule("mamba1-in-out", r".*\.(mixer|mamba)\.(in_proj|out_proj)$",
                      "Mamba-1 input/output projections (Jamba, Mamba): vLLM's MambaMixer builds them 16-bit",
                      vllm=IGNORE_RULES_BY_ID["mamba1-mixer"].vllm)


def explain_ignore(module_names: Iterable[str], *, config: Mapping[str, Any] | None = None) -> list[IgnoreEntry]:
    """The ignore entries for a model, each with its rule, reason and number of matching modules.

    The lm_head entries come first and are exact names (``lm_head``, or ``language_model.lm_head`` for
    checkpoints that nest it); when no lm_head exists (tied embeddings stored once), ``lm_head`` is still
    emitted because transformers and vLLM create that module at load time. The other rules appear as ``re:``
    patterns only when they match some module. ``config`` (``config.json``) enables the rules that need it
    (MTP layers stored as ``model.layers.<num_hidden_layers>``).
    """
    names = list(dict.fromkeys(module_names))
    out: list[IgnoreEntry] = []
    head_rule = IGNORE_RULES[0]
    heads = [n for n in names if LM_HEAD.match(n)]
    if heads:
        for n in heads:
            out.append(IgnoreEntry(n, head_rule.id, head_rule.why, 1))
    else:
        out.append(IgnoreEntry("lm_head", head_rule.id,
                               "tied embeddings: no lm_head tensor on disk, but transformers and vLLM create an "
                               "lm_head module sharing the embedding, which must not be quantized", 0))
    rules = list(IGNORE_RULES[1:])
    for derived in (_mamba1_rule(names), _mtp_rule(config)):
        if derived is not None:
            rules.append(derived)
    uncovered = [n for n in names if not LM_HEAD.match(n)]
    for rule in rules:
        rx = re.compile(rule.pattern)
        hit = [n for n in uncovered if rx.match(n)]
        if hit:
            out.append(IgnoreEntry("re:" + rule.pattern, rule.id, rule.why, len(hit), rule.upstream))
            hit_set = set(hit)
            uncovered = [n for n in uncovered if n not in hit_set]
    return out


def build_ignore(module_names: Iterable[str], *, config: Mapping[str, Any] | None = None) -> list[str]:
    """Return the ignore entries for a model whose linear-layer names are ``module_names``.

    lm_head entries come first (exact names; ``lm_head`` when embeddings are tied), then ``re:`` patterns
    that match at least one module. See :func:`explain_ignore` for the reasons.
    """
    return [e.entry for e in explain_ignore(module_names, config=config)]


def checkpoint_module_names(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the linear-like modules of a checkpoint, from its tensor table (name -> info with ``.shape``).

    A module counts when it owns a 2-D ``weight`` (a Linear; embeddings are left out), or when it is a
    fused 3-D expert tensor (Llama-4 ``feed_forward.experts.gate_up_proj``), which llm-compressor unfuses
    into Linears before quantizing.
    """
    out = []
    for name, info in tensors.items():
        shape = tuple(getattr(info, "shape", info))
        if name.endswith(".weight") and len(shape) == 2:
            module = name[: -len(".weight")]
            if not _EMBEDDING.match(module):
                out.append(module)
        elif _FUSED_EXPERTS.match(name) and len(shape) == 3:
            out.append(name)
    return sorted(set(out))


_EMBEDDING = re.compile(r"(^|.*\.)(embed_tokens|wte|word_embeddings|embeddings?|tok_embeddings|"
                        r"position_embedding|positional_embedding\w*|patch_embedding)$")
_FUSED_EXPERTS = re.compile(r".*\.experts\.(gate_up_proj|down_proj)$")


def check_ignore(ignore: Sequence[str], module_names: Iterable[str]) -> list[str]:
    """Problems with an ignore list for these modules (empty when it is sound).

    Flags entries that match no module (a typo or another checkpoint's naming: vllm#40252) -- except a bare
    ``lm_head`` for tied embeddings -- and fused layers whose shards would end up in different precisions.
    """
    names = list(module_names)
    problems = []
    for entry in ignore:
        if entry == "lm_head" and not any(LM_HEAD.match(n) for n in names):
            continue
        if not any(map(ignore_matcher([entry]), names)):
            problems.append(f"ignore entry {entry!r} matches no module of this checkpoint; vLLM will quantize "
                            "what it was meant to skip (vllm#40252)")
    ignored = ignore_matcher(ignore)
    groups: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for n in names:
        parent, _, leaf = n.rpartition(".")
        for fused, shards in FUSED_MODULES.items():
            if leaf in shards:
                groups[(parent, fused)][leaf] = ignored(n)
    for (parent, fused), status in sorted(groups.items()):
        if len(status) > 1 and len(set(status.values())) > 1:
            kept = sorted(k for k, v in status.items() if v)
            quant = sorted(k for k, v in status.items() if not v)
            problems.append(f"{parent}: vLLM fuses {', '.join(sorted(status))} into {fused}, but the ignore list "
                            f"keeps {', '.join(kept)} in 16-bit and quantizes {', '.join(quant)}; vLLM refuses "
                            "shards of one layer in different precisions")
    return problems


def linear_module_names(model: object) -> list[str]:
    """Names of the ``nn.Linear`` modules of a loaded torch model."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]
