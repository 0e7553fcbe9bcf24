"""``quantkit serve``: the printed vllm serve command, its reasons, --exec, and bad input (exit 2)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from cli_runner import one_json, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "planning"))
import plan_fixtures  # noqa: E402

import quantkit  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A header-only Llama-3.1-8B checkpoint (config + safetensors headers, no weights)."""
    cfg, tensors = plan_fixtures.llama3_8b()
    return plan_fixtures.write_checkpoint(tmp_path_factory.mktemp("serve") / "llama3", cfg, tensors)


def test_prints_the_command_and_a_reason_per_flag(llama: Path) -> None:
    rc, out, err = run_cli("serve", llama, "--hardware", "h100", "--gpus", "8")
    assert rc == 0, err
    command, *comments = out.strip().splitlines()
    argv = shlex.split(command)
    assert argv[:3] == ["vllm", "serve", str(llama)]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert "--max-model-len" in argv and "--max-num-seqs" in argv
    flags = [w for w in argv if w.startswith("--")]
    for flag in flags:
        assert any(c.startswith(f"# {flag}: ") for c in comments), flag


def test_two_nodes_pipeline_over_ray(llama: Path) -> None:
    rc, out, _ = run_cli("serve", llama, "-H", "h100", "--gpus", "8", "--nodes", "2")
    assert rc == 0
    argv = shlex.split(out.splitlines()[0])
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert "ray start --head" in out


def test_serve_args_is_the_printed_command(llama: Path) -> None:
    args = quantkit.serve_args(llama, hardware="h100", gpus=8, nodes=2)
    rc, out, _ = run_cli("serve", llama, "-H", "h100", "--gpus", "8", "--nodes", "2")
    assert rc == 0 and out.strip() == args.render()
    assert shlex.split(out.splitlines()[0]) == args.argv
    rc, out, _ = run_cli("serve", llama, "-H", "h100", "--gpus", "8", "--nodes", "2", "--json")
    data = one_json(out)
    assert data["ok"] and data["argv"] == args.argv and data["env"] == args.env and data["reasons"] == args.reasons


def test_exec_runs_the_argv(llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append((file, list(argv))))
    rc, _, err = run_cli("serve", llama, "-H", "h100", "--gpus", "4", "--exec")
    assert rc == 0, err
    assert calls == [("vllm", quantkit.serve_args(llama, hardware="h100", gpus=4).argv)]


@pytest.mark.parametrize("argv,rule,words", [
    (["{missing}", "-H", "h100"], "QK006", "does not exist"),
    (["{ckpt}", "-H", "v100"], "QK001", "Unknown hardware"),
    (["{ckpt}", "-H", "h100", "--gpus", "0"], "QK012", "gpus must be a positive integer"),
    (["{ckpt}", "-H", "cpu", "--gpus", "2"], "QK012", "one host"),
    (["{ckpt}", "-H", "h100", "--gpus", "8", "--nodes", "64"], "QK014", "pipeline stages"),
])
def test_bad_input_exits_2(llama: Path, tmp_path: Path, argv: list[str], rule: str, words: str) -> None:
    args = [a.format(missing=tmp_path / "nope", ckpt=llama) for a in argv]
    rc, out, err = run_cli("serve", *args)
    assert rc == 2 and out == ""
    assert err.startswith(f"error: [{rule}]") and words in err and "To resolve: " in err


def test_tp_that_cannot_divide_heads_exits_2(tmp_path: Path) -> None:
    cfg, tensors = plan_fixtures.llama3_8b()
    cfg = dict(cfg, num_attention_heads=12, num_key_value_heads=12)  # 12 heads: TP 8 cannot split them
    path = plan_fixtures.write_checkpoint(tmp_path / "odd", cfg, tensors)
    rc, out, err = run_cli("serve", path, "-H", "h100", "--gpus", "8")
    assert rc == 0 and "--tensor-parallel-size 4" in out  # the largest TP that divides 12 heads
    rc, out, err = run_cli("serve", path, "-H", "h100", "--gpus", "8", "--json")
    assert one_json(out)["argv"][4] == "4"
