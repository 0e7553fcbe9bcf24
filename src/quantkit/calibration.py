"""Calibration and evaluation text: the user's, or the text shipped with quantkit.

Calibration data may be a list of strings, a list of chats (``[{"role": ..., "content": ...}, ...]``, rendered
with the model's chat template), a ``datasets.Dataset`` (a ``text`` or chat ``messages`` column, or already
tokenized ``input_ids``), a path to a ``.txt`` file or a ``.jsonl`` file of ``{"text": ...}`` or
``{"messages": [...]}`` rows, or None for the embedded default (Macbeth and Julius Caesar). Evaluation uses
*Hamlet*, which calibration never sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from quantkit.errors import CalibrationDataError

DEFAULT_NUM_SAMPLES = 64
DEFAULT_MAX_SEQ_LENGTH = 512
#: the embedded 135M demo calibrates on less than a real model needs, so the README's main job stays short:
#: W8A8 with 32 x 256 tokens lands within 0.1 point of 64 x 512 in perplexity (docs/benchmarks.md)
#: fewer calibration tokens than this (when the data, not the budget, runs out) is refused: activation ranges
#: and GPTQ's Hessian estimated from a sentence or two are noise
MIN_CALIBRATION_TOKENS = 128
EMBEDDED_DEMO_SAMPLES = 32
EMBEDDED_DEMO_SEQ_LENGTH = 256
CALIBRATION_FILE = "calibration_macbeth_caesar.txt"
EVAL_FILE = "eval_hamlet.txt"


def shipped_text(name: str) -> str:
    """Read one of the text files shipped in ``quantkit/data``."""
    return resources.files("quantkit").joinpath("data", name).read_text(encoding="utf-8")


def default_calibration_text() -> str:
    return shipped_text(CALIBRATION_FILE)


def default_eval_text() -> str:
    return shipped_text(EVAL_FILE)


def _jsonl_objects(path: Path) -> list[tuple[str, Any]]:
    """``("NAME line N", object)`` for every non-blank line of a JSONL file; a line that is not JSON is one
    clear error naming it."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{path.name} line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise CalibrationDataError(f"{path.name} line {n} is not JSON ({e.msg}).",
                                       fix="Write one JSON object per line.") from None
    return out


def eval_text(source: str | Path | None = None) -> str:
    """Held-out text to score perplexity on: a ``.txt`` file, a ``.jsonl`` of ``{"text": ...}`` rows (joined
    by blank lines), or None for the shipped *Hamlet*. Keep it out of the calibration data."""
    if source is None:
        return default_eval_text()
    path = Path(source)
    if not path.is_file():
        raise CalibrationDataError(f"Evaluation file {str(path)!r} does not exist.",
                                   fix="Pass an existing .txt file or a .jsonl of {\"text\": ...} rows.")
    if path.suffix != ".jsonl":
        text = path.read_text(encoding="utf-8")
    else:
        rows = []
        for where, obj in _jsonl_objects(path):
            if not isinstance(obj, dict) or "text" not in obj:
                raise CalibrationDataError(f"{where} has no 'text' field.",
                                           fix='Evaluation rows are {"text": ...} objects.')
            rows.append(str(obj["text"]))
        text = "\n\n".join(rows)
    if not text.strip():
        raise CalibrationDataError(f"Evaluation file {path.name} holds no text.", fix="Pass a file with text.")
    return text


def eval_source_name(source: str | Path | None) -> str:
    return f"file {Path(source).name}" if source is not None else f"built-in text ({EVAL_FILE}: Hamlet)"


@dataclass(frozen=True)
class CalibrationSize:
    """How much calibration data a plan asks for, and why."""

    num_samples: int
    max_seq_length: int
    reason: str


def calibration_size(*, embedded: bool, recommendation: tuple[int, int, str]) -> CalibrationSize:
    """The embedded demo's short calibration, or the producer's recommendation for a real model."""
    if embedded:
        n, t, _ = recommendation
        return CalibrationSize(EMBEDDED_DEMO_SAMPLES, EMBEDDED_DEMO_SEQ_LENGTH,
                               f"the embedded 135M demo: {EMBEDDED_DEMO_SAMPLES} x {EMBEDDED_DEMO_SEQ_LENGTH} tokens "
                               f"to keep the main job short (real models get {n} x {t}, the producer's "
                               "recommendation)")
    n, t, source = recommendation
    return CalibrationSize(n, t, f"{n} x {t} tokens ({source})")


def builtin_text_warning(model: str) -> str:
    """The warning for calibrating a model other than the embedded one on the shipped Shakespeare text."""
    return (f"[calibration] {Path(model).name} is calibrated on quantkit's built-in text (Macbeth and Julius "
            "Caesar, ~69k tokens of early-modern English): scales fitted to it can misfit the model's own domain. "
            "Pass calibration= (quantize) / --calibration with text or chats from the deployment's domain.")


def describe_calibration(calibration: Any) -> str:
    """Name the calibration source for the manifest and the report."""
    if calibration is None:
        return f"built-in text ({CALIBRATION_FILE}: Macbeth and Julius Caesar)"
    if isinstance(calibration, (str, Path)):
        return f"file {Path(calibration).name}"
    if hasattr(calibration, "column_names"):
        return f"datasets.Dataset ({len(calibration)} rows)"
    if isinstance(calibration, Sequence):
        kind = "chats" if calibration and _is_chat(calibration[0]) else "texts"
        return f"list of {len(calibration)} {kind}"
    return type(calibration).__name__


class Chat(tuple):
    """One conversation (``[{"role": ..., "content": ...}, ...]``): rendered with the model's chat template
    before tokenizing, so an instruct model is calibrated on what it will be served."""


def _is_chat(x: Any) -> bool:
    return (isinstance(x, (list, tuple)) and bool(x)
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in x))


def _row(row: Any, where: str) -> str | Chat:
    if isinstance(row, dict):
        if "messages" in row and _is_chat(row["messages"]):
            return Chat(row["messages"])
        if "text" in row:
            return str(row["text"])
        raise CalibrationDataError(f"{where} has keys {sorted(row)}; quantkit reads 'text' or chat 'messages'.",
                                   fix='Write one {"text": ...} or {"messages": [{"role": ..., "content": ...}]} '
                                       "object per line.")
    if _is_chat(row):
        return Chat(row)
    return str(row)


def _texts_from(calibration: Any) -> list[str | Chat] | list[list[int]]:
    if calibration is None:
        return [default_calibration_text()]
    if isinstance(calibration, (str, Path)):
        path = Path(calibration)
        if not path.is_file():
            raise CalibrationDataError(f"Calibration file {str(path)!r} does not exist.",
                                       fix="Pass a list of strings or chats, a datasets.Dataset, or an existing "
                                           ".txt/.jsonl.")
        if path.suffix == ".jsonl":
            rows: list[str | Chat] = [_row(obj, where) for where, obj in _jsonl_objects(path)]
            if not rows:
                raise CalibrationDataError(f"{path.name} has no rows.", fix="Write at least one JSON line.")
            return rows
        return [path.read_text(encoding="utf-8")]
    if hasattr(calibration, "column_names"):  # datasets.Dataset, without importing datasets here
        cols = calibration.column_names
        if "input_ids" in cols:
            return [list(map(int, row)) for row in calibration["input_ids"]]
        if "messages" in cols:
            return [Chat(m) for m in calibration["messages"]]
        if "text" in cols:
            return [str(t) for t in calibration["text"]]
        raise CalibrationDataError(f"The calibration Dataset has columns {cols}; quantkit needs 'text', chat "
                                   "'messages' or 'input_ids'.",
                                   fix="Rename your text column to 'text' (dataset.rename_column(...)).")
    if isinstance(calibration, Sequence) and not isinstance(calibration, (str, bytes)):
        if not calibration:
            raise CalibrationDataError("The calibration list is empty.",
                                       fix="Pass at least one text, or None for the default.")
        if all(isinstance(t, str) for t in calibration):
            return list(calibration)
        if all(_is_chat(t) for t in calibration):
            return [Chat(t) for t in calibration]
    raise CalibrationDataError(f"Unsupported calibration data of type {type(calibration).__name__}.",
                               fix="Pass a list of strings, a list of chats ([{'role': ..., 'content': ...}]), a "
                                   "datasets.Dataset, a .txt/.jsonl path, or None.")


def check_enough(samples: tuple[tuple[int, ...], ...], *, num_samples: int, max_seq_length: int) -> None:
    """Refuse calibration data that ran out before ``min(budget, MIN_CALIBRATION_TOKENS)`` tokens."""
    have = sum(len(x) for x in samples)
    need = min(num_samples * max_seq_length, MIN_CALIBRATION_TOKENS)
    if have < need:
        raise CalibrationDataError(
            f"The calibration data gave only {have} tokens ({len(samples)} samples); calibrating needs at least "
            f"{need}.", fix=f"Pass more text or chats (the plan asks for {num_samples} x {max_seq_length} tokens).")


def check_calibration(calibration: Any) -> None:
    """Read the calibration data once so a missing file or a bad row fails before any expensive work."""
    _texts_from(calibration)


def _render_chat(chat: Chat, tokenizer: Any) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise CalibrationDataError("Chat calibration data was given, but the tokenizer has no chat template.",
                                   fix="Pass plain text ({'text': ...}) for a base model, or a tokenizer with a "
                                       "chat_template.")
    return str(tokenizer.apply_chat_template(list(chat), tokenize=False))


def tokenize_samples(calibration: Any, tokenizer: Any, *, num_samples: int = DEFAULT_NUM_SAMPLES,
                     max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH) -> tuple[tuple[int, ...], ...]:
    """Turn calibration data into up to ``num_samples`` token sequences of at most ``max_seq_length``.

    Long texts are cut into consecutive windows of ``max_seq_length`` tokens; short texts are kept as they
    are (one sample each), so a list of prompts calibrates on exactly those prompts.
    """
    if num_samples < 1 or max_seq_length < 8:
        raise CalibrationDataError(f"num_samples={num_samples}, max_seq_length={max_seq_length} are too small.",
                                   fix="Use num_samples >= 1 and max_seq_length >= 8.")
    items = _texts_from(calibration)
    samples: list[tuple[int, ...]] = []
    for item in items:
        if isinstance(item, Chat):  # the template carries the special tokens the model is served with
            item = _render_chat(item, tokenizer)
        ids = item if isinstance(item, list) else tokenizer(item, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), max_seq_length):
            window = ids[start:start + max_seq_length]
            if len(window) >= 8 or (start == 0 and window):
                samples.append(tuple(int(i) for i in window))
            if len(samples) >= num_samples:
                return tuple(samples)
    if not samples:
        raise CalibrationDataError("The calibration data produced no tokens.", fix="Pass non-empty text.")
    return tuple(samples)
