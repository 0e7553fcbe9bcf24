"""The report's `vllm serve` line runs in the serve environment exactly as printed (issue 16): the line from
report.md is handed to a shell with the serve environment's `bin/` first on PATH, the OpenAI-compatible server
answers one completion, and is stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from quantkit.report.render import markdown

pytestmark = [pytest.mark.slow, pytest.mark.serve]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _report_line(path: Path) -> str:
    measured = {"served": True, "tokens_per_s_bs1": 10.0, "tokens_per_s_bs16": 20.0}
    run = {"scheme": "bf16", "path": str(path), "quantized": measured, "quantized_bytes": 1, "original_bytes": 1,
           "compression_ratio": 1.0, "validation": {"ok": True, "findings": []}}
    text = markdown({"model": str(path), "hardware": "cpu", "original": measured, "runs": [run]})
    return next(line for line in text.splitlines() if " vllm serve " in line or line.startswith("vllm serve "))


def test_the_reports_serve_line_serves(embedded_path: Path, serve_python: Path, tmp_path: Path) -> None:
    line = _report_line(embedded_path)
    port = _free_port()
    env = dict(os.environ, PATH=f"{serve_python.parent}{os.pathsep}{os.environ['PATH']}",
               VLLM_CACHE_ROOT=str(tmp_path / "vllm-cache"))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(["bash", "-c", f"{line} --port {port}"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("vllm serve did not become healthy in 600 s:\n" + (tmp_path / "serve.log").read_text()[-4000:])
        body = json.dumps({"model": str(embedded_path), "prompt": "The capital of France is", "max_tokens": 8,
                           "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
        assert answer["choices"][0]["text"].strip(), answer
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
