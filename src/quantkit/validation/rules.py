"""The validator's rule table: what each check looks at, why vLLM cares, and how to fix a failure.

Rules are data. Each entry has a stable ``id`` (findings, the CLI's ``--json`` output and docs use it), its
number in the issue that introduced the validator, the upstream report that motivated it and the usual fix.
The check that implements a rule lives in ``quantkit/validation/checks/`` and registers under the same id;
a test proves every rule has exactly one check and every check a rule. The rule list in
``docs/validation.md`` is :func:`markdown` verbatim (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    """One validation rule.

    ``severity`` is the usual severity of its findings; a check may lower it to a warning for a milder
    variant (a pattern that matches nothing, a fallback kernel rather than a refusal) and says so in the
    message.
    """

    id: str
    number: int
    title: str
    what: str
    why: str
    upstream: tuple[str, ...]
    fix: str
    severity: Severity = "error"


RULES: dict[str, Rule] = {r.id: r for r in [
    Rule("quant-method-known", 1, "vLLM knows the quantization method",
         "`quant_method` of the quantization config is a method vLLM registers (compressed-tensors, modelopt, "
         "modelopt_fp4, awq, gptq, fp8, ...); deprecated methods are a warning.",
         "vLLM raises `Unknown quantization method` before loading a single weight.",
         ("vllm/model_executor/layers/quantization/__init__.py (QuantizationMethods)",),
         "Re-export with llm-compressor (compressed-tensors) or ModelOpt, or correct the `quant_method` string."),
    Rule("modelopt-algo-loadable", 2, "ModelOpt quant_algo is one vLLM loads",
         "A ModelOpt checkpoint's `quant_algo` is one of vLLM's ModelOpt algorithms (FP8, "
         "FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8, MIXED_PRECISION).",
         "INT4_AWQ (W4A16_AWQ), W4A8_AWQ, INT8 SmoothQuant (W8A8_SQ_PER_CHANNEL) and NVFP4_AWQ exports are "
         "rejected by vLLM's ModelOpt loader: `ModelOpt currently only supports: [...]`.",
         ("vllm#46929", "vllm#45333"),
         "Produce that scheme with llm-compressor instead (compressed-tensors W4A16 / W8A8), or use a ModelOpt "
         "config vLLM loads (FP8_DEFAULT_CFG, FP8_PER_CHANNEL_PER_TOKEN_CFG, NVFP4_DEFAULT_CFG, W4A16_NVFP4_CFG)."),
    Rule("nvfp4-sidecar-fields", 3, "NVFP4 hf_quant_config.json is complete",
         "An NVFP4 `hf_quant_config.json` has `group_size`, `kv_cache_quant_algo` and `exclude_modules` "
         "(null values are fine, missing keys are not).",
         "vLLM's ModelOptNvFp4Config raises `NVFP4 quantization requires the following fields in "
         "hf_quant_config.json` when it reads the sidecar.",
         ("vllm/model_executor/layers/quantization/modelopt.py (ModelOptNvFp4Config._from_config)",),
         "Add the missing keys to `hf_quant_config.json` (`\"kv_cache_quant_algo\": null` when there is no KV "
         "quantization), or re-export with a current ModelOpt."),
    Rule("quant-config-source", 4, "Exactly one quantization config",
         "The checkpoint declares its quantization in exactly one place vLLM reads (config.json "
         "`quantization_config`, or an `hf_quant_config.json` sidecar), and where it has both they agree.",
         "With none, vLLM loads packed/FP8 weights as if they were 16-bit (a crash or garbage); with two that "
         "disagree, vLLM (config.json first) and other runtimes (the sidecar) serve different models.",
         ("vllm/transformers_utils/config.py (quantization_config, then hf_quant_config.json)",),
         "Keep one source: write `quantization_config` into config.json (or make the sidecar match it)."),
    Rule("pattern-valid", 5, "re: patterns compile and match",
         "Every `re:` ignore/target pattern compiles and matches at least one module with `re.match` "
         "(anchored at the start of the name); a pattern without a leading `.*` (or an explicit `^`) is "
         "flagged because it only matches names that start with it.",
         "compressed-tensors and vLLM use `re.match`: `re:mlp.gate$` never matches "
         "`model.layers.0.mlp.gate`, so the layer meant to stay 16-bit is quantized.",
         ("compressed_tensors/utils/match.py", "vllm#40252"),
         "Start patterns with `.*` (e.g. `re:.*mlp\\.gate$`) or anchor them with `^` on purpose; fix or "
         "remove patterns that match nothing."),
    Rule("ignore-names-exist", 6, "Ignore entries name real modules",
         "Every plain ignore/exclude entry names a module of this checkpoint after vLLM's name mapping "
         "(fused names such as `qkv_proj`, multimodal prefixes such as `language_model.model.`). An entry that "
         "names nothing is a warning (it does nothing in vLLM); an empty ModelOpt entry is an error.",
         "An entry written for another naming (split `linear_attn.in_proj_a` vs the fused on-disk `in_proj_ba`, "
         "nvidia's DeepSeek-R1-FP4 excluding `self_attn.q_proj` where R1 has `q_a_proj`/`q_b_proj`) ignores "
         "nothing: vLLM quantizes what it meant to skip. If that layer is stored 16-bit, config-matches-disk "
         "reports the error; if stored quantized, keep-16bit does where it matters. An empty ModelOpt entry is a "
         "substring of every name and excludes every layer.",
         ("vllm#40252", "vllm/model_executor/layers/quantization/modelopt.py (is_layer_excluded: substring and "
          "fnmatch matching)"),
         "Use the module names the checkpoint stores (`quantkit plan` prints them), or a `re:` pattern; drop "
         "entries for modules the model does not have.", severity="warning"),
    Rule("fused-shards-consistent", 7, "Fused shards agree",
         "Shards vLLM fuses into one layer (q/k/v -> qkv_proj, gate/up -> gate_up_proj, in_proj_qkv/z, "
         "in_proj_b/a, the experts of one MoE layer) are all ignored or none, share one scheme and are "
         "stored in the same format.",
         "vLLM raises `Found different quantization schemes for the shards` (compressed-tensors) or `Detected "
         "some but not all shards of ... are quantized` (fp8, ModelOpt, ...: quant_utils.is_layer_skipped), "
         "or picks the first shard's "
         "scheme for all of them and dequantizes the others wrongly.",
         ("vllm#47473",),
         "Ignore all shards of a fused layer or none, and put them in the same config group."),
    Rule("scheme-resolves", 8, "Every config group is a scheme vLLM implements",
         "Each compressed-tensors config group (weights, input/output activations, format) maps to a vLLM "
         "scheme class; the KV-cache scheme is one vLLM supports.",
         "vLLM raises `No compressed-tensors compatible scheme was found` (or a pydantic error) at load.",
         ("vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py", "vllm#54809"),
         "Use a preset scheme (FP8_DYNAMIC, W4A16, W8A8, NVFP4, NVFP4A16, FP8_BLOCK, ...) for the group."),
    Rule("hardware-capability", 9, "The target GPU runs the scheme",
         "With `--hardware`, the target's compute capability meets the method's and the scheme's minimum "
         "(FP8 W8A8 needs SM 8.9; NVFP4 W4A4 runs natively from SM 10.0 and falls back to Marlin weight-only "
         "below); a fallback kernel is a warning that names it.",
         "vLLM raises `Minimum capability: N. Current capability: M`, or silently takes a slower path.",
         ("vllm/model_executor/layers/quantization/base_config.py (get_min_capability)",),
         "Pick a scheme the target runs (`quantkit hardware` lists them) or another `--hardware`."),
    Rule("marlin-eligible", 10, "W4A16 runs on Marlin",
         "A 4/8-bit integer weight-only layer fits vLLM's Marlin kernel on the target: group size in "
         "{-1, 32, 64, 128}, symmetric for GPTQ, in_features % 128 and out_features % 64 per tensor-parallel "
         "shard, group dividing the shard's in_features.",
         "Otherwise vLLM uses a slower kernel (Exllama needs fp16 activations, Triton W4A16 is slower), or "
         "pads the Marlin tiles (newer vLLM), costing memory and speed.",
         ("vllm/model_executor/layers/quantization/utils/marlin_utils.py",),
         "Use group size 128 (or 64/32 where 128 does not divide the layer) and symmetric weights."),
    Rule("group-size-divides", 11, "Group size divides every input dimension",
         "The group size of each quantized layer divides its in_features, and, with "
         "`--tensor-parallel-size`, the in_features of each shard of a row-parallel layer (o_proj, "
         "down_proj, ...).",
         "vLLM refuses to load (`input_size_per_partition ... not divisible by group_size`) or the scales do "
         "not line up with the weights.",
         ("vllm/model_executor/layers/quantization/utils/marlin_utils.py (verify_group_size_divides_partition)",),
         "Choose a group size that divides every quantized layer's input (quantkit plan picks one), or a "
         "smaller tensor-parallel size."),
    Rule("keep-16bit", 12, "Sensitive layers are not quantized",
         "lm_head, MoE routers and gates (`mlp.gate`, `block_sparse_moe.gate`, `router`, `router.layer`, "
         "`mixer.gate`, `gate.wg`, `shared_expert_gate`), linear-attention `conv1d` / `in_proj_a` / `in_proj_b`, "
         "Mamba `mixer.conv1d` and vision towers are stored 16-bit (patterns from quantkit's ignore table; other "
         "linear-attention/Mamba projections and `mtp.*` heads are a warning).",
         "vLLM builds routers and gates with `quant_config=None` (deepseek_v2.py DeepseekV2MoE via GateLinear, "
         "qwen3_moe.py Qwen3MoeSparseMoeBlock, qwen2_moe.py Qwen2MoeSparseMoeBlock, mixtral.py MixtralMoE, "
         "granitemoe.py GraniteMoeMoE, which loads Granite's `block_sparse_moe.router.layer` as its gate, "
         "dbrx.py DbrxRouter, jamba.py JambaMoE, llama4.py Llama4MoE, nemotron_h.py NemotronHMoE): quantized "
         "router bytes are read as 16-bit values or rejected as unexpected tensors. Quantizing a recurrence ruins "
         "it. MTP heads load with the config (only for speculative decoding), so for them it is a preference.",
         ("llm-compressor#2163", "llm-compressor#2714", "vllm#40252",
          "vllm/model_executor/models/granitemoe.py (GraniteMoeMoE, load_weights)",
          "vllm/model_executor/layers/fused_moe/router/gate_linear.py (GateLinear: quant_config=None)"),
         "Add the layers to the ignore list (quantkit's `build_ignore` emits the right patterns) and "
         "re-quantize."),
    Rule("nvfp4-global-scales", 13, "NVFP4 fused shards share a global scale",
         "In NVFP4 checkpoints, q/k/v (and gate/up, and each expert's w1/w3) carry equal global scales "
         "(`weight_global_scale` / `weight_scale_2`). The only rule that reads tensor data: 4 bytes per scale.",
         "vLLM fuses these shards with one global scale; shards quantized against another scale "
         "dequantize wrong.",
         ("vllm#54974", "vllm#39764"),
         "Re-export with a producer that unifies fused global scales (llm-compressor >= 0.9, ModelOpt "
         ">= 0.39 do), or requantize the shards with the shared (max) global scale."),
    Rule("scale-tensors", 14, "Quantized weights have plausible scales",
         "Every quantized weight has the scale tensors its format needs with plausible shapes and dtypes, "
         "and no producer-internal tensor leaked (`*_amax`, `*_double_scale`, `*_quantizer.*`).",
         "vLLM raises KeyError on unexpected tensors, or loads scales of the wrong shape into the kernels.",
         ("vllm#38980",),
         "Re-export the checkpoint with the producer's export function (compressed save / "
         "`export_hf_checkpoint`), not a raw state_dict."),
    Rule("kv-cache-scales", 15, "A KV-cache scheme has its scales",
         "A declared KV-cache scheme (compressed-tensors `kv_cache_scheme`, ModelOpt `kv_cache_quant_algo`) "
         "has `k_scale` and `v_scale` for every attention layer; on an MLA model it is a warning about "
         "multi-turn corruption with FP8 KV.",
         "Missing scales default to 1.0, which clips or wastes the FP8 range; FP8 KV on MLA corrupts "
         "multi-turn output.",
         ("vllm#54623", "vllm#38652"),
         "Re-calibrate with the KV scheme so every attention layer gets scales, or drop the KV scheme; on "
         "MLA models serve with a 16-bit KV cache."),
    Rule("index-consistent", 16, "Safetensors index matches the shards",
         "Every shard the index lists exists, every tensor it lists is in that shard's header, no tensor is "
         "stored twice, and every tensor's byte range has the size its dtype and shape imply and fits in "
         "the file.",
         "vLLM fails mid-load on a missing shard or tensor, or reads garbage from a truncated file.",
         ("safetensors format", "vllm/model_executor/model_loader/weight_utils.py"),
         "Re-download the missing or truncated shards, or re-export the checkpoint."),
    Rule("tied-embeddings-modelopt", 17, "ModelOpt + tied embeddings on old vLLM",
         "A ModelOpt checkpoint of a model with `tie_word_embeddings: true` is an error for vLLM versions up "
         "to 0.24 (the installed vLLM, `--vllm-version`, or the newest known).",
         "vLLM <= 0.24 raises NotImplementedError in `tie_weights` (reproduced on an H100 with vLLM 0.24.0).",
         ("vllm#45543", "vllm PR #45544"),
         "Write `lm_head.weight` explicitly (a copy of the embedding) and set `tie_word_embeddings: false`, or "
         "serve with vLLM >= 0.25."),
    Rule("config-matches-disk", 18, "The config describes the tensors on disk",
         "Every layer the quantization config quantizes is stored quantized, and every layer it leaves "
         "16-bit is stored 16-bit. Layers vLLM builds unquantized whatever the config says (MoE routers and "
         "gates, `conv1d`, the MTP `eh_proj`) stored 16-bit are no error (a warning where the config alone "
         "would quantize a router); a mismatch inside an MTP head (`mtp.*`, DeepSeek's "
         "`model.layers.<num_hidden_layers>`) is a warning.",
         "vLLM builds each layer from the config: a mismatch either fails with missing/unexpected tensors "
         "or, worse, loads 16-bit weights into quantized parameters and serves garbage. vLLM's main model skips "
         "MTP weights (deepseek_v2.py DeepseekV2ForCausalLM.load_weights, qwen3_next.py "
         "Qwen3NextModel.load_weights) and loads them only for MTP speculative decoding; DeepSeek-V3's own FP8 "
         "release leaves its routers BF16 with no ignore entry and serves fine.",
         ("vllm#40252", "vllm/model_executor/models/deepseek_v2.py (DeepseekV2MoE, load_weights)",
          "vllm/model_executor/models/deepseek_mtp.py (DeepSeekMultiTokenPredictorLayer)"),
         "Make the ignore list / targets describe what was quantized (re-export with the producer); list "
         "routers in the ignore list so other engines read the config the same way."),
    Rule("published-complete", 19, "A published checkpoint, not a leftover",
         "The directory is not a quantkit staging directory (`.NAME.quantkit-tmp-PID-...`, left behind when a "
         "run is killed before it publishes), and it holds a tokenizer (and, where quantkit.json says quantkit "
         "wrote it, everything quantkit publishes). Warnings only: headers alone cannot tell a finished write.",
         "A staging directory can pass every other rule while its writer was killed mid-save; vLLM needs a "
         "tokenizer beside the weights unless `--tokenizer` names one.",
         ("quantkit issue 16 (a SIGKILL left a hidden staging checkpoint that validated OK)",),
         "Use the published output directory and delete the staging one (the next `quantkit quantize` to the "
         "same output removes those whose process is dead); copy the tokenizer files from the source model.",
         severity="warning"),
    Rule("config-schema-known", 20, "The target vLLM's reader knows every config field",
         "A compressed-tensors `quantization_config` uses only fields, enum values and `actorder`/`strategy` pairs "
         "that the compressed-tensors the target vLLM pins accepts (read from the serve environment's models, else "
         "quantkit's table per vLLM release), and says which version wrote it (`version`); a ModelOpt export's `kv_cache_quant_algo` and "
         "per-layer `quant_algo`s are ones that vLLM release reads (`producer.version` is named).",
         "vLLM validates each config group's args with its own QuantizationArgs (extra='forbid'): one field a "
         "newer compressed-tensors writes (`scale_dtype`, `zp_dtype`) or an enum value it does not know fails the "
         "load. Top-level keys vLLM reads by key and drops silently: an error where that changes what the tensors "
         "mean (`moe_sparsity_config`), else a warning. An unknown ModelOpt KV algorithm falls back to a 16-bit "
         "KV cache; an unknown per-layer algorithm builds the layer unquantized.",
         ("llm-compressor#2057", "llm-compressor#2234", "llm-compressor#2805",
          "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py "
          "(_quantization_scheme_map_from_config: QuantizationArgs.model_validate)",
          "vllm/utils/torch_utils.py (get_kv_cache_quant_algo_string)"),
         "Produce with the compressed-tensors the target vLLM pins (or an llm-compressor that pins it), or serve "
         "with a vLLM whose compressed-tensors is at least the writer's; a field that is null can be deleted from "
         "config.json."),
    Rule("validator-internal", 99, "The validator could not run a rule",
         "A rule hit input it could not interpret; the checkpoint is not proven loadable.",
         "The validator never fails silently: an unchecked rule is not a passed rule.",
         (),
         "Report it with the checkpoint's config.json and `quantkit validate --json` output."),
]}


def markdown() -> str:
    """The rule list as Markdown: the generated part of docs/validation.md (a test keeps them equal)."""
    out = []
    for r in sorted(RULES.values(), key=lambda r: r.number):
        refs = ", ".join(r.upstream) if r.upstream else "-"
        out.append(f"### {r.number}. `{r.id}`: {r.title}\n\n"
                   f"- **Checks:** {r.what}\n- **Why:** {r.why}\n- **Upstream:** {refs}\n"
                   f"- **Severity:** {r.severity}\n- **Fix:** {r.fix}\n")
    return "\n".join(out)
