"""Atomic checkpoint directories.

A checkpoint is written into a hidden temporary sibling of ``output_dir`` and renamed into place only when
it is complete and validated, so a crash or a failed validation never leaves something that looks like a
checkpoint at ``output_dir``. An existing ``output_dir`` is replaced only with ``overwrite=True``.

A run killed hard (SIGKILL, OOM killer, power loss) cannot clean up after itself: its staging directory
stays behind. Staging names carry the writer's PID and host, so the next run staging the same output on the
same host removes the ones whose process is gone (:func:`sweep_stale`), and ``quantkit validate`` warns on
one (:func:`parse_staging_name`).

A model-free run also keeps its finished output shards in a resumable sibling, ``.NAME.quantkit-partial-KEY``
(:func:`partial_dir`), where ``KEY`` names the plan and source it was made for. It never looks like a
checkpoint (no index, no config), the stale-staging sweep leaves it alone, the next run of the same plan
resumes from it, and it is removed once that run's output is published (:func:`discard_partials`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from quantkit.errors import OutputExistsError

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected"

#: ``.NAME.quantkit-tmp-PID-MILLIS-HOST`` (staging), ``.NAME.quantkit-offload-PID-MILLIS-HOST`` (the weights an
#: offloaded run keeps on disk) and ``.NAME.quantkit-old-PID`` (an output being replaced); the host part is
#: absent in names written before it existed
_STAGING_RE = re.compile(r"^\.(?P<output>.+)\.quantkit-(?P<kind>tmp|old|offload)-(?P<pid>\d+)"
                         r"(?:-(?P<millis>\d+)(?:-(?P<host>[A-Za-z0-9_-]+))?)?$")


_PARTIAL_RE = re.compile(r"^\.(?P<output>.+)\.quantkit-partial-(?P<key>[0-9a-f]+)$")


@dataclass(frozen=True)
class StagingName:
    """What the name of a quantkit staging directory says about the run that made it."""

    output: str  # the name of the output directory it was for
    kind: str  # "tmp": a checkpoint being written; "old": a previous output being replaced; "offload": weights
    # an offloaded run keeps on disk
    pid: int
    host: str | None  # None in names written before the host was recorded

    @property
    def on_this_host(self) -> bool:
        return self.host is None or self.host == _host()

    def writer_alive(self) -> bool | None:
        """Whether the writing process still runs; None when it ran on another host (cannot tell)."""
        return pid_alive(self.pid) if self.on_this_host else None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"


def parse_staging_name(name: str) -> StagingName | None:
    """The parts of a quantkit staging directory name, or None for any other name."""
    m = _STAGING_RE.match(name)
    if m is None:
        return None
    return StagingName(m["output"], m["kind"], int(m["pid"]), m["host"])


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (a recycled PID counts as alive: never guess)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True
    return True


def check_output_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Refuse an existing, non-empty ``output_dir`` unless ``overwrite``; refuse a file in its place."""
    if output_dir.is_file():
        raise OutputExistsError(f"{output_dir} is a file, not a directory.", fix="Choose another output_dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"Output directory {output_dir} already exists and is not empty; quantkit never overwrites it silently.",
            fix="Choose another output_dir, or pass overwrite=True (CLI: --overwrite) to replace it.")


def sweep_stale(output_dir: Path) -> list[Path]:
    """Remove staging directories of ``output_dir`` left by killed runs on this host; return what was removed.

    Only directories named for this output, written on this host, whose PID no longer exists are removed:
    a live writer (or a PID since reused) keeps its directory, and so does a run on another host sharing
    the filesystem, whose PIDs mean nothing here. A previous output moved aside (``quantkit-old``) is
    removed only when the new output is in place.
    """
    removed: list[Path] = []
    if not output_dir.parent.is_dir():
        return removed
    for p in output_dir.parent.iterdir():
        info = parse_staging_name(p.name)
        if info is None or info.output != output_dir.name or not p.is_dir() or p.is_symlink():
            continue
        if info.pid == os.getpid() or info.writer_alive() is not False:
            continue
        if info.kind == "old" and not output_dir.exists():
            # killed between moving the previous output aside and renaming the new one in: this is the
            # user's only copy of the previous output, never ours to delete
            log.warning("%s holds the previous %s (a run was killed while replacing it); rename it back "
                        "or delete it", p, output_dir.name)
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
            log.warning("removed %s: a staging directory left by process %d, which no longer runs "
                        "(a run killed before it could clean up)", p, info.pid)
    return removed


def staging_dir(output_dir: Path) -> Path:
    """A fresh temporary sibling of ``output_dir`` (same filesystem, so the final rename is atomic).

    Staging directories of the same output left by dead processes are removed first (:func:`sweep_stale`).
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(output_dir)
    tmp = output_dir.parent / f".{output_dir.name}.quantkit-tmp-{os.getpid()}-{int(time.time() * 1000)}-{_host()}"
    tmp.mkdir()
    return tmp


def partial_dir(output_dir: Path, key: str) -> Path:
    """The resumable sibling of ``output_dir`` for the model-free run identified by ``key`` (a hex digest of its
    plan and source); created if missing. Not a staging directory: :func:`sweep_stale` never removes it."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    path = output_dir.parent / f".{output_dir.name}.quantkit-partial-{key}"
    path.mkdir(exist_ok=True)
    return path


def partial_dirs(output_dir: Path) -> list[Path]:
    """Every resumable model-free directory of ``output_dir`` (whatever plan it was for)."""
    if not output_dir.parent.is_dir():
        return []
    return sorted(p for p in output_dir.parent.iterdir()
                  if (m := _PARTIAL_RE.match(p.name)) and m["output"] == output_dir.name and p.is_dir()
                  and not p.is_symlink())


def discard_partials(output_dir: Path) -> None:
    """Remove the resumable model-free directories of ``output_dir`` (its output is published)."""
    for p in partial_dirs(output_dir):
        shutil.rmtree(p, ignore_errors=True)


def offload_dir(output_dir: Path) -> Path:
    """A sibling of ``output_dir`` for the weights an offloaded run keeps on disk (never published; removed when
    the run ends, or by the next run to the same output when it was killed: :func:`sweep_stale`)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    path = output_dir.parent / (f".{output_dir.name}.quantkit-offload-{os.getpid()}-{int(time.time() * 1000)}-"
                                f"{_host()}")
    path.mkdir()
    return path


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes a plain ``open()``/``mkdir`` would have given them.

    Files become ``0o666 & ~umask`` and directories ``0o777 & ~umask``. safetensors (like anything saving
    through a private temporary file: ``tempfile.mkstemp``, Rust's ``tempfile``) creates its files
    ``0o600``, which a vLLM server running under another uid or in a container cannot read; everything
    quantkit publishes must be readable the way the user's other files are.
    """
    mask = current_umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    for dirpath, _, filenames in os.walk(root):  # does not follow symlinks out of the checkpoint
        _chmod(dirpath, dir_mode)
        for name in filenames:
            _chmod(os.path.join(dirpath, name), file_mode)


def _chmod(path: str, mode: int) -> None:
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def publish(tmp: Path, output_dir: Path, *, overwrite: bool) -> Path:
    """Move a complete checkpoint from ``tmp`` to ``output_dir``, with the modes the user's umask gives.

    With ``overwrite``, the old directory is moved aside first and deleted only after the new one is in place.
    """
    check_output_dir(output_dir, overwrite=overwrite)
    apply_umask(tmp)
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.quantkit-old-{os.getpid()}"
        output_dir.rename(old)
    try:
        tmp.rename(output_dir)
    except OSError:
        if old is not None:
            old.rename(output_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return output_dir


def reject(tmp: Path, output_dir: Path) -> Path:
    """Keep a checkpoint that failed validation aside, under a name that cannot be mistaken for a result."""
    dest = output_dir.parent / f"{output_dir.name}{REJECTED_SUFFIX}"
    if dest.exists():
        shutil.rmtree(dest)
    apply_umask(tmp)  # kept for someone to inspect, possibly under another uid
    tmp.rename(dest)
    return dest


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
