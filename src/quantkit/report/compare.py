"""Compare an original and a quantized checkpoint as vLLM serves them.

Each checkpoint is probed in the serve environment (``quantkit generate --json``); where vLLM cannot run
the quantized format on this machine, perplexity falls back to transformers (compressed-tensors decompresses
on load) and the report says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from quantkit.checkpoint.reader import CheckpointView
from quantkit.errors import QuantkitError

log = logging.getLogger(__name__)


def greedy_agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """Token-level agreement of two greedy generations of the same prompts.

    ``prefix``: mean fraction of tokens generated before the first divergence; ``exact``: share of prompts
    whose whole continuation is identical.
    """
    fracs, exact = [], 0
    for x, y in zip(a, b):
        ta, tb = x["token_ids"], y["token_ids"]
        n = max(len(ta), len(tb), 1)
        k = 0
        while k < min(len(ta), len(tb)) and ta[k] == tb[k]:
            k += 1
        fracs.append(k / n)
        exact += int(ta == tb)
    return {"prefix": sum(fracs) / max(len(fracs), 1), "exact": exact / max(len(fracs), 1)}


def measure(path: str | Path, *, hardware: str | None, eval_tokens: int, speed: bool,
            perplexity: bool = True, eval_data: str | Path | None = None, **probe_args: Any) -> dict[str, Any]:
    """Probe one checkpoint in the serve environment; on failure, record why and fall back to transformers.
    Perplexity is scored on ``eval_data`` (.txt/.jsonl) or the shipped Hamlet."""
    from quantkit.serve.remote import probe_remote

    try:
        answer = probe_remote(path, hardware=hardware, eval_tokens=eval_tokens, speed=speed,
                              perplexity=perplexity, eval_data=eval_data, **probe_args)
        if answer.get("teardown_error"):
            log.warning("vLLM served %s, then crashed while shutting down: %s", path,
                        answer["teardown_error"].splitlines()[-1])
        return {"served": True, **answer}
    except QuantkitError as exc:
        log.warning("vLLM could not serve %s here: %s", path, exc.message)
        out: dict[str, Any] = {"served": False, "serve_error": exc.message}
        try:
            from quantkit.calibration import eval_source_name, eval_text
            from quantkit.eval.generate import greedy_of_model
            from quantkit.eval.perplexity import load_transformers, perplexity_of_model
            from quantkit.serve.probe import DEFAULT_PROMPTS

            tok, model = load_transformers(str(path))  # once, for both measurements
        except Exception as exc2:  # noqa: BLE001 - reported, not raised: the report still has value
            why = f"{type(exc2).__name__}: {exc2}"
            out.update({"perplexity_error": why} if perplexity else {}, generation_error=why)
            return out
        if perplexity:
            try:
                out["perplexity"] = perplexity_of_model(model, tok, eval_text(eval_data), max_tokens=eval_tokens)
                out["perplexity"].update(via="transformers", source=eval_source_name(eval_data))
            except Exception as exc2:  # noqa: BLE001
                out["perplexity_error"] = f"{type(exc2).__name__}: {exc2}"
        try:
            out["generations"] = greedy_of_model(model, tok, probe_args.get("prompts") or DEFAULT_PROMPTS,
                                                 max_tokens=probe_args.get("max_tokens", 32))
            out["generations_via"] = "transformers"
        except Exception as exc2:  # noqa: BLE001
            out["generation_error"] = f"{type(exc2).__name__}: {exc2}"
        return out


def checkpoint_bytes(path: str | Path) -> int:
    return CheckpointView(path).total_bytes()
