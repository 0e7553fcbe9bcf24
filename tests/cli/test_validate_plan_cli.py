"""``quantkit validate`` and ``quantkit plan`` on checkpoints this session really produced.

Their owners test the rules on synthetic checkpoints (tests/validation, tests/planning); these tests pin the
contract the cookbook and CI rely on: a real quantized checkpoint validates (exit 0), a target that cannot
serve it is a finding (exit 1), an unreadable path is bad input (exit 2), and ``--json`` is one object.
"""

from __future__ import annotations

from pathlib import Path

from cli_runner import one_json, run_cli


def test_validate_real_checkpoint(cli_fp8) -> None:
    path = cli_fp8[1]["output_dir"]
    rc, out, _ = run_cli("validate", path, "--hardware", "h100")
    assert rc == 0 and "OK: 0 error(s)" in out
    rc, out, _ = run_cli("validate", path, "--hardware", "h100", "--json")
    doc = one_json(out.replace("\n", " "))  # validate pretty-prints its JSON
    assert rc == 0 and set(doc) == {"ok", "quant_method", "findings"} and doc["ok"] is True


def test_validate_finding_exits_1(cli_fp8_block) -> None:
    rc, out, _ = run_cli("validate", cli_fp8_block[2], "--hardware", "cpu")
    assert rc == 1 and "FAILED" in out


def test_validate_unreadable_exits_2(tmp_path: Path) -> None:
    rc, _, err = run_cli("validate", tmp_path / "missing")
    assert rc == 2 and "QK006" in err


def test_plan_json_for_the_embedded_model(embedded_path: Path) -> None:
    rc, out, _ = run_cli("plan", "embedded", "--hardware", "h100", "--json")
    doc = one_json(out.replace("\n", " "))
    assert rc == 0 and doc["hardware"] == "h100" and doc["scheme"] and "lm_head" in doc["ignore"]
    rc, _, err = run_cli("plan", "embedded", "--hardware", "h1000")
    assert rc == 2 and "Unknown hardware" in err
