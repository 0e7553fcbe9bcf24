"""Tensor and pipeline parallelism: which TP/PP sizes the plan proposes for the GPUs named, and why.

vLLM shards every attention and MLP layer over the tensor-parallel ranks of one node and splits the layers over
pipeline stages across nodes. Each sharding has a divisibility rule vLLM enforces at load time (the rules, with
the vLLM source that enforces them, are :data:`~quantkit.vllm_facts.PARALLEL_RULES`); this module checks a
checkpoint's config and safetensors shapes against them for a candidate TP size, without loading anything.

The choice: on one node, the largest TP size up to the GPUs named that passes every rule (more ranks, more KV
cache per sequence); with ``nodes > 1``, TP within each node and one pipeline stage per node (PP = nodes),
served through Ray. Without GPUs named, the memory fit picks the smallest TP that fits (``memory.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantkit.errors import ParallelismError
from quantkit.hardware import Hardware
from quantkit.planning.architectures import ROW_PARALLEL, is_mla, num_kv_heads, text_config
from quantkit.planning.ignore import checkpoint_module_names, ignore_matcher
from quantkit.schemes import Scheme
from quantkit.vllm_facts import MULTI_NODE_EXECUTOR_BACKEND, PARALLEL_RULES


#: leaves vLLM builds as ReplicatedLinear (every rank holds the whole layer): MLA's low-rank down-projections
#: (vllm/model_executor/models/deepseek_v2.py DeepseekV2MLAAttention q_a_proj, kv_a_proj_with_mqa)
REPLICATED = frozenset({"q_a_proj", "kv_a_proj_with_mqa"})


@dataclass(frozen=True)
class ShardProblem:
    """One rule a TP/PP size breaks: the rule id (:data:`~quantkit.vllm_facts.PARALLEL_RULES`), what fails,
    and whether vLLM refuses (``error``) or only runs slower (``warning``)."""

    rule: str
    message: str
    severity: str = "error"
    #: every layer behind it is a routed expert (``.experts.``): expert parallelism, which gives each rank whole
    #: experts instead of a 1/TP slice of every expert, does not split them
    experts_only: bool = False

    def render(self) -> str:
        return f"[{self.rule}] {self.message}"


@dataclass(frozen=True)
class ParallelChoice:
    """The parallel layout a plan proposes: ``tensor_parallel_size`` within a node, ``pipeline_parallel_size``
    across ``nodes``, ``distributed_executor_backend`` (``ray`` across nodes, None on one host); ``reason``
    explains it, ``warnings`` what runs slower at that size."""

    tensor_parallel_size: int
    pipeline_parallel_size: int = 1
    nodes: int = 1
    gpus_per_node: int | None = None
    distributed_executor_backend: str | None = None
    reason: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def engine_args(self) -> dict[str, Any]:
        """The ``vllm.LLM`` / ``vllm serve`` arguments of this layout (TP always; PP and Ray when used)."""
        args: dict[str, Any] = {"tensor_parallel_size": self.tensor_parallel_size}
        if self.pipeline_parallel_size > 1:
            args["pipeline_parallel_size"] = self.pipeline_parallel_size
        if self.distributed_executor_backend:
            args["distributed_executor_backend"] = self.distributed_executor_backend
        return args


def _shapes(tensors: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Linear layers (2-D ``.weight``, embeddings left out): module name -> (out_features, in_features)."""
    out = {}
    for module in checkpoint_module_names(tensors):
        shape = tuple(getattr(tensors.get(module + ".weight"), "shape", ()))
        if len(shape) == 2:
            out[module] = (int(shape[0]), int(shape[1]))
    return out


def shard_problems(config: Mapping[str, Any], tensors: Mapping[str, Any], tp: int, *, pp: int = 1,
                   scheme: Scheme | None = None, group_size: int | None = None,
                   ignore: Sequence[str] = ()) -> list[ShardProblem]:
    """Every :data:`~quantkit.vllm_facts.PARALLEL_RULES` rule ``tp`` x ``pp`` breaks for this checkpoint.

    Args:
        config: ``config.json`` (the ``text_config`` of multimodal checkpoints is read).
        tensors: name -> object with ``.shape`` (safetensors headers or a loaded model's parameters).
        tp: tensor-parallel size; pp: pipeline-parallel size.
        scheme / group_size / ignore: the quantization the checkpoint will have (None: served unquantized);
            quantized row-parallel layers must hold whole groups per shard (the Marlin tile limits per
            shard are a warning the planner adds, ``planner._marlin_warning``).
    """
    cfg = text_config(config)
    problems: list[ShardProblem] = []
    heads = int(cfg.get("num_attention_heads") or 0)
    if heads and heads % tp:
        problems.append(ShardProblem("tp-heads", f"{heads} attention heads are not divisible by TP {tp}"))
    kv = num_kv_heads(cfg) if heads else 0
    if kv and not is_mla(cfg):  # MLA keeps one latent KV replicated on every rank: no KV-head split
        if kv >= tp and kv % tp:
            problems.append(ShardProblem("tp-kv-heads", f"{kv} KV heads are not divisible by TP {tp}"))
        elif kv < tp and tp % kv:
            problems.append(ShardProblem("tp-kv-heads", f"TP {tp} is not a multiple of the {kv} KV heads "
                                                        "(vLLM replicates KV heads only by a whole factor)"))
    layers = int(cfg.get("num_hidden_layers") or 0)
    if pp > 1 and layers and layers < pp:
        problems.append(ShardProblem("pp-layers", f"{layers} layers cannot fill {pp} pipeline stages"))
    if tp == 1:
        return problems

    ignored = ignore_matcher(ignore)
    quantized = scheme is not None
    group = group_size if quantized and group_size and group_size > 0 else None
    block = scheme.weights.block if scheme is not None and scheme.weights.strategy == "block" else None
    seen: set[tuple[str, int, int, bool]] = set()
    bad: dict[str, list[str]] = {}
    expert_only: dict[str, bool] = {}
    for module, (out_f, in_f) in _shapes(tensors).items():
        leaf = module.rsplit(".", 1)[-1]
        row = leaf in ROW_PARALLEL
        q = quantized and not ignored(module)
        key = (leaf, out_f, in_f, q)
        if key in seen or not (row or q) or leaf in REPLICATED:
            continue
        seen.add(key)
        example = f"{module} [{out_f}x{in_f}]"
        expert = ".experts." in module
        if row and in_f % tp:
            bad.setdefault("tp-shard", []).append(example)
            expert_only["tp-shard"] = expert_only.get("tp-shard", True) and expert
            continue
        if not q:
            continue
        if row and group and group < in_f and (in_f // tp) % group:
            bad.setdefault("tp-group", []).append(f"{example}: {in_f // tp} per shard")
            expert_only["tp-group"] = expert_only.get("tp-group", True) and expert
            continue
        # a column-parallel shard is out/TP, except k/v projections once TP exceeds the KV heads: vLLM's
        # QKVParallelLinear then gives each rank one whole (replicated) KV head
        out_p = out_f // (min(tp, kv) if leaf in ("k_proj", "v_proj") and kv else tp)
        if block and ((in_f // tp) % block[1] if row else out_p % block[0]):
            bad.setdefault("tp-block", []).append(f"{example}: {'in' if row else 'out'} "
                                                  f"{in_f // tp if row else out_p} per shard")
            expert_only["tp-block"] = expert_only.get("tp-block", True) and expert
    texts = {
        "tp-shard": f"row-parallel input features not divisible by TP {tp}",
        "tp-group": f"group size {group} does not divide the per-shard input features at TP {tp}",
        "tp-block": f"the {block[0]}x{block[1]} weight blocks do not tile the shards at TP {tp}" if block else "",
    }
    for rule, examples in bad.items():
        problems.append(ShardProblem(rule, f"{texts[rule]}, {len(examples)} layer shape(s), e.g. {examples[0]}",
                                     experts_only=expert_only.get(rule, False)))
    return problems


def _moe_note(cfg: Mapping[str, Any], tp: int, pp: int) -> str:
    experts = int(cfg.get("num_experts") or cfg.get("n_routed_experts") or cfg.get("num_local_experts") or 0)
    if not experts:
        return ""
    inter = int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 0)
    # FusedMoE shards every expert's intermediate dimension over TP ranks by default; with
    # --enable-expert-parallel each rank holds whole experts instead (vllm/config/parallel.py enable_expert_parallel)
    if tp == 1:
        return f"MoE: {experts} experts per layer, all on the one rank"
    sliced = f" (intermediate {inter} -> {inter // tp} per rank)" if inter else ""
    ep = tp
    per_rank = f"{experts // ep}" + ("" if experts % ep == 0 else f"-{experts // ep + 1} (uneven)")
    return (f"MoE: {experts} experts per layer; at TP {tp} every rank holds a 1/{tp} slice of each expert{sliced}; "
            f"with --enable-expert-parallel {per_rank} whole experts per rank")


#: with --enable-expert-parallel vLLM gives each rank whole experts and no TP slice of them: "In EP, each device
#: owns a set of experts fully" (vllm/model_executor/layers/fused_moe/config.py FusedMoEParallelConfig.make sets
#: the experts' tp_size to 1)
EXPERT_PARALLEL_UPSTREAM = "vllm/model_executor/layers/fused_moe/config.py FusedMoEParallelConfig.make"


def expert_parallel_hint(tp: int, problems: Sequence[ShardProblem]) -> str:
    """How expert parallelism keeps TP ``tp`` when only routed-expert slices break it ("" otherwise)."""
    errors = [p for p in problems if p.severity == "error"]
    if not errors or not all(p.experts_only for p in errors):
        return ""
    return (f"Or keep TP {tp} with --enable-expert-parallel (enable_expert_parallel=True): each rank then holds "
            f"whole experts, not 1/{tp} slices ({EXPERT_PARALLEL_UPSTREAM}).")


def _fail(tp: int, pp: int, problems: list[ShardProblem], valid: Sequence[int]) -> ParallelismError:
    first = problems[0]
    rule = PARALLEL_RULES[first.rule]
    hint = expert_parallel_hint(tp, problems)
    return ParallelismError(
        f"TP {tp}" + (f" x PP {pp}" if pp > 1 else "") + " cannot shard this checkpoint: "
        + "; ".join(p.render() for p in problems if p.severity == "error")
        + f" (vLLM: {rule.upstream}).",
        fix=f"{rule.fix} TP sizes that pass here: {', '.join(map(str, valid)) or 'none'}." + (f" {hint}" if hint else ""))


def valid_tp_sizes(check: Callable[[int], list[ShardProblem]], upto: int) -> list[int]:
    """TP sizes from 1 to ``upto`` that break no error rule."""
    return [t for t in range(1, upto + 1) if not any(p.severity == "error" for p in check(t))]


def choose_parallel(config: Mapping[str, Any], tensors: Mapping[str, Any], hardware: Hardware, *,
                    gpus: int | None = None, nodes: int = 1, tensor_parallel_size: int | None = None,
                    memory_tp: int | None = None, scheme: Scheme | None = None, group_size: int | None = None,
                    ignore: Sequence[str] = ()) -> ParallelChoice:
    """The TP/PP layout for ``gpus`` GPUs on each of ``nodes`` nodes, checked against the checkpoint.

    Args:
        gpus: GPUs on each node; None: no GPUs named (one node up to the target's ``max_tp``; ``memory_tp``,
            the smallest TP the memory fit found, is proposed).
        nodes: nodes; above 1, PP = nodes and TP = the largest valid size up to ``gpus`` per node (Ray).
        tensor_parallel_size: a TP size the caller asked for: checked, never replaced.
        memory_tp: the memory fit's TP when no GPUs are named.

    Raises:
        ParallelismError: the requested TP (or every TP up to the GPUs named) breaks a rule vLLM enforces.
    """
    cfg = text_config(config)

    def check(t: int) -> list[ShardProblem]:
        return shard_problems(config, tensors, t, pp=nodes, scheme=scheme, group_size=group_size, ignore=ignore)

    per_node = gpus if gpus is not None else hardware.max_tp
    if tensor_parallel_size is not None:
        tp = tensor_parallel_size
        if gpus is not None and tp > gpus:
            raise ParallelismError(f"TP {tp} needs {tp} GPUs on one node; {gpus} named per node.",
                                   fix=f"Pass --tp {gpus} or less, or name more GPUs (--gpus).")
        why = f"TP {tp} requested"
    elif gpus is None and nodes == 1:
        valid = valid_tp_sizes(check, per_node)
        want = memory_tp or 1
        tp = next((t for t in valid if t >= want), valid[-1] if valid else want)
        why = (f"TP {tp}: the memory fit's choice, no GPU count named" if tp == want else
               f"TP {tp}: memory needs TP {want}, which breaks "
               + "; ".join(p.render() for p in check(want) if p.severity == "error"))
    else:
        valid = valid_tp_sizes(check, per_node)
        if not valid:
            raise _fail(per_node, nodes, [p for p in check(per_node) if p.severity == "error"], valid)
        tp = valid[-1]
        why = (f"TP {tp}: all {per_node} GPUs of {'each' if nodes > 1 else 'the'} node" if tp == per_node else
               f"TP {tp}: the largest size up to {per_node} GPUs that shards this checkpoint; TP {per_node} breaks "
               + "; ".join(p.render() for p in check(per_node) if p.severity == "error"))
        hint = expert_parallel_hint(per_node, check(per_node)) if tp != per_node else ""
        if hint:
            why += f". {hint}"
    problems = check(tp)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise _fail(tp, nodes, errors, valid_tp_sizes(check, max(per_node, tp)))
    parts = [why]
    heads, kv = int(cfg.get("num_attention_heads") or 0), num_kv_heads(cfg)
    if heads:
        if is_mla(cfg):
            parts.append(f"{heads} heads / TP {tp} = {heads // tp} per rank; MLA's latent KV is replicated on "
                         "every rank")
        elif kv and kv < tp:
            parts.append(f"{heads} heads / TP {tp} = {heads // tp} per rank; {kv} KV heads replicated "
                         f"{tp // kv}x (TP > KV heads)")
        else:
            parts.append(f"{heads} heads, {kv} KV heads / TP {tp} = {heads // tp} and {max(1, kv // tp)} per rank")
    if scheme is not None and group_size and tp > 1:
        parts.append(f"group {group_size} divides every quantized row-parallel shard")
    moe = _moe_note(cfg, tp, nodes)
    if moe:
        parts.append(moe)
    backend = None
    pp = 1
    if nodes > 1:
        pp = nodes
        layers = int(cfg.get("num_hidden_layers") or 0)
        backend = MULTI_NODE_EXECUTOR_BACKEND
        parts.append(f"PP {pp}: one pipeline stage per node ({layers // pp if layers else '?'}"
                     f"{'+' if layers % pp else ''} layers each), TP stays within a node's NVLink; "
                     f"{tp * pp} GPUs over {nodes} nodes need distributed_executor_backend='{backend}' "
                     "(vllm/config/parallel.py)")
    return ParallelChoice(tp, pp, nodes, gpus, backend, "; ".join(parts),
                          tuple(p.render() for p in problems if p.severity == "warning"))
