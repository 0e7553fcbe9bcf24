"""The model as its safetensors headers describe it: modules, which are Linear layers, which are quantized.

Everything here comes from tensor names, dtypes and shapes. A *module* is the parent of a tensor
(``model.layers.0.self_attn.q_proj`` for ``...q_proj.weight_scale``); a *linear* module has a 2-D primary
weight (``weight``, ``weight_packed`` or GPTQ/AWQ ``qweight``) and is not an embedding; it is *stored
quantized* when it carries packed weights or scales, or a weight that is not 16/32-bit float.

Which on-disk shards vLLM fuses into one layer comes from quantkit's planning table
(:data:`quantkit.planning.ignore.FUSED_MODULES`), so the planner and the validator agree by construction.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from functools import cached_property

from quantkit.checkpoint.reader import TensorInfo
from quantkit.planning.architectures import ROW_PARALLEL
from quantkit.planning.ignore import FUSED_MODULES

FLOAT_DTYPES = frozenset({"BF16", "F16", "F32", "F64"})
PRIMARY = ("weight", "weight_packed", "qweight")
QUANT_PARAMS = frozenset({"weight_packed", "qweight", "weight_scale", "weight_scale_inv", "weight_scale_2",
                          "weight_global_scale", "scales", "qzeros"})
#: leaf names of embedding tables (2-D weights that are not Linear layers)
EMBEDDING_LEAVES = frozenset({"embed_tokens", "wte", "wpe", "word_embeddings", "embedding", "embeddings",
                              "tok_embeddings", "embed_positions", "position_embedding", "position_embeddings",
                              "patch_embedding", "shared"})
#: leaves that project q/k/v: their parent is an attention block that owns a KV cache
ATTN_LEAVES = frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "Wqkv", "c_attn",
                         "kv_a_proj_with_mqa", "q_a_proj", "kv_b_proj"})
_NO_KV_CACHE = re.compile(r"(^|.*\.)(visual|vision_tower|vision_model|audio_tower|mtp|encoder)(\.|$)")
_EXPERT_PARENT = re.compile(r".*\.experts\.\d+$")
#: (w1, w3) pairs vLLM packs into one w13 per expert
EXPERT_W13 = (("gate_proj", "up_proj"), ("w1", "w3"))

#: vLLM's Hugging Face -> vLLM prefix renames for multimodal checkpoints (Qwen-VL, Llava, Gemma-3 style)
MULTIMODAL_PREFIXES = (("model.language_model.", "language_model.model."), ("model.visual.", "visual."),
                       ("model.vision_tower.", "vision_tower."),
                       ("model.multi_modal_projector.", "multi_modal_projector."),
                       ("lm_head.", "language_model.lm_head."))


class Module:
    """One module of the checkpoint and its tensors (by leaf name: ``weight``, ``weight_scale``, ...)."""

    __slots__ = ("name", "params", "_primary", "_signature")

    def __init__(self, name: str) -> None:
        self.name = name
        self.params: dict[str, TensorInfo] = {}
        self._primary: TensorInfo | None | bool = False  # False: not looked up yet
        self._signature: tuple[tuple[str, str, tuple[int, ...]], ...] | None = None

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def parent(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else ""

    @property
    def primary(self) -> TensorInfo | None:
        if self._primary is False:
            self._primary = next((self.params[k] for k in PRIMARY if k in self.params), None)
        return self._primary  # type: ignore[return-value]

    @property
    def is_linear(self) -> bool:
        p = self.primary
        if p is None or len(p.shape) != 2:
            return False
        leaf = self.name.rpartition(".")[2]
        return leaf not in EMBEDDING_LEAVES and not leaf.startswith("positional_embedding")

    @property
    def is_quantized(self) -> bool:
        if QUANT_PARAMS.intersection(self.params):
            return True
        w = self.params.get("weight")
        return w is not None and w.dtype not in FLOAT_DTYPES

    def signature(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """(param, dtype, shape) of every tensor: modules with equal signatures get equal findings."""
        if self._signature is None:
            self._signature = tuple([(k, v.dtype, v.shape) for k, v in self.params.items()])
        return self._signature

    def disk_format(self) -> str:
        """What the tensors look like, independent of the config (used to compare fused shards)."""
        p = self.params
        if "qweight" in p:
            return f"qweight-{p['qweight'].dtype}"
        if "weight_packed" in p:
            return f"packed-{p['weight_packed'].dtype}" + ("-global" if "weight_global_scale" in p else "")
        w = p.get("weight")
        if w is None:
            return "none"
        if w.dtype in FLOAT_DTYPES and not self.is_quantized:
            return "16-bit"
        scale = p.get("weight_scale")
        return f"{w.dtype}" + (f"+scale-{scale.dtype}" if scale is not None else "") + \
            ("+scale2" if "weight_scale_2" in p else "")


class Layout:
    """Modules, linear layers, fused groups, experts and attention blocks of a checkpoint."""

    def __init__(self, tensors: Mapping[str, TensorInfo], *, tied_embeddings: bool = False) -> None:
        self.tensors = tensors
        self.tied_embeddings = tied_embeddings
        self._dims: dict[tuple[tuple, int | None, str | None], tuple[int, int] | None] = {}
        mods: dict[str, Module] = {}
        get = mods.get
        for name, info in tensors.items():
            parent, _, leaf = name.rpartition(".")
            mod = get(parent)
            if mod is None:
                mod = mods[parent] = Module(parent)
            mod.params[leaf] = info
        self.modules = mods

    @cached_property
    def linear(self) -> list[str]:
        return sorted(n for n, m in self.modules.items() if m.is_linear)

    @cached_property
    def quantized(self) -> list[str]:
        return sorted(n for n, m in self.modules.items() if m.is_quantized)

    @cached_property
    def has_lm_head(self) -> bool:
        return any(n == "lm_head" or n.endswith(".lm_head") for n in self.modules)

    @cached_property
    def virtual_modules(self) -> list[str]:
        """Modules vLLM creates without tensors on disk (``lm_head`` of tied embeddings)."""
        return ["lm_head"] if self.tied_embeddings and not self.has_lm_head else []

    @cached_property
    def multimodal_mapped(self) -> bool:
        return any(n.startswith("model.language_model.") for n in self.modules)

    def to_vllm(self, name: str) -> str:
        """The name vLLM gives a module (its multimodal prefix renames), identity for plain LMs."""
        if not self.multimodal_mapped:
            return name
        probe = name + "."
        for old, new in MULTIMODAL_PREFIXES:
            if probe.startswith(old):
                return (new + probe[len(old):])[:-1]
        return name

    @cached_property
    def fused(self) -> list[tuple[str, list[str]]]:
        """(vLLM's fused layer name, its on-disk shard modules) for every fused layer with >= 2 shards."""
        by_parent: dict[str, set[str]] = defaultdict(set)
        for n in self.linear:
            parent, _, leaf = n.rpartition(".")
            by_parent[parent].add(leaf)
        out = []
        for parent, leaves in by_parent.items():
            if _EXPERT_PARENT.match(parent):
                continue  # experts are packed into the MoE layer's w13/w2, not into per-expert gate_up_proj
            for fused_leaf, shards in FUSED_MODULES.items():
                present = [s for s in shards if s in leaves]
                if len(present) >= 2:
                    out.append((f"{parent}.{fused_leaf}" if parent else fused_leaf,
                                [f"{parent}.{s}" if parent else s for s in present]))
        return sorted(out)

    @cached_property
    def fused_shards(self) -> dict[str, list[str]]:
        """vLLM's fused layer name -> its on-disk shard modules."""
        return dict(self.fused)

    @cached_property
    def fused_of(self) -> dict[str, str]:
        """On-disk shard module -> the fused layer vLLM puts it in."""
        return {shard: fused for fused, shards in self.fused for shard in shards}

    @cached_property
    def fused_names(self) -> set[str]:
        return {fused for fused, _ in self.fused}

    @cached_property
    def experts(self) -> dict[str, list[str]]:
        """``...mlp.experts`` -> its per-expert linear modules (vLLM runs them as one RoutedExperts layer)."""
        out: dict[str, list[str]] = defaultdict(list)
        for n in self.linear:
            if ".experts." not in n:
                continue
            prefix, _, rest = n.rpartition(".experts.")
            idx, _, leaf = rest.partition(".")
            if idx.isdigit() and leaf and "." not in leaf:
                out[prefix + ".experts"].append(n)
        return dict(out)

    def expert_w13_pairs(self) -> Iterable[tuple[str, str]]:
        """(gate, up) module pairs of each expert: vLLM packs them into one w13 with one global scale."""
        names = set(self.linear)
        for members in self.experts.values():
            for n in members:
                parent, _, leaf = n.rpartition(".")
                for w1, w3 in EXPERT_W13:
                    if leaf == w1 and f"{parent}.{w3}" in names:
                        yield n, f"{parent}.{w3}"

    @cached_property
    def attention(self) -> list[str]:
        """Attention blocks that hold a KV cache (parents of q/k/v projections, vision and MTP excluded)."""
        out = set()
        for n, m in self.modules.items():
            if m.leaf in ATTN_LEAVES and m.primary is not None:
                parent = m.parent
                if not _NO_KV_CACHE.match(parent) and ".linear_attn" not in f".{parent}":
                    out.add(parent)
        return sorted(out)

    @cached_property
    def all_names(self) -> set[str]:
        """Every module name and every dotted prefix of one (``model``, ``model.layers``, ...)."""
        out: set[str] = set()
        for n in self.modules:
            parts = n.split(".")
            for i in range(1, len(parts) + 1):
                out.add(".".join(parts[:i]))
        return out | set(self.virtual_modules)

    @cached_property
    def match_names(self) -> list[str]:
        """Names patterns are matched against: on-disk modules, vLLM's names for them, fused layers."""
        names = set(self.modules) | set(self.virtual_modules) | self.fused_names
        if self.multimodal_mapped:
            names |= {self.to_vllm(n) for n in list(names)}
        return list(names)

    @cached_property
    def match_name_set(self) -> frozenset[str]:
        return frozenset(self.match_names)

    def in_out(self, name: str, packed_bits: int | None = None, packing: str | None = None) -> tuple[int, int] | None:
        """(out_features, in_features) of a linear module, undoing the packing of its primary weight.

        ``packed_bits`` is the bit width of int32-packed weights (compressed-tensors ``weight_packed``,
        GPTQ/AWQ ``qweight``: ``packing`` "awq" packs along the output, GPTQ along the input); uint8
        primaries are FP4, two values per byte.
        """
        m = self.modules.get(name)
        if m is None:
            return None
        # the answer depends only on the module's tensors (names, dtypes, shapes): share it across experts
        key = (m.signature(), packed_bits, packing)
        if key not in self._dims:
            self._dims[key] = self._in_out(name, packed_bits, packing)
        return self._dims[key]

    def _in_out(self, name: str, packed_bits: int | None, packing: str | None) -> tuple[int, int] | None:
        m = self.modules.get(name)
        if m is None or m.primary is None or len(m.primary.shape) != 2:
            return None
        rows, cols = m.primary.shape
        per_int = 32 // (packed_bits if packed_bits in (2, 4, 8) else 4)
        if "qweight" in m.params:
            return (cols * per_int, rows) if packing == "awq" else (cols, rows * per_int)
        if m.primary.dtype == "U8":
            return rows, cols * 2
        if m.primary.dtype == "I32" and "weight_packed" in m.params:
            return rows, cols * per_int
        return rows, cols


def is_row_parallel(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ROW_PARALLEL
