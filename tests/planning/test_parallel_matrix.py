"""The parallelism choice at frontier scale: header-only Llama-3.1-8B/70B/405B, Qwen3-235B-A22B and DeepSeek-V3
across 8 x H100, 8 x H200, 8 x B200, 8 x A100 and 2 nodes of 8 x H100 -- the TP/PP sizes, the divisibility
refusals (with the TP sizes that would work), and the `vllm serve` lines, parsed by the installed vLLM's own
argument parser in the serve environment.

Shapes are the published config.json ones (plan_fixtures.AT_SCALE); tensors are safetensors headers over a
sparse payload, so a 671B checkpoint costs a few MB.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import plan_fixtures
import pytest

import quantkit
from quantkit.errors import ParallelismError, PlanOptionError
from quantkit.planning.planner import plan

#: (hardware, GPUs per node, nodes, scheme) -- the realistic format per target: block FP8 on Hopper, NVFP4 on
#: Blackwell, W4A16 group 128 (Marlin) on Ampere, which has no FP8 tensor cores
TARGETS = {
    "8xh100": ("h100", 8, 1, "fp8-block"),
    "8xh200": ("h200", 8, 1, "fp8-block"),
    "8xb200": ("b200", 8, 1, "nvfp4"),
    "8xa100": ("a100", 8, 1, "w4a16"),
    "2x8xh100": ("h100", 8, 2, "fp8-block"),
}

#: model -> target -> (TP, PP, fits at 16 x 4096 tokens). Why each answer is what vLLM needs:
#: * heads: 32 / 64 / 128 attention heads all divide TP 8 (vllm/config/model.py verify_with_parallel_config);
#:   KV heads 8 split one per rank; Qwen3-235B's 4 KV heads are replicated 2x at TP 8, which vLLM allows
#:   (tp_size % total_num_kv_heads == 0, qwen3_moe.py Qwen3MoeAttention); DeepSeek-V3's MLA latent is replicated.
#: * Qwen3-235B's experts have moe_intermediate_size 1536: at TP 8 each rank gets 192 input features of every
#:   expert down_proj, not a whole 128-wide FP8 block (compressed-tensors MoE: fp8_utils.py
#:   validate_fp8_block_shape_moe raises) nor a whole W4A16 group of 128 (marlin_utils.py
#:   check_moe_marlin_supports_config: intermediate_size_per_partition % group_size). TP 4 gives 384 = 3 x 128,
#:   so the planner takes TP 4 of the 8 GPUs. NVFP4's group of 16 divides 192: TP 8.
#: * memory (weights + KV for 16 sequences of 4096 tokens, ~90% of each GPU): 405B in FP8 is ~54 GiB per H100 at
#:   TP 8 (fits 71.6 usable), DeepSeek-V3 671B in FP8 is ~85 GiB per GPU: over an H100's 71.6 GiB, under an
#:   H200's 126 GiB; two H100 nodes halve it (PP 2, one stage per node, Ray). 4-bit DeepSeek-V3 is ~47-51 GiB.
EXPECTED: dict[str, dict[str, tuple[int, int, bool]]] = {
    "llama3-8b": {"8xh100": (8, 1, True), "8xh200": (8, 1, True), "8xb200": (8, 1, True),
                  "8xa100": (8, 1, True), "2x8xh100": (8, 2, True)},
    "llama3-70b": {"8xh100": (8, 1, True), "8xh200": (8, 1, True), "8xb200": (8, 1, True),
                   "8xa100": (8, 1, True), "2x8xh100": (8, 2, True)},
    "llama3-405b": {"8xh100": (8, 1, True), "8xh200": (8, 1, True), "8xb200": (8, 1, True),
                    "8xa100": (8, 1, True), "2x8xh100": (8, 2, True)},
    "qwen3-235b": {"8xh100": (4, 1, True), "8xh200": (4, 1, True), "8xb200": (8, 1, True),
                   "8xa100": (4, 1, True), "2x8xh100": (4, 2, True)},
    "deepseek-v3": {"8xh100": (8, 1, False), "8xh200": (8, 1, True), "8xb200": (8, 1, True),
                    "8xa100": (8, 1, True), "2x8xh100": (8, 2, True)},
}


@pytest.fixture(scope="module")
def at_scale(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    return plan_fixtures.lazy_checkpoints(tmp_path_factory.mktemp("at-scale"), plan_fixtures.AT_SCALE)


@pytest.mark.parametrize("model", list(EXPECTED))
def test_sizes_chosen(at_scale: Callable[[str], Path], model: str) -> None:
    got = {}
    for target, (hw, gpus, nodes, scheme) in TARGETS.items():
        p = plan(at_scale(model), hw, scheme=scheme, gpus=gpus, nodes=nodes)
        got[target] = (p.tensor_parallel_size, p.pipeline_parallel_size, p.fit.fits)
        assert p.vllm_args["tensor_parallel_size"] == p.tensor_parallel_size
        if nodes > 1:
            assert p.vllm_args["pipeline_parallel_size"] == nodes
            assert p.vllm_args["distributed_executor_backend"] == "ray"
        else:
            assert "pipeline_parallel_size" not in p.vllm_args
    assert got == EXPECTED[model]


@pytest.mark.parametrize("scheme,rule", [("fp8-block", "tp-block"), ("w4a16", "tp-group")])
def test_expert_shards_refuse_tp8_with_the_tp_that_works(at_scale: Callable[[str], Path], scheme: str,
                                                         rule: str) -> None:
    hw = "h100" if scheme == "fp8-block" else "a100"
    with pytest.raises(ParallelismError) as exc:
        plan(at_scale("qwen3-235b"), hw, scheme=scheme, tensor_parallel_size=8)
    err = exc.value
    assert err.rule == "QK014" and f"[{rule}]" in str(err) and "experts" in str(err) and "192 per shard" in str(err)
    assert "TP sizes that pass here: 1, 2, 4." in err.fix
    assert "--enable-expert-parallel" in err.fix  # whole experts per rank: no 192-wide slices
    chosen = plan(at_scale("qwen3-235b"), hw, scheme=scheme, gpus=8)
    assert f"TP 8 breaks [{rule}]" in chosen.parallel_reason


def test_a_group_that_divides_the_shard_passes(at_scale: Callable[[str], Path]) -> None:
    # group 64 divides 192: TP 8 is fine for W4A16 on Qwen3-235B
    p = plan(at_scale("qwen3-235b"), "a100", scheme="w4a16", group_size=64, gpus=8)
    assert p.tensor_parallel_size == 8 and p.group_size == 64


# ------------------------------------------------------------------------------------- the vllm serve lines

#: (model, hardware, GPUs, nodes, serve_args options) -> the engine arguments the line must carry
SERVE_CASES: list[tuple[str, str, int, int, dict, dict]] = [
    ("llama3-8b", "h100", 8, 1, {}, {"tensor_parallel_size": 8}),
    ("llama3-8b", "h200", 8, 1, {"lora": True, "kv_cache_dtype": "fp8"},
     {"tensor_parallel_size": 8, "enable_lora": True, "kv_cache_dtype": "fp8"}),
    ("llama3-70b", "a100", 8, 1, {}, {"tensor_parallel_size": 8}),
    ("llama3-70b", "b200", 8, 1, {"max_model_len": 32768}, {"tensor_parallel_size": 8, "max_model_len": 32768}),
    # 405B in bf16 is 756 GiB: two nodes of 8 x H100, one pipeline stage each, over Ray
    ("llama3-405b", "h100", 8, 2, {}, {"tensor_parallel_size": 8, "pipeline_parallel_size": 2,
                                       "distributed_executor_backend": "ray"}),
    # ... or one node with vLLM quantizing to FP8 at load
    ("llama3-405b", "h100", 8, 1, {"quantization": "fp8"},
     {"tensor_parallel_size": 8, "quantization": "fp8_per_tensor"}),
    ("qwen3-235b", "h200", 8, 1, {}, {"tensor_parallel_size": 8}),
    ("qwen3-235b", "h100", 8, 2, {}, {"tensor_parallel_size": 8, "pipeline_parallel_size": 2,
                                      "distributed_executor_backend": "ray"}),
    ("deepseek-v3", "h200", 8, 1, {"quantization": "fp8_per_block"},
     {"tensor_parallel_size": 8, "quantization": "fp8_per_block"}),
    ("deepseek-v3", "h100", 8, 2, {"quantization": "fp8_per_block"},
     {"tensor_parallel_size": 8, "pipeline_parallel_size": 2, "quantization": "fp8_per_block"}),
]


def test_405b_bf16_does_not_fit_one_h100_node(at_scale: Callable[[str], Path]) -> None:
    with pytest.raises(PlanOptionError) as exc:
        quantkit.serve_args(at_scale("llama3-405b"), "h100", gpus=8)
    assert "does not fit 8 x h100" in str(exc.value) and "--nodes" in exc.value.fix


#: run in the serve environment: the installed vLLM's own `vllm serve` parser (vllm/entrypoints/cli/serve.py
#: builds it with make_arg_parser from vllm/entrypoints/launchers/cli_args.py on a FlexibleArgumentParser)
_PARSE = r"""
import contextlib, io, json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
import vllm
parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
known = set(parser._option_string_actions)
out = []
for argv, keys in json.load(sys.stdin):
    flags = [w for w in argv if w.startswith("--")]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
        out.append({"unknown": [f for f in flags if f not in known], "model": ns.model_tag,
                    "values": {k: getattr(ns, k) for k in keys}})
    except SystemExit:
        out.append({"unknown": [f for f in flags if f not in known], "error": err.getvalue()[-400:]})
print("RESULT " + json.dumps({"version": vllm.__version__, "lines": out}))
"""


def test_serve_lines_parse_in_vllm(at_scale: Callable[[str], Path], serve_python: Path) -> None:
    lines, built = [], []
    for model, hw, gpus, nodes, opts, expect in SERVE_CASES:
        args = quantkit.serve_args(at_scale(model), hw, gpus=gpus, nodes=nodes, **opts)
        assert args.argv[:3] == ["vllm", "serve", str(at_scale(model))]
        assert shlex.split(args.command())[-len(args.argv):] == args.argv
        for key, value in expect.items():
            assert args.engine_args[key] == value, (model, hw, key)
        for flag in (w for w in args.argv if w.startswith("--")):
            assert flag in args.reasons, (model, flag)  # every flag is explained
        lines.append((args.argv[2:], sorted(args.engine_args)))
        built.append(args)
    proc = subprocess.run([str(serve_python), "-c", _PARSE], input=json.dumps(lines), capture_output=True,
                          text=True, timeout=300)
    result = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert result is not None, proc.stderr[-3000:]
    assert len(result["lines"]) == len(SERVE_CASES)
    for (argv, _), args, case, parsed in zip(lines, built, SERVE_CASES, result["lines"]):
        assert parsed["unknown"] == [] and "error" not in parsed, (case, argv, parsed)
        assert parsed["model"] == argv[0]
        # every engine argument quantkit means is what vLLM's parser reads back from the line
        assert parsed["values"] == args.engine_args, (case, result["version"])
