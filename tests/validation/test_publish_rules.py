"""Rule 19 ``published-complete``: a staging leftover or a tokenizer-less directory is a warning, never OK-silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import synthetic_checkpoints as S

from quantkit.cli import main
from quantkit.validation import validate

GOOD_IGNORE = ["lm_head", r"re:.*\.mlp\.gate$"]


def _ckpt(path: Path, *, tokenizer: bool = True, manifest: bool = False) -> Path:
    S.ct_checkpoint(path, S.qwen3_moe(), "ct-fp8-dynamic", GOOD_IGNORE)
    if tokenizer:
        (path / "tokenizer_config.json").write_text("{}")
    if manifest:
        (path / "quantkit.json").write_text(json.dumps({"scheme": "fp8-dynamic"}))
    return path


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def _rule(path: Path) -> list:
    return [f for f in validate(path).findings if f.rule == "published-complete"]


def test_a_published_checkpoint_has_no_finding(tmp_path: Path) -> None:
    assert _rule(_ckpt(tmp_path / "out", manifest=True)) == []


def test_a_staging_dir_of_a_killed_run_is_a_warning_even_when_every_other_rule_passes(tmp_path: Path,
                                                                                       capsys) -> None:
    path = _ckpt(tmp_path / f".out.quantkit-tmp-{_dead_pid()}-1700000000000", tokenizer=False)
    report = validate(path)
    assert report.ok  # the headers are fine: only the name tells
    [f] = [f for f in report.findings if f.rule == "published-complete"]
    assert f.severity == "warning" and "staging directory" in f.message and "no longer runs" in f.message
    assert "no quantkit.json and no tokenizer" in f.message and "'out'" in f.message
    assert main(["validate", str(path)]) == 0
    assert "warning [published-complete]" in capsys.readouterr().out


def test_a_staging_dir_of_a_live_writer_says_so(tmp_path: Path) -> None:
    # the parent of this test process is alive and is not this process
    [f] = _rule(_ckpt(tmp_path / f".out.quantkit-tmp-{os.getppid()}-1700000000000-otherbox", manifest=True))
    assert "on host otherbox" in f.message
    host_less = _ckpt(tmp_path / f".out.quantkit-tmp-{os.getppid()}-1700000000000", manifest=True)
    [f] = _rule(host_less)
    assert "still running" in f.message and "no quantkit.json" not in f.message


def test_quantize_validating_its_own_staging_dir_is_not_warned(tmp_path: Path) -> None:
    assert _rule(_ckpt(tmp_path / f".out.quantkit-tmp-{os.getpid()}-1700000000000", manifest=True)) == []


def test_missing_tokenizer(tmp_path: Path) -> None:
    [f] = _rule(_ckpt(tmp_path / "mine", tokenizer=False, manifest=True))
    assert f.severity == "warning" and "quantkit.json says quantkit wrote" in f.message
    [f] = _rule(_ckpt(tmp_path / "theirs", tokenizer=False))  # another publisher's: no manifest expected
    assert f.severity == "warning" and "--tokenizer" in f.message and "quantkit.json" not in f.message
