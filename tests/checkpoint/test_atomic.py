"""Atomic publish: the modes the user's umask gives, and staging directories of killed runs swept."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantkit.checkpoint import atomic


@pytest.fixture
def umask_027() -> Iterator[int]:
    """A umask other than the usual 022, so a hard-coded 0o644 cannot pass for "what the umask gives"."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_current_umask_is_read_without_changing_it(umask_027: int) -> None:
    assert atomic.current_umask() == umask_027
    assert atomic.current_umask() == umask_027


def test_publish_gives_every_file_and_dir_the_modes_of_the_umask(tmp_path: Path, umask_027: int) -> None:
    out = tmp_path / "ckpt"
    tmp = atomic.staging_dir(out)
    # what safetensors (a private temporary file renamed into place) leaves behind
    fd = os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    (tmp / "config.json").write_text("{}")
    (tmp / "sub").mkdir(mode=0o700)
    (tmp / "sub" / "x.bin").write_bytes(b"x")
    os.chmod(tmp / "sub" / "x.bin", 0o600)
    (tmp / "exe").write_text("")
    os.chmod(tmp / "exe", 0o755)
    assert _mode(tmp / "model.safetensors") == 0o600 and _mode(tmp) == 0o750

    atomic.publish(tmp, out, overwrite=False)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 4
    assert {p.name: _mode(p) for p in files} == {p.name: 0o640 for p in files}
    assert _mode(out) == 0o750 and _mode(out / "sub") == 0o750


def test_publish_never_follows_a_symlink_out_of_the_checkpoint(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o600)
    out = tmp_path / "ckpt"
    tmp = atomic.staging_dir(out)
    (tmp / "link").symlink_to(outside)
    atomic.publish(tmp, out, overwrite=False)
    assert _mode(outside) == 0o600


def test_a_rejected_checkpoint_is_readable_too(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    tmp = atomic.staging_dir(out)
    os.close(os.open(tmp / "model.safetensors", os.O_WRONLY | os.O_CREAT, 0o600))
    kept = atomic.reject(tmp, out)
    assert _mode(kept / "model.safetensors") == 0o666 & ~atomic.current_umask()


def test_staging_name_round_trips() -> None:
    info = atomic.parse_staging_name(f".my.model.quantkit-tmp-{os.getpid()}-1700000000000-{atomic._host()}")
    assert info is not None and (info.output, info.kind, info.pid) == ("my.model", "tmp", os.getpid())
    assert info.on_this_host and info.writer_alive() is True
    old = atomic.parse_staging_name(".m.quantkit-tmp-12-1700000000000")  # written before the host was recorded
    assert old is not None and old.host is None and old.on_this_host
    assert atomic.parse_staging_name("m.quantkit-tmp-12-1") is None
    assert atomic.parse_staging_name(".m.rejected") is None


def test_next_run_removes_staging_dirs_of_dead_processes_only(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "ckpt"
    dead = _dead_pid()
    host = atomic._host()
    stale = tmp_path / f".ckpt.quantkit-tmp-{dead}-1700000000000-{host}"
    stale_legacy = tmp_path / f".ckpt.quantkit-tmp-{dead}-1700000000001"
    live = tmp_path / f".ckpt.quantkit-tmp-{os.getppid()}-1700000000000-{host}"  # pytest's parent runs
    elsewhere = tmp_path / f".ckpt.quantkit-tmp-{dead}-1700000000000-{host}x"  # PIDs of another host mean nothing
    other_output = tmp_path / f".other.quantkit-tmp-{dead}-1700000000000-{host}"
    previous = tmp_path / f".ckpt.quantkit-old-{dead}"  # killed mid-replace: the only copy of the old output
    for d in (stale, stale_legacy, live, elsewhere, other_output, previous):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"\0" * 16)

    with caplog.at_level(logging.WARNING, logger="quantkit.checkpoint.atomic"):
        tmp = atomic.staging_dir(out)
    assert not stale.exists() and not stale_legacy.exists()
    assert live.exists() and elsewhere.exists() and other_output.exists() and previous.exists()
    removed = [r.getMessage() for r in caplog.records if "removed" in r.getMessage()]
    assert len(removed) == 2 and all(f"process {dead}, which no longer runs" in m for m in removed)
    assert any("holds the previous ckpt" in r.getMessage() for r in caplog.records)

    # once the new output is published, the previous one moved aside by the killed run is garbage
    atomic.publish(tmp, out, overwrite=False)
    atomic.discard(atomic.staging_dir(out))
    assert not previous.exists() and live.exists()


def test_sweep_keeps_a_resumable_partial_dir(tmp_path: Path) -> None:
    """A model-free run's finished shards (``.NAME.quantkit-partial-KEY``) outlive the run that wrote them: the
    stale-staging sweep never removes them; only publishing the output does."""
    out = tmp_path / "out"
    partial = atomic.partial_dir(out, "0123abcd")
    (partial / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert atomic.parse_staging_name(partial.name) is None
    atomic.staging_dir(out)
    assert atomic.partial_dirs(out) == [partial] and (partial / "model-00001-of-00002.safetensors").is_file()
    atomic.discard_partials(out)
    assert not partial.exists()
