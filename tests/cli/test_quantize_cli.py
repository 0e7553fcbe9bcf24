"""``quantkit quantize``: a real (data-free) quantization, its JSON, its human output, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import one_json, run_cli


def test_quantize_json_shape(cli_fp8) -> None:
    rc, data, _ = cli_fp8
    assert rc == 0 and data["ok"] is True
    assert {"output_dir", "scheme", "backend", "hardware", "kv_cache", "group_size", "ignore", "timings",
            "original_bytes", "quantized_bytes", "peak_rss_bytes", "compression_ratio", "findings", "notes",
            "serve_command", "load_python"} <= set(data)
    assert (data["scheme"], data["backend"], data["hardware"]) == ("fp8-dynamic", "llmcompressor", "h100")
    assert data["ignore"] == ["lm_head"] and data["compression_ratio"] > 1.5
    assert data["timings"]["total_s"] > 0 and data["peak_rss_bytes"] > 0
    assert data["serve_command"] == f"vllm serve {data['output_dir']}"
    assert data["load_python"].startswith("from quantkit import load; llm = load(")
    cfg = json.loads((Path(data["output_dir"]) / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["ignore"] == ["lm_head"]
    weights = cfg["config_groups"]["group_0"]["weights"]
    assert (weights["type"], weights["num_bits"], weights["strategy"]) == ("float", 8, "channel")


def test_quantize_human_output(cli_fp8_block) -> None:
    rc, out, path = cli_fp8_block
    assert rc == 0
    assert f"wrote {path} (fp8-block via llmcompressor" in out
    assert "validated for h100: OK" in out
    assert f"vllm serve {path}" in out and "load(" in out
    assert (path / "quantkit.json").is_file()


def test_existing_output_dir_is_exit_2_and_json_error(cli_fp8) -> None:
    _, data, _ = cli_fp8
    rc, out, err = run_cli("quantize", "embedded", "-s", "fp8-dynamic", "-o", data["output_dir"], "--json")
    assert rc == 2
    doc = one_json(out)
    assert doc["ok"] is False and doc["error"]["rule"] == "QK005" and doc["error"]["fix"]
    assert set(doc["error"]) == {"rule", "error", "message", "fix"}
    assert "To resolve" in err


@pytest.mark.parametrize("argv, expected", [
    (["-s", "fp4"], "Unknown scheme 'fp4'"),
    (["-s", "fp8-dynamic", "-H", "v100"], "Unknown hardware 'v100'"),
    (["-s", "nvfp4", "-H", "mi300x"], "vLLM on mi300x cannot serve nvfp4"),
    (["-s", "fp8-block", "-H", "cpu"], "vLLM on cpu cannot serve fp8-block"),
    (["-s", "fp8-dynamic", "--kv-cache", "int4"], "Unknown KV-cache dtype 'int4'"),
    (["-s", "fp8-dynamic", "--backend", "tensorrt"], "tensorrt"),
    (["-s", "w4a16", "-H", "h100", "--calibration", "/nonexistent/calib.jsonl"], "does not exist"),
    (["-s", "fp8-dynamic", "--num-samples", "0"], "--num-samples"),
    (["-s", "w4a16", "-H", "h100", "--eval-data", "/nonexistent/held-out.txt"], "scores a mixed-precision budget"),
    (["-s", "w4a16", "-H", "h100", "--max-ppl-rise", "10", "--eval-data", "/nonexistent/held-out.txt"],
     "does not exist"),
])
def test_bad_input_exits_2(argv: list[str], expected: str, tmp_path: Path) -> None:
    rc, out, err = run_cli("quantize", "embedded", "-o", tmp_path / "out", *argv)
    assert rc == 2, err
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_missing_model_exits_2(tmp_path: Path) -> None:
    rc, _, err = run_cli("quantize", tmp_path, "-s", "fp8-dynamic", "-o", tmp_path / "out")
    assert rc == 2 and "no config.json" in err


def test_every_published_file_has_the_modes_of_the_umask(cli_fp8) -> None:
    """safetensors writes its files 0o600; a vLLM server under another uid must read what quantkit publishes."""
    import os
    import stat

    from quantkit.checkpoint.atomic import current_umask

    _, data, _ = cli_fp8
    out = Path(data["output_dir"])
    mask = current_umask()
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert "model.safetensors" in modes
    assert modes == {name: (0o777 if (out / name).is_dir() else 0o666) & ~mask for name in modes}
    assert os.access(out / "model.safetensors", os.R_OK)


def test_ctrl_c_during_quantize_publishes_nothing_and_exits_130(tmp_path: Path, embedded_path: Path) -> None:
    """A real SIGINT once the run is writing its staging directory: cleanup, one line, exit 130.

    The staging directory appears when the producer starts (after loading and tokenizing); GPTQ on a few short
    samples keeps it there ~25 s on a 2-core machine, so the signal lands inside the run, not after the publish
    (a data-free run stages for ~2 s, and a signal sent in its last moments found it published)."""
    import signal
    import subprocess
    import sys
    import time

    def sigint_as_a_terminal_gives_it() -> None:
        # a child inherits an ignored SIGINT across exec, and a non-interactive shell ignores SIGINT in what it
        # starts with `&` (measured: SigIgn 0x6 in /proc/PID/status); a suite launched that way ran the quantize
        # to the end (exit 0), so start the child as a terminal would
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    out = tmp_path / "out"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("quantkit")), "quantize", str(embedded_path),
                             "-s", "w4a16", "--num-samples", "4", "--seq-len", "32", "-H", "h100", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_a_terminal_gives_it)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob(".out.quantkit-tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it staged anything"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, f"exit {proc.returncode} {time.monotonic() - sent:.1f} s after SIGINT:\n{err}"
    assert err.strip().endswith("interrupted, nothing published") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory left


@pytest.mark.parametrize(("rows", "message"), [
    ("", "calibration.jsonl has no rows"),
    ('{"prompt": "x"}\n', "calibration.jsonl line 1 has keys ['prompt']"),
    ('{"text": "Too short."}\n', "gave only"),
])
def test_unusable_calibration_is_exit_2_and_publishes_nothing(rows: str, message: str, embedded_path: Path,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "calibration.jsonl"
    data.write_text(rows)
    out = tmp_path / "out"
    rc, _, err = run_cli("quantize", "embedded", "-s", "w8a8-int8", "-H", "cpu", "--calibration", data, "-o", out)
    assert rc == 2 and message in err and "To resolve:" in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.quantkit-tmp-*"))
