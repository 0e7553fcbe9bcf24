"""Whether the directory is a published checkpoint: not a staging leftover, tokenizer present."""

from __future__ import annotations

import os
from pathlib import Path

from quantkit.checkpoint import MANIFEST
from quantkit.checkpoint.atomic import parse_staging_name
from quantkit.validation.checks import check
from quantkit.validation.context import Context

#: files of which at least one accompanies every tokenizer transformers and vLLM load
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "tekken.json")


def has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in TOKENIZER_FILES) or any(path.glob("*.tiktoken"))


@check("published-complete")
def published_complete(ctx: Context) -> None:
    path = ctx.view.path.resolve()
    tokenizer = has_tokenizer(path)
    staging = parse_staging_name(path.name)
    # quantize() validates its own staging directory before publishing it: that one is not a leftover
    if staging is not None and staging.pid != os.getpid():
        alive = staging.writer_alive()
        writer = (f"process {staging.pid}, which no longer runs: the run was killed before it published"
                  if alive is False else f"process {staging.pid}, which is still running: the write may not be done"
                  if alive else f"process {staging.pid} on host {staging.host}")
        what = "a checkpoint being written" if staging.kind == "tmp" else "an output being replaced"
        missing = [name for name, ok in ((MANIFEST, (path / MANIFEST).is_file()), ("tokenizer", tokenizer)) if not ok]
        lacks = f"; it has no {' and no '.join(missing)}, which a finished quantkit checkpoint has" if missing else ""
        ctx.findings.add("published-complete",
                         f"{path.name} is a quantkit staging directory ({what} for {staging.output!r}) by {writer}"
                         f"{lacks}. Every other rule can pass on a half-written checkpoint.",
                         fix=f"Use the published output {staging.output!r} instead and delete this directory (the next "
                             f"`quantkit quantize` to {staging.output} on this host removes it once its process "
                             "is dead).")
        return
    if tokenizer:
        return
    if (path / MANIFEST).is_file():
        ctx.findings.add("published-complete",
                         f"{MANIFEST} says quantkit wrote this checkpoint, but the tokenizer quantkit publishes "
                         "with every checkpoint is missing: an incomplete copy?",
                         fix="Copy the tokenizer files (tokenizer.json, tokenizer_config.json, ...) from the source "
                             "model, or copy the published directory again.")
    else:
        ctx.findings.add("published-complete",
                         "No tokenizer files here (weights-only checkpoint?): vLLM serves it only with "
                         "`--tokenizer` pointing at the original model.",
                         fix="Copy the tokenizer files from the source model, or pass `--tokenizer` to vLLM.")
