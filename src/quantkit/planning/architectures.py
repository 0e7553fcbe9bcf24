"""What planning needs to know about a model, read from ``config.json`` and tensor names only.

Architecture knowledge is data: :data:`ARCHITECTURES` lists the families quantkit has checked (which
``model_type`` values belong to each, the config defaults the Hugging Face config class fills in when
``config.json`` leaves a key out, and what is special about the family). :func:`describe` turns a config and
a checkpoint's module names into :class:`ModelTraits`: MoE, MLA, hybrid linear attention, vision tower,
MTP heads, tied embeddings, and the per-layer attention layout that KV-cache sizing needs.

No model code and no torch: a 600B checkpoint is described from its headers in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

LayerKind = Literal["full", "sliding", "chunked", "linear", "mamba", "none"]


#: leaf names of layers whose *input* dimension vLLM splits across tensor-parallel ranks (RowParallelLinear in
#: vllm/model_executor/layers/linear.py); planning checks their shards, the validator their group sizes
ROW_PARALLEL = frozenset({"o_proj", "down_proj", "out_proj", "dense", "fc2", "w2", "c_proj", "wo",
                          "dense_4h_to_h", "proj_out"})

@dataclass(frozen=True)
class ArchFamily:
    """One architecture family quantkit plans for.

    ``config_defaults`` are the values the transformers config class uses when ``config.json`` omits a key
    (Gemma-3's ``text_config`` leaves out its head counts, for instance); ``notes`` reach the plan's reasons.
    """

    name: str
    model_types: tuple[str, ...]
    description: str
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


ARCHITECTURES: tuple[ArchFamily, ...] = (
    ArchFamily("llama", ("llama", "mistral", "granite"), "dense decoder (Llama-3 style GQA)"),
    ArchFamily("qwen3", ("qwen3", "qwen2"), "dense decoder with q/k norms (Qwen3)"),
    ArchFamily("qwen3-moe", ("qwen3_moe", "qwen2_moe"), "sparse MoE decoder (Qwen3-MoE: router mlp.gate)",
               notes=("MoE: the router (mlp.gate) stays 16-bit; experts are quantized",)),
    ArchFamily("qwen3-next", ("qwen3_next",),
               "hybrid Gated-DeltaNet + full attention MoE (Qwen3-Next)",
               {"full_attention_interval": 4},
               notes=("hybrid: linear_attn (Gated DeltaNet) blocks stay 16-bit (vllm#40252)",)),
    ArchFamily("qwen3.5", ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"),
               "hybrid Gated-DeltaNet + full attention (Qwen3.5/3.6), optionally MoE and vision",
               notes=("hybrid: linear_attn (Gated DeltaNet) blocks stay 16-bit (vllm#40252)",)),
    ArchFamily("gemma3", ("gemma3", "gemma3_text"), "Gemma-3: 5 sliding-window layers per global layer",
               {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096,
                "sliding_window_pattern": 6, "tie_word_embeddings": True, "vocab_size": 262208}),
    ArchFamily("gemma", ("gemma", "gemma2"), "Gemma / Gemma-2 dense decoder", {"tie_word_embeddings": True}),
    ArchFamily("llama4", ("llama4", "llama4_text"),
               "Llama-4 MoE (router + shared expert), chunked local attention with NoPE global layers",
               {"attention_chunk_size": 8192, "no_rope_layer_interval": 4},
               notes=("MoE: the router (feed_forward.router) stays 16-bit",)),
    ArchFamily("deepseek-v3", ("deepseek_v3", "deepseek_v2", "kimi_k2", "glm4_moe_lite"),
               "DeepSeek-style MLA attention + MoE (router mlp.gate, shared experts), MTP layers",
               notes=("MLA: the KV cache holds one compressed latent per token (kv_lora_rank + rope dims)",)),
    ArchFamily("mixtral", ("mixtral",), "Mixtral sparse MoE (router block_sparse_moe.gate)"),
    # Hybrid state-space families. Defaults are those of the transformers config classes
    # (src/transformers/models/<family>/configuration_<family>.py); the layer schedule each derives is in
    # layer_layout(). In every one, vLLM's MambaMixer2 builds in_proj/out_proj with the quant config and conv1d
    # with quant_config=None (vllm/model_executor/layers/mamba/mamba_mixer2.py), as llm-compressor and ModelOpt
    # quantize them; Jamba's Mamba-1 mixer (mamba_mixer.py MambaMixer) takes no quant config at all.
    ArchFamily("nemotron-h", ("nemotron_h",), "hybrid Mamba-2 + attention (Nemotron-H): hybrid_override_pattern",
               {"num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "ssm_state_size": 128,
                "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8, "conv_kernel": 4},
               notes=("hybrid: Mamba-2 in_proj/out_proj are quantized (as vLLM, llm-compressor and ModelOpt "
                      "do); conv1d stays 16-bit; only the '*' attention layers hold a KV cache",)),
    ArchFamily("granite-4-hybrid", ("granitemoehybrid",),
               "hybrid Mamba-2 + attention MoE (Granite-4.0-H): layer_types mamba/attention",
               {"mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4,
                "mamba_expand": 2},
               notes=("hybrid: Mamba-2 in_proj/out_proj are quantized (as vLLM, llm-compressor and ModelOpt "
                      "do); conv1d stays 16-bit",)),
    ArchFamily("jamba", ("jamba",),
               "hybrid Mamba-1 + attention MoE (Jamba): attention where layer % attn_layer_period == offset",
               {"num_attention_heads": 32, "num_key_value_heads": 8, "attn_layer_period": 8, "attn_layer_offset": 4,
                "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2},
               notes=("hybrid: Jamba's Mamba-1 mixers stay 16-bit: vLLM's MambaMixer builds them without a quant "
                      "config (vllm/model_executor/layers/mamba/mamba_mixer.py)",)),
    ArchFamily("falcon-h1", ("falcon_h1",),
               "hybrid Falcon-H1: attention and a Mamba-2 mixer side by side in every layer",
               {"num_attention_heads": 32, "num_key_value_heads": 8, "mamba_n_heads": 128, "mamba_n_groups": 1,
                "mamba_d_state": 256, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_d_ssm": 1024},
               notes=("hybrid: every layer holds a KV cache and a Mamba-2 state; Mamba in_proj/out_proj are "
                      "quantized (as vLLM, llm-compressor and ModelOpt do), conv1d stays 16-bit",)),
)

_BY_MODEL_TYPE = {mt: fam for fam in ARCHITECTURES for mt in fam.model_types}

#: model_types vLLM serves with MLA (mirrors vLLM's ``is_deepseek_mla`` list for the families we know)
MLA_MODEL_TYPES = frozenset({"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "glm4_moe_lite",
                             "deepseek_mtp", "kimi_linear", "longcat_flash"})


@dataclass(frozen=True)
class LayerSpec:
    """How one decoder layer stores context: a per-token KV cache (full/sliding/chunked) or a recurrent state."""

    kind: LayerKind
    window: int | None = None  # sliding window or attention chunk, in tokens
    #: the layer also runs a Mamba mixer beside its attention (Falcon-H1): a KV cache *and* a recurrent state
    mamba: bool = False

    @property
    def has_state(self) -> bool:
        """Whether the layer keeps a fixed-size recurrent state per sequence (Gated DeltaNet or Mamba)."""
        return self.kind in ("linear", "mamba") or self.mamba


@dataclass(frozen=True)
class ModelTraits:
    """Everything planning reads from a checkpoint's config and tensor names."""

    family: str
    model_type: str
    description: str
    text_config: Mapping[str, Any]
    moe: bool
    num_experts: int
    mla: bool
    hybrid: bool
    vision: bool
    mtp: bool
    tied_embeddings: bool
    layers: tuple[LayerSpec, ...]
    quant_method: str | None
    notes: tuple[str, ...] = ()

    @property
    def num_attention_heads(self) -> int:
        return int(self.text_config.get("num_attention_heads") or 0)


def family_for(model_type: str) -> ArchFamily | None:
    """The family a ``model_type`` belongs to, or None when quantkit has no entry for it."""
    return _BY_MODEL_TYPE.get(model_type)


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's config (``text_config`` of multimodal checkpoints), with family defaults filled in.

    Keys the top-level config sets and the text config lacks (``tie_word_embeddings``, ``dtype``) are
    inherited, as transformers does.
    """
    inner = config.get("text_config")
    cfg = dict(inner) if isinstance(inner, Mapping) and inner else dict(config)
    for key in ("tie_word_embeddings", "dtype", "torch_dtype", "quantization_config"):
        if key not in cfg and key in config:
            cfg[key] = config[key]
    fam = family_for(str(cfg.get("model_type") or config.get("model_type") or ""))
    if fam is None:
        fam = family_for(str(config.get("model_type") or ""))
    if fam is not None:
        for key, value in fam.config_defaults.items():
            cfg.setdefault(key, value)
    return cfg


def head_dim(cfg: Mapping[str, Any]) -> int:
    """Attention head size as vLLM computes it: ``head_dim`` when set, else hidden / heads."""
    hd = cfg.get("head_dim")
    if isinstance(hd, int) and hd > 0:
        return hd
    heads = int(cfg.get("num_attention_heads") or 0)
    return int(cfg.get("hidden_size") or 0) // heads if heads else 0


def num_kv_heads(cfg: Mapping[str, Any]) -> int:
    """Total KV heads (``num_key_value_heads``, falling back to the attention heads as vLLM does)."""
    for key in ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"):
        if cfg.get(key):
            return int(cfg[key])
    return int(cfg.get("num_attention_heads") or 0)


def is_mla(cfg: Mapping[str, Any]) -> bool:
    """Whether vLLM serves this model with multi-head latent attention (one latent vector per token)."""
    return str(cfg.get("model_type")) in MLA_MODEL_TYPES and cfg.get("kv_lora_rank") is not None


_LAYER_TYPE_NAMES: dict[str, LayerKind] = {
    "full_attention": "full", "attention": "full", "global": "full",
    "sliding_attention": "sliding", "sliding_window": "sliding", "local": "sliding",
    "chunked_attention": "chunked",
    "linear_attention": "linear",
    "mamba": "mamba", "mamba2": "mamba",
    # Nemotron-H's MLP-only and MoE-only layers ('-' and 'E' in hybrid_override_pattern): no context store
    "mlp": "none", "moe": "none",
}

#: families whose state-space layers are Mamba mixers. transformers now writes every recurrent layer as
#: "linear_attention" (configuration_utils.py remap_legacy_layer_types: "mamba" -> "linear_attention", and
#: NemotronHConfig._pattern_to_list: 'M' -> "linear_attention"), so in these families that name means Mamba,
#: not Gated DeltaNet.
MAMBA_MODEL_TYPES = frozenset({"nemotron_h", "granitemoehybrid", "jamba", "falcon_h1", "mamba", "mamba2",
                               "falcon_mamba", "bamba", "zamba2"})

#: Nemotron-H ``hybrid_override_pattern``: M = Mamba-2, * = attention, - = MLP only, E = MoE
#: (transformers configuration_nemotron_h.py _pattern_to_list; vllm/model_executor/models/nemotron_h.py builds
#: one decoder layer per character, so the pattern's length is the layer count)
_NEMOTRON_PATTERN: dict[str, LayerKind] = {"M": "mamba", "*": "full", "-": "none", "E": "none"}


def _layer_type_kind(name: str, model_type: str) -> LayerKind:
    kind = _LAYER_TYPE_NAMES.get(name, "full")
    return "mamba" if kind == "linear" and model_type in MAMBA_MODEL_TYPES else kind


def num_layers(cfg: Mapping[str, Any]) -> int:
    """Decoder layers (MTP excluded): ``num_hidden_layers``, or the length of the layer schedule where a config
    gives only that (Nemotron-H: transformers derives the count from ``hybrid_override_pattern`` /
    ``layers_block_type`` and deprecates ``num_hidden_layers``)."""
    n = int(cfg.get("num_hidden_layers") or 0)
    if n:
        return n
    for key in ("hybrid_override_pattern", "layers_block_type", "layer_types"):
        value = cfg.get(key)
        if isinstance(value, (str, list)) and value:
            return len(value)
    return 0


def layer_layout(cfg: Mapping[str, Any]) -> tuple[LayerSpec, ...]:
    """Per decoder layer: which kind of context store it has (MTP layers excluded).

    Reads ``layer_types`` when the config lists them; otherwise derives them the way each family's config
    class does (Qwen3-Next ``full_attention_interval``, Gemma-3 ``sliding_window_pattern``, Llama-4
    ``no_rope_layers``, Nemotron-H ``hybrid_override_pattern``, Jamba ``attn_layer_period``/``offset``,
    Granite-4 hybrid all-Mamba by default, Falcon-H1 attention + Mamba in every layer).
    """
    n = num_layers(cfg)
    window = cfg.get("sliding_window")
    model_type = str(cfg.get("model_type") or "")
    if model_type == "falcon_h1":
        # FalconH1Config.layers_block_type is ["hybrid"] * num_hidden_layers; vllm/model_executor/models/
        # falcon_h1.py FalconH1ParallelHybrid runs self_attn and a MambaMixer2 on the same input in every layer
        return tuple(LayerSpec("full", mamba=True) for _ in range(n))
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        return tuple(LayerSpec(_NEMOTRON_PATTERN.get(ch, "none")) for ch in pattern[:n])
    types = cfg.get("layer_types")
    if not isinstance(types, list):
        types = cfg.get("layers_block_type")  # NemotronHConfig saves its schedule under this name
    if isinstance(types, list) and len(types) >= n:
        out = []
        for t in types[:n]:
            kind = _layer_type_kind(str(t), model_type)
            out.append(LayerSpec(kind, int(window) if kind == "sliding" and window else None))
        return tuple(out)
    if model_type == "granitemoehybrid":
        # GraniteMoeHybridConfig.layers_block_type: layer_types, else ["mamba"] * num_hidden_layers
        return tuple(LayerSpec("mamba") for _ in range(n))
    if cfg.get("attn_layer_period"):
        # JambaConfig.layers_block_type: "attention" if i % attn_layer_period == attn_layer_offset else "mamba"
        # (vllm/model_executor/models/jamba.py builds JambaAttentionDecoderLayer / JambaMambaDecoderLayer from it)
        period, offset = int(cfg["attn_layer_period"]), int(cfg.get("attn_layer_offset") or 0)
        return tuple(LayerSpec("full") if i % period == offset else LayerSpec("mamba") for i in range(n))
    if cfg.get("full_attention_interval"):
        k = int(cfg["full_attention_interval"])
        return tuple(LayerSpec("full") if (i + 1) % k == 0 else LayerSpec("linear") for i in range(n))
    if model_type.startswith("gemma3") and cfg.get("sliding_window_pattern"):
        k = int(cfg["sliding_window_pattern"])
        return tuple(LayerSpec("full") if (i + 1) % k == 0 else LayerSpec("sliding", int(window or 4096))
                     for i in range(n))
    if model_type == "gemma2" and window:
        return tuple(LayerSpec("sliding", int(window)) if i % 2 == 0 else LayerSpec("full") for i in range(n))
    if model_type.startswith("llama4"):
        chunk = cfg.get("attention_chunk_size")
        nope = cfg.get("no_rope_layers")
        if not isinstance(nope, list) or len(nope) < n:
            k = int(cfg.get("no_rope_layer_interval") or 4)
            nope = [int((i + 1) % k != 0) for i in range(n)]
        # vLLM: layers that use RoPE (no_rope_layers[i] == 1) get chunked local attention; NoPE layers are global
        return tuple(LayerSpec("chunked", int(chunk)) if nope[i] and chunk else LayerSpec("full") for i in range(n))
    if window and cfg.get("use_sliding_window", True) and model_type == "mistral":
        return tuple(LayerSpec("sliding", int(window)) for _ in range(n))
    return tuple(LayerSpec("full") for _ in range(n))


@dataclass(frozen=True)
class MambaDims:
    """A Mamba mixer's sizes, read from whichever names the family's config uses.

    ``version`` 1 (Jamba) or 2; ``intermediate`` is the mixer's inner width (heads x head_dim for Mamba-2).
    """

    version: int
    intermediate: int
    heads: int
    head_dim: int
    groups: int
    state: int
    conv_kernel: int


def mamba_dims(cfg: Mapping[str, Any]) -> MambaDims:
    """The Mamba sizes vLLM allocates state for (``get_mamba_state_shape_from_config`` of each model file)."""
    model_type = str(cfg.get("model_type") or "")
    hidden = int(cfg.get("hidden_size") or 0)
    if model_type == "jamba":  # jamba.py: MambaMixer(intermediate_size=mamba_expand * hidden_size)
        inner = int(cfg.get("mamba_expand") or 2) * hidden
        return MambaDims(1, inner, 0, 0, 1, int(cfg.get("mamba_d_state") or 0), int(cfg.get("mamba_d_conv") or 4))
    if cfg.get("mamba_num_heads"):  # Nemotron-H names (nemotron_h.py NemotronHMambaDecoderLayer)
        heads, hdim = int(cfg["mamba_num_heads"]), int(cfg.get("mamba_head_dim") or 0)
        return MambaDims(2, heads * hdim, heads, hdim, int(cfg.get("n_groups") or 1),
                         int(cfg.get("ssm_state_size") or 0), int(cfg.get("conv_kernel") or 4))
    # Granite-4 hybrid / Falcon-H1 names (granitemoehybrid.py, falcon_h1.py: mamba_d_ssm, else expand * hidden)
    heads = int(cfg.get("mamba_n_heads") or 0)
    inner = int(cfg.get("mamba_d_ssm") or 0) or int(cfg.get("mamba_expand") or 2) * hidden
    d_head = cfg.get("mamba_d_head")
    hdim = int(d_head) if isinstance(d_head, int) and d_head > 0 else (inner // heads if heads else 0)
    return MambaDims(2, heads * hdim if heads else inner, heads, hdim, int(cfg.get("mamba_n_groups") or 1),
                     int(cfg.get("mamba_d_state") or 0), int(cfg.get("mamba_d_conv") or 4))


def num_experts(cfg: Mapping[str, Any]) -> int:
    for key in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"):
        value = cfg.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def mtp_layer_indices(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """Indices of multi-token-prediction layers stored as extra ``model.layers.N`` (DeepSeek-V3 style)."""
    n_mtp = int(cfg.get("num_nextn_predict_layers") or 0)
    n = num_layers(cfg)
    return tuple(range(n, n + n_mtp)) if n and n_mtp else ()


_VISION = re.compile(r"^(model\.)?(visual|vision_tower|vision_model|multi_modal_projector|audio_tower)\.")


def describe(config: Mapping[str, Any], module_names: Iterable[str] = ()) -> ModelTraits:
    """Describe a model from its ``config.json`` and (optionally) its module names."""
    names = list(module_names)
    cfg = text_config(config)
    model_type = str(config.get("model_type") or cfg.get("model_type") or "unknown")
    fam = family_for(model_type) or family_for(str(cfg.get("model_type") or ""))
    layers = layer_layout(cfg)
    experts = num_experts(cfg)
    moe = experts > 0 or any(".experts." in n for n in names)
    mtp = bool(mtp_layer_indices(cfg) or cfg.get("mtp_num_hidden_layers")
               or any(n.startswith(("mtp.", "model.mtp.")) for n in names))
    vision = "vision_config" in config or any(_VISION.match(n) for n in names)
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    qc = config.get("quantization_config")
    quant_method = str(qc.get("quant_method")) if isinstance(qc, Mapping) and qc.get("quant_method") else None
    return ModelTraits(
        family=fam.name if fam else model_type,
        model_type=model_type,
        description=fam.description if fam else f"unrecognised model_type {model_type!r} (planned generically)",
        text_config=cfg,
        moe=moe,
        num_experts=experts,
        mla=is_mla(cfg),
        hybrid=any(spec.has_state for spec in layers),
        vision=vision,
        mtp=mtp,
        tied_embeddings=tied,
        layers=layers,
        quant_method=quant_method,
        notes=fam.notes if fam else (),
    )
