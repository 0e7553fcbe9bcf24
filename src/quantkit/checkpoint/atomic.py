"""Atomic checkpoint directories.

A checkpoint is written into a hidden temporary sibling of ``output_dir`` and renamed into place only when
it is complete and validated, so a crash or a failed validation never leaves something that looks like a
checkpoint at ``output_dir``. An existing ``output_dir`` is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from quantkit.errors import OutputExistsError

REJECTED_SUFFIX = ".rejected"


def check_output_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Refuse an existing, non-empty ``output_dir`` unless ``overwrite``; refuse a file in its place."""
    if output_dir.is_file():
        raise OutputExistsError(f"{output_dir} is a file, not a directory.", fix="Choose another output_dir.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"Output directory {output_dir} already exists and is not empty; quantkit never overwrites it silently.",
            fix="Choose another output_dir, or pass overwrite=True (CLI: --overwrite) to replace it.")


def staging_dir(output_dir: Path) -> Path:
    """A fresh temporary sibling of ``output_dir`` (same filesystem, so the final rename is atomic)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.quantkit-tmp-{os.getpid()}-{int(time.time() * 1000)}"
    tmp.mkdir()
    return tmp


def publish(tmp: Path, output_dir: Path, *, overwrite: bool) -> Path:
    """Move a complete checkpoint from ``tmp`` to ``output_dir``.

    With ``overwrite``, the old directory is moved aside first and deleted only after the new one is in place.
    """
    check_output_dir(output_dir, overwrite=overwrite)
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
    tmp.rename(dest)
    return dest


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
