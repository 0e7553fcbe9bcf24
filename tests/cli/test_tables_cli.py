"""``quantkit schemes`` and ``quantkit hardware``: the tables, as text, JSON and Markdown."""

from __future__ import annotations

import json

from cli_runner import run_cli

from quantkit.cli.tables import hardware_markdown, schemes_markdown
from quantkit.hardware import HARDWARE
from quantkit.schemes import SCHEMES


def test_schemes_table_lists_every_scheme() -> None:
    rc, out, _ = run_cli("schemes")
    assert rc == 0
    for name in SCHEMES:
        assert name in out


def test_schemes_json_shape() -> None:
    rc, out, _ = run_cli("schemes", "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == list(SCHEMES)
    for r in rows:
        assert {"name", "weights", "activations", "needs_calibration", "gpu", "cpu", "backends"} <= set(r)
        assert set(r["backends"]) <= {"llmcompressor", "modelopt"} and "support" not in r


def test_schemes_for_a_target() -> None:
    rc, out, _ = run_cli("schemes", "--hardware", "mi300x", "--json")
    rows = {r["name"]: r["support"] for r in json.loads(out)}
    assert rc == 0
    assert rows["fp8-dynamic"]["runs"] and rows["fp8-dynamic"]["hardware"] == "mi300x"
    assert not rows["nvfp4"]["runs"] and "Quark" in rows["nvfp4"]["reason"]
    rc, out, _ = run_cli("schemes", "-H", "a100")
    assert rc == 0 and "on a100" in out and "fallback" in out  # FP8 on Ampere: Marlin W8A16


def test_schemes_markdown_is_the_support_matrix() -> None:
    rc, out, _ = run_cli("schemes", "--markdown")
    assert rc == 0 and out.strip() == schemes_markdown()
    assert out.count("\n| `") == len(SCHEMES)


def test_hardware_table_json_and_markdown() -> None:
    rc, out, _ = run_cli("hardware")
    assert rc == 0 and all(name in out for name in HARDWARE)
    rc, out, _ = run_cli("hardware", "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == list(HARDWARE)
    by_name = {r["name"]: r for r in rows}
    assert {"kind", "capability", "memory_gib", "fp8_native", "fp4_native", "schemes"} <= set(by_name["h100"])
    assert "nvfp4" in by_name["b200"]["schemes"] and "fp8-dynamic" in by_name["h100"]["schemes"]
    rc, out, _ = run_cli("hardware", "--markdown")
    assert rc == 0 and out.strip() == hardware_markdown()


def test_bad_input_exits_2() -> None:
    rc, _, err = run_cli("schemes", "--hardware", "v100")
    assert rc == 2 and "Unknown hardware 'v100'" in err and "To resolve" in err and "h100" in err
    rc, _, err = run_cli("hardware", "--bogus")
    assert rc == 2 and "No such option" in err
