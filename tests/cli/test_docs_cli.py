"""The docs keep up with the CLI: every command documented, the support matrix equal to the tables, the
getting-started commands real (the walkthrough itself runs under ``slow``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import COMMANDS

from quantkit.cli.tables import hardware_markdown, schemes_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_cli_md_documents_every_command() -> None:
    text = (DOCS / "cli.md").read_text()
    for command in COMMANDS:
        assert re.search(rf"^## `quantkit {command}\b", text, re.M) or f"`quantkit {command}` / " in text or \
            f"/ `quantkit {command}`" in text, command


def test_support_matrix_in_concepts_is_the_scheme_table() -> None:
    text = (DOCS / "concepts.md").read_text()
    assert schemes_markdown() in text, "regenerate with `quantkit schemes --markdown`"
    assert hardware_markdown() in text, "regenerate with `quantkit hardware --markdown`"


def test_docs_link_to_existing_files() -> None:
    for doc in ["getting-started.md", "concepts.md", "cli.md", "evaluation.md"]:
        text = (DOCS / doc).read_text()
        for target in re.findall(r"\]\(([^)#:]+\.md)", text):
            assert (DOCS / target).is_file(), f"{doc} links to missing {target}"


def walkthrough_commands() -> list[str]:
    """The `quantkit ...` lines of getting-started sections 2 and 3 for the CPU (no GPU-only paths)."""
    text = (DOCS / "getting-started.md").read_text()
    body = text.split("## 2.")[1].split("## 4.")[0]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("quantkit ") and "--hardware cpu" in line and "roundtrip" not in line:
                cmds.append(line)
    return cmds


def test_walkthrough_is_what_the_slow_test_runs() -> None:
    cmds = walkthrough_commands()
    assert [c.split()[1] for c in cmds] == ["quantize", "validate", "load", "report"]


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.produce
def test_getting_started_walkthrough(tmp_path: Path, serve_python: Path) -> None:
    """A new user's path, verbatim from docs/getting-started.md: quantize → validate → load --generate →
    report, with the installed `quantkit` script in a fresh directory."""
    script = Path(sys.executable).with_name("quantkit")
    for cmd in walkthrough_commands():
        proc = subprocess.run([str(script), *shlex.split(cmd)[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=1200, env=dict(os.environ))
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "out/smollm2-w8a8/config.json").is_file()
    for name in ("report.json", "report.md", "report.png"):
        assert (tmp_path / "runs/report" / name).is_file()
