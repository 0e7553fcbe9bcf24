"""``plan()`` on real transformers architectures, each compared with the upstream recipe for its family.

Every model is built from transformers' own config class at tiny sizes (the real model class, so the real
module names), then planned twice, the two ways ``plan()`` reads a model:

* in memory (``plan(model)``: the names transformers gives the loaded model, which are the names
  llm-compressor's ``oneshot`` and ModelOpt's ``mtq.quantize`` match their ignore lists against), and
* from disk (``save_pretrained`` -> ``plan(directory)``: the names transformers writes, the names of published
  checkpoints and the names vLLM matches ``quantization_config.ignore`` against). transformers 5 renames some
  modules in memory (Mixtral's ``block_sparse_moe.gate`` is ``mlp.gate``, Nemotron-H's ``backbone`` is
  ``model``) and writes the original names back on save, so both views are needed.

MTP layers: transformers builds none (DeepSeek-V3, GLM-4.5, Qwen3-Next and Qwen3.5 checkpoints carry them, but
the model classes drop them on load), so the disk view adds them the way the published checkpoints name them:
an extra ``model.layers.<num_hidden_layers>`` decoder layer with ``eh_proj``/``enorm``/``hnorm``/``shared_head``
(DeepSeek-V3 and GLM-4.5, ``num_nextn_predict_layers: 1``; vLLM deepseek_mtp.py / glm4_moe_mtp.py), or an
``mtp.`` block with ``mtp.fc`` and ``mtp.layers.0`` (Qwen3-Next / Qwen3.5; vLLM qwen3_next_mtp.py).

Two checks per architecture:

1. Roles, found by structure rather than by name: every MoE router (a 2-D weight of ``num_experts`` x hidden
   rows) and shared-expert gate (one row), every ``lm_head``, every vision/projector module (anything outside
   the language model), every Gated-DeltaNet gate projection and every MTP module is in the plan's ignore list
   (checked through quantkit's own matcher), in both views.
2. Upstream: the modules the family's recipe leaves unquantized -- its ``ignore`` list matched with
   compressed-tensors' own ``is_match`` (``re:`` = ``re.match``; plain = exact name or class), plus, in memory,
   the 2-D modules that are not ``nn.Linear`` (llm-compressor targets ``Linear``, ModelOpt quantizes linear
   layers: transformers 5 routers are plain modules) -- are exactly the plan's, except where quantkit
   deliberately differs; each difference is listed in ``kept_here`` / ``quantized_here`` with the reason (the
   vLLM model code behind it) and must still match a module, so a stale exception fails too.

Sources (read with their line numbers): llm-compressor ``examples/`` at vllm-project/llm-compressor@ab1ba3e
(2026-08), and ModelOpt's default disabled quantizers, read at test time from the installed
``modelopt_recipes/configs/ptq/units/default_disabled_quantizers.yaml`` (nvidia-modelopt 0.47; the same list is
``_default_disabled_quantizer_cfg`` in modelopt/torch/quantization/config.py), matched with ``fnmatch`` on the
``<module>.weight_quantizer`` name as ModelOpt does.
"""

from __future__ import annotations

import fnmatch
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import pytest

from quantkit.checkpoint.reader import CheckpointView
from quantkit.planning.ignore import LM_HEAD, checkpoint_module_names, ignore_matcher
from quantkit.planning.planner import plan

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ct_match = pytest.importorskip("compressed_tensors.utils.match")

pytestmark = pytest.mark.produce

H, I, HEADS, KV, HD, V, E = 64, 96, 4, 2, 16, 128, 6  # E experts: no other weight has 6 rows
TEXT = {"hidden_size": H, "intermediate_size": I, "num_hidden_layers": 2, "num_attention_heads": HEADS,
        "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V}
MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 24}
QWEN_GDN = {"num_hidden_layers": 4, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
            "linear_key_head_dim": 8, "linear_value_head_dim": 8}
SIGLIP = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
QWEN_VIT = {"depth": 1, "hidden_size": 32, "intermediate_size": 48, "num_heads": 2, "out_hidden_size": H}

LLMC = "llm-compressor examples/"
MODELOPT = "ModelOpt default_disabled_quantizers.yaml"
MODELOPT_YAML = "modelopt_recipes/configs/ptq/units/default_disabled_quantizers.yaml"
MTP_KEPT = ("the MTP layer (model.layers.<num_hidden_layers>) stays 16-bit (quantkit rule mtp-layer): vLLM runs it "
            "only as the speculative-decoding draft (vllm/model_executor/models/glm4_moe_mtp.py, deepseek_mtp.py; the "
            "main model's load_weights skips it), as ModelOpt's default keeps 'mtp.*' and llm-compressor's "
            "Nemotron-3 example 're:mtp.layers.*'; the model-free example quantizes whatever the checkpoint holds")


@dataclass(frozen=True)
class Arch:
    """One architecture: its config (tiny), the upstream recipe it is compared with, and the deliberate gaps.

    ``ignore`` is the recipe's llm-compressor ignore list, or None for ModelOpt's default disabled quantizers;
    ``view`` says which names the recipe was written for. ``kept_here`` / ``quantized_here``: regex -> why quantkit
    keeps 16-bit what upstream quantizes / quantizes what upstream keeps. ``mtp``: how the published checkpoint
    stores its MTP layer (``layers``: an extra decoder layer, ``mtp``: an ``mtp.`` block), added on disk.
    """

    config: Callable[[], Any]
    source: str
    ignore: tuple[str, ...] | None = None
    view: str = "memory"
    kept_here: Mapping[str, str] = field(default_factory=dict)
    quantized_here: Mapping[str, str] = field(default_factory=dict)
    mtp: str | None = None
    #: compare the model of another entry (the same build) with a second upstream recipe
    same_model_as: str | None = None


def _t(cls: str, **kw: Any) -> Callable[[], Any]:
    return lambda: getattr(transformers, cls)(**kw)


ARCHS: dict[str, Arch] = {
    "llama": Arch(_t("LlamaConfig", **TEXT),
                  LLMC + "quantization_w8a8_fp8/llama3_example.py:18", ("lm_head",)),
    "qwen3": Arch(_t("Qwen3Config", **TEXT),
                  LLMC + "quantization_w4a16_fp4/nvfp4/qwen3_example.py:15", ("lm_head",)),
    "phi3": Arch(_t("Phi3Config", **{k: v for k, v in TEXT.items() if k != "head_dim"}, pad_token_id=None),
                 MODELOPT),
    "qwen3_moe": Arch(_t("Qwen3MoeConfig", **TEXT, **MOE, num_experts=E),
                      LLMC + "quantization_w4a4_fp4/qwen_30b_a3b.py:60", ("lm_head", "re:.*mlp.gate$")),
    "mixtral": Arch(_t("MixtralConfig", **TEXT, num_local_experts=E, num_experts_per_tok=2),
                    LLMC + "quantizing_moe/mixtral_example.py:58", ("lm_head", "re:.*mlp.gate")),
    "phimoe": Arch(_t("PhimoeConfig", **TEXT, num_local_experts=E, num_experts_per_tok=2), MODELOPT),
    "minimax_m2": Arch(_t("MiniMaxM2Config", **TEXT, num_local_experts=E, num_experts_per_tok=2), MODELOPT),
    "deepseek_v3": Arch(
        _t("DeepseekV3Config", **TEXT, **MOE, n_routed_experts=E, first_k_dense_replace=1, n_group=1, topk_group=1,
           n_shared_experts=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
           v_head_dim=8),
        LLMC + "quantizing_moe/deepseek_r1_example.py:69", ("lm_head", "re:.*mlp.gate$"), mtp="layers"),
    # GLM-4.5/4.6 (glm4_moe): the model-free FP8 example matches checkpoint (disk) names
    "glm4_moe": Arch(
        _t("Glm4MoeConfig", **TEXT, **MOE, n_routed_experts=E, first_k_dense_replace=1, n_group=1, topk_group=1,
           n_shared_experts=1),
        LLMC + "model_free_ptq/glm_4.6_fp8_block.py:13", ("re:.*gate$", "lm_head", "model.embed_tokens"),
        view="disk", mtp="layers",
        kept_here={r"model\.layers\.2\.": MTP_KEPT}),  # num_hidden_layers=2: layer 2 is the MTP layer
    "gpt_oss": Arch(_t("GptOssConfig", **TEXT, num_local_experts=E, num_experts_per_tok=2,
                       layer_types=["sliding_attention", "full_attention"]), MODELOPT),
    "qwen3_next": Arch(
        _t("Qwen3NextConfig", **{**TEXT, **QWEN_GDN}, **MOE, num_experts=E, shared_expert_intermediate_size=24),
        LLMC + "quantization_w8a8_fp8/qwen3_next_example.py:20",
        ("lm_head", "re:.*mlp.gate$", "re:.*mlp.shared_expert_gate$", "re:.*linear_attn.*"), mtp="mtp"),
    "qwen3_5": Arch(
        _t("Qwen3_5Config", text_config={**TEXT, **QWEN_GDN}, vision_config=QWEN_VIT),
        LLMC + "quantization_w4a16_fp4/nvfp4/qwen3.5_example.py:23", ("lm_head", "re:.*visual.*", "re:.*linear_attn.*"),
        mtp="mtp"),
    "qwen3_5_moe": Arch(
        _t("Qwen3_5MoeConfig", text_config={**TEXT, **QWEN_GDN, **MOE, "num_experts": E,
                                            "shared_expert_intermediate_size": 24}, vision_config=QWEN_VIT),
        LLMC + "quantization_w4a4_fp4/qwen3_5_example.py:23",
        ("re:.*lm_head", "re:visual.*", "re:model.visual.*", "re:.*mlp.gate$", "re:.*embed_tokens$",
         "re:.*shared_expert_gate$", "re:.*linear_attn.*"), mtp="mtp"),
    "qwen3_vl_moe": Arch(
        _t("Qwen3VLMoeConfig", text_config={**TEXT, **MOE, "num_experts": E, "decoder_sparse_step": 1},
           vision_config={**QWEN_VIT, "deepstack_visual_indexes": [0]}),
        LLMC + "quantization_w8a8_fp8/qwen3_vl_moe_fp8_example.py:24",
        ("re:.*lm_head", "re:model.visual.*", "re:.*mlp.gate$")),
    "qwen2_5_vl": Arch(
        _t("Qwen2_5_VLConfig", text_config={**TEXT, "model_type": "qwen2_5_vl_text",
                                            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
           vision_config={**QWEN_VIT, "fullatt_block_indexes": [0]}),
        LLMC + "quantization_w8a8_fp8/qwen_2_5_vl_example.py:20", ("lm_head", "re:visual.*", "re:model.visual.*")),
    "gemma3": Arch(
        _t("Gemma3Config", text_config={**TEXT, "sliding_window": 16}, vision_config=SIGLIP, mm_tokens_per_image=4),
        LLMC + "multimodal_vision/gemma3_example.py:26",
        ("lm_head", r"re:model\.vision_tower.*", r"re:model\.multi_modal_projector.*")),
    "mistral3": Arch(
        _t("Mistral3Config", text_config={**TEXT, "model_type": "mistral"},
           vision_config={**SIGLIP, "head_dim": 16}),
        LLMC + "multimodal_vision/mistral3_example.py:48",
        ("re:.*lm_head", "re:.*vision_tower.*", "re:.*multi_modal_projector.*")),
    "llama4": Arch(
        _t("Llama4Config", text_config={**TEXT, "num_local_experts": E, "num_experts_per_tok": 1,
                                        "intermediate_size_mlp": I, "interleave_moe_layer_step": 1},
           vision_config={**SIGLIP, "vision_output_dim": 32, "projector_input_dim": 32, "projector_output_dim": 32}),
        LLMC + "quantization_w8a8_fp8/llama4_fp8_block_example.py:21",
        ("re:.*lm_head", "re:.*self_attn", "re:.*router", "re:.*vision_model.*", "re:.*multi_modal_projector.*",
         "Llama4TextAttention"),
        quantized_here={r".*language_model\.model\.layers\.\d+\.self_attn\.[qkvo]_proj$":
                        "the example keeps Llama-4 attention 16-bit as an accuracy choice; vLLM quantizes it "
                        "(vllm/model_executor/models/llama4.py Llama4Attention: qkv_proj = QKVParallelLinear(..., "
                        "quant_config=quant_config), o_proj = RowParallelLinear(..., quant_config)), and "
                        "quantkit quantizes attention in every other family too"}),
    # Granite-4.0-H: the example is written for the in-memory names (transformers 5: block_sparse_moe.router)
    "granitemoehybrid": Arch(
        _t("GraniteMoeHybridConfig", **TEXT, layer_types=["mamba", "attention"], num_local_experts=E,
           num_experts_per_tok=2, shared_intermediate_size=48, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1,
           mamba_d_state=8, mamba_expand=1),
        LLMC + "quantization_w8a8_fp8/granite4_example.py:19", ("lm_head", "re:.*block_sparse_moe.router")),
    # GraniteMoE: the example predates transformers 5 and names the router as stored (router.layer): disk names
    "granitemoe": Arch(
        _t("GraniteMoeConfig", **TEXT, num_local_experts=E, num_experts_per_tok=2),
        LLMC + "quantizing_moe/granite_moe_example.py:56", ("lm_head", "re:.*.block_sparse_moe.router.layer"),
        view="disk"),
    "nemotron_h": Arch(
        _t("NemotronHConfig", **{k: v for k, v in TEXT.items() if k != "num_hidden_layers"},
           hybrid_override_pattern="M*-E", mamba_num_heads=4, mamba_head_dim=16, n_groups=1, ssm_state_size=8,
           n_routed_experts=E, num_experts_per_tok=2, moe_intermediate_size=24,
           moe_shared_expert_intermediate_size=24),
        MODELOPT),
    "jamba": Arch(
        _t("JambaConfig", **TEXT, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
           expert_layer_offset=1, num_experts=E, num_experts_per_tok=2, mamba_d_state=8, mamba_expand=1,
           use_mamba_kernels=False),
        MODELOPT,
        kept_here={r".*\.mamba\.(in_proj|x_proj|dt_proj|out_proj)$":
                   "Jamba's Mamba-1 mixer: vLLM builds every projection without a quant config "
                   "(vllm/model_executor/layers/mamba/mamba_mixer.py MambaMixer, used by jamba.py "
                   "JambaMambaDecoderLayer), so quantized tensors would not load"}),
    "falcon_h1": Arch(
        _t("FalconH1Config", **TEXT, mamba_n_heads=4, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8,
           mamba_d_ssm=64),
        MODELOPT),
}
# The hybrid Qwen families against ModelOpt too: it keeps only the Gated-DeltaNet gates (in_proj_a/in_proj_b) and
# conv1d of linear_attn, quantkit the whole block.
VLLM_LINEAR_ATTN = ("Gated-DeltaNet blocks stay 16-bit whole (quantkit rule linear-attn; vllm#40252: vLLM served "
                    "garbage with them quantized), as llm-compressor's Qwen3-Next/Qwen3.5 examples do")
for _base in ("qwen3_next", "qwen3_5_moe"):
    ARCHS[f"{_base}@modelopt"] = Arch(ARCHS[_base].config, MODELOPT, same_model_as=_base,
                                      kept_here={r".*\.linear_attn\.(in_proj_qkvz|in_proj_qkv|in_proj_z|out_proj)$":
                                                 VLLM_LINEAR_ATTN})


def _modelopt_patterns() -> list[str]:
    spec = importlib_util.find_spec("modelopt_recipes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-modelopt (modelopt_recipes) is not installed: the ModelOpt default list is unavailable")
    yaml = pytest.importorskip("yaml")
    path = Path(next(iter(spec.submodule_search_locations))) / MODELOPT_YAML.split("/", 1)[1]
    entries = yaml.safe_load(path.read_text())
    return [e["quantizer_name"] for e in entries if e.get("enable") is False and "parent_class" not in e]


@dataclass
class Built:
    """One architecture built, planned in memory and from disk."""

    model: Any
    memory: dict[str, tuple[int, ...]]
    memory_ignore: tuple[str, ...]
    disk: dict[str, tuple[int, ...]]
    disk_ignore: tuple[str, ...]
    mtp_modules: list[str]


def _module(model: Any, name: str) -> Any:
    """The module owning ``name`` (a fused 3-D expert tensor is owned by its parent module)."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        return model.get_submodule(name.rpartition(".")[0])


def _add_mtp(directory: Path, kind: str) -> list[str]:
    """Add the MTP tensors the published checkpoint has and transformers does not build; return their modules."""
    from safetensors.torch import save_file

    view = CheckpointView(directory)
    config = dict(view.config)
    shapes = {n: tuple(t.shape) for n, t in view.tensors.items()}
    view.close()
    text = config.get("text_config") or config
    n = int(text["num_hidden_layers"])
    new: dict[str, tuple[int, ...]] = {}
    if kind == "layers":  # DeepSeek-V3 / GLM-4.5: model.layers.<n> = a full (MoE) decoder layer + the MTP glue
        last = f"model.layers.{n - 1}."
        new.update({f"model.layers.{n}." + k[len(last):]: s for k, s in shapes.items() if k.startswith(last)})
        new.update({f"model.layers.{n}.eh_proj.weight": (H, 2 * H), f"model.layers.{n}.enorm.weight": (H,),
                    f"model.layers.{n}.hnorm.weight": (H,), f"model.layers.{n}.shared_head.head.weight": (V, H),
                    f"model.layers.{n}.shared_head.norm.weight": (H,), f"model.layers.{n}.embed_tokens.weight": (V, H)})
        config["num_nextn_predict_layers"] = 1
    else:  # Qwen3-Next / Qwen3.5: mtp.fc, mtp.layers.0 (a full-attention MoE/dense layer), mtp norms
        full = next(i for i, t in enumerate(text["layer_types"]) if t == "full_attention")
        prefix = next(k for k in shapes if re.search(rf"layers\.{full}\.self_attn\.q_proj", k)).split("self_attn")[0]
        new.update({"mtp.layers.0." + k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix)})
        new.update({"mtp.fc.weight": (H, 2 * H), "mtp.norm.weight": (H,), "mtp.pre_fc_norm_embedding.weight": (H,),
                    "mtp.pre_fc_norm_hidden.weight": (H,)})
        if "text_config" in config:
            config["text_config"] = {**config["text_config"], "mtp_num_hidden_layers": 1}
        else:
            config["mtp_num_hidden_layers"] = 1
    save_file({k: torch.zeros(s, dtype=torch.bfloat16) for k, s in new.items()}, str(directory / "mtp.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return checkpoint_module_names(new)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    cache: dict[str, Built] = {}

    def get(arch: str) -> Built:
        arch = ARCHS[arch].same_model_as or arch
        if arch not in cache:
            spec = ARCHS[arch]
            config = spec.config()
            auto = (transformers.AutoModelForImageTextToText if hasattr(config, "vision_config")
                    else transformers.AutoModelForCausalLM)
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = auto.from_config(config)
            directory = tmp_path_factory.mktemp(arch)
            model.save_pretrained(directory)
            mtp = _add_mtp(directory, spec.mtp) if spec.mtp else []
            memory = {n: tuple(p.shape) for n, p in model.named_parameters()}
            view = CheckpointView(directory)
            disk = {n: tuple(t.shape) for n, t in view.tensors.items()}
            view.close()
            cache[arch] = Built(model, memory, plan(model, "h100").ignore, disk, plan(directory, "h100").ignore, mtp)
        return cache[arch]

    return get


def test_twenty_architectures_from_transformers() -> None:
    assert len([a for a in ARCHS.values() if a.same_model_as is None]) >= 20
    for name in ("granitemoehybrid", "nemotron_h", "jamba", "falcon_h1", "qwen3_next", "qwen3_5", "qwen3_5_moe",
                 "deepseek_v3", "gpt_oss", "llama4", "gemma3", "glm4_moe"):
        assert name in ARCHS


_TEXT_MODULE = re.compile(r"^(backbone\.|mtp\.)|(^|.*\.)(language_model\.|lm_head$)|^(model\.)?(layers|norm)\.")


def _roles(shapes: Mapping[str, tuple[int, ...]], mtp: list[str]) -> dict[str, list[str]]:
    """Modules by role, found from shapes and the model's structure (not from quantkit's rule names)."""
    names = checkpoint_module_names(shapes)
    out: dict[str, list[str]] = {"router": [], "lm_head": [], "vision": [], "linear-attn gate": [], "mtp": mtp}
    for n in names:
        shape = shapes.get(n + ".weight", ())
        if len(shape) == 2 and shape[1] == H and shape[0] in (E, 1):
            out["router"].append(n)  # E rows: an MoE router; 1 row: a shared-expert gate
        if LM_HEAD.match(n):
            out["lm_head"].append(n)
        if not _TEXT_MODULE.match(n):
            out["vision"].append(n)
        if re.match(r".*\.linear_attn\.in_proj_(a|b|ba)$", n):
            out["linear-attn gate"].append(n)  # Gated DeltaNet decay (a) and beta (b) gates
    return out


@pytest.mark.parametrize("arch", [a for a, spec in ARCHS.items() if spec.same_model_as is None])
def test_plan_covers_routers_heads_vision_mtp_and_gates(arch: str, built: Callable[[str], Built]) -> None:
    b = built(arch)
    for view, shapes, ignore, mtp in (("memory", b.memory, b.memory_ignore, []),
                                      ("disk", b.disk, b.disk_ignore, b.mtp_modules)):
        ignored = ignore_matcher(ignore)
        roles = _roles(shapes, mtp)
        for role, modules in roles.items():
            missed = [m for m in modules if not ignored(m)]
            assert not missed, f"{arch} ({view}): {role} modules not in the plan's ignore list {ignore}: {missed}"
        # tied embeddings: no lm_head tensor, but the bare entry is still planned (transformers/vLLM create one)
        assert roles["lm_head"] or "lm_head" in ignore
        if ARCHS[arch].mtp and view == "disk":
            assert mtp and all(ignored(m) for m in mtp)
    # each role the architecture has was found (so an empty role list cannot pass for the wrong reason)
    config = str(ARCHS[arch].config().to_dict())
    found = _roles(b.disk, b.mtp_modules)
    expected = {"router": any(k in config for k in ("'num_local_experts'", "'num_experts'", "'n_routed_experts'")),
                "vision": "'vision_config'" in config, "linear-attn gate": "'linear_num_key_heads'" in config,
                "mtp": ARCHS[arch].mtp is not None}
    assert {role: bool(found[role]) for role in expected} == expected, found


def _upstream_kept(arch: str, b: Built) -> tuple[list[str], set[str]]:
    """The modules of the recipe's view and those of them the upstream recipe leaves unquantized."""
    spec = ARCHS[arch]
    shapes = b.memory if spec.view == "memory" else b.disk
    names = checkpoint_module_names(shapes)
    kept: set[str] = set()
    patterns = _modelopt_patterns() if spec.ignore is None else []
    on_disk = torch.nn.Linear(1, 1)  # disk names have no module: only name entries can match
    for n in names:
        if spec.ignore is not None:
            module = _module(b.model, n) if spec.view == "memory" else on_disk
            hit = ct_match.is_match(n, module, list(spec.ignore))
        else:
            hit = any(fnmatch.fnmatch(f"{n}.weight_quantizer", p) for p in patterns)
        if spec.view == "memory" and len(shapes.get(n + ".weight", shapes.get(n, ()))) == 2:
            # upstream quantizes nn.Linear only: a 2-D weight of another module (a router) stays 16-bit
            hit = hit or not isinstance(_module(b.model, n), torch.nn.Linear)
        if hit:
            kept.add(n)
    return names, kept


@pytest.mark.parametrize("arch", list(ARCHS))
def test_plan_matches_the_upstream_recipe(arch: str, built: Callable[[str], Built]) -> None:
    spec = ARCHS[arch]
    b = built(arch)
    names, upstream = _upstream_kept(arch, b)
    ignored = ignore_matcher(b.memory_ignore if spec.view == "memory" else b.disk_ignore)
    ours = {n for n in names if ignored(n)}
    for label, extra, allowed in (("keeps 16-bit what upstream quantizes", ours - upstream, spec.kept_here),
                                  ("quantizes what upstream keeps 16-bit", upstream - ours, spec.quantized_here)):
        unexplained = sorted(n for n in extra if not any(re.match(rx, n) for rx in allowed))
        assert not unexplained, f"{arch}: quantkit {label} ({spec.source}): {unexplained}"
        for rx in allowed:  # a documented difference that no longer happens is stale
            assert any(re.match(rx, n) for n in extra), f"{arch}: documented difference {rx!r} matches nothing"
    assert upstream, f"{arch}: the upstream recipe keeps nothing 16-bit here; wrong view or names"
