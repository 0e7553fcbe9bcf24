"""Progress of long jobs: named stages (``[k/n]``), steps within a stage with an ETA, and a run log.

A round trip on a CPU is minutes of work in other libraries: llm-compressor's calibration passes, vLLM's engine
start. :class:`Progress` gives each phase a name and a place (stage k of n), shows the step inside it (the
layer being calibrated, what vLLM is doing) with the time spent and an estimate of what is left, and keeps what
the libraries print (loguru lines, tqdm bars, warnings) in a run log file instead of the terminal; ``verbose``
shows that output too.

The active :class:`Progress` is a context variable, so the pipeline and the backends report to it without it
being passed through every signature; with none active, :func:`current` returns one that prints nothing and
captures nothing (the Python API then behaves as the libraries do on their own).
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

#: a line a child process (the serve environment) writes to stderr to report a step to the parent
CHILD_PREFIX = "quantkit-progress: "
#: set in a child's environment by a parent that relays its steps
CHILD_ENV = "QUANTKIT_PROGRESS_TO_PARENT"


@dataclass(frozen=True)
class StepInfo:
    """A step a library's output line revealed: ``label done/total``; ``fraction`` of the whole stage (0..1)
    when the stage has several passes over the same counter."""

    label: str
    done: int | None = None
    total: int | None = None
    fraction: float | None = None


#: a parser of one line of a library's output (it may keep state across lines)
LineParser = Callable[[str], "StepInfo | None"]

_current: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("quantkit_progress", default=None)


def fmt_s(seconds: float) -> str:
    """``75.2`` → ``1:15``; ``3725`` → ``1:02:05``."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass
class _Stage:
    index: int
    title: str
    started: float
    estimate_s: float | None = None
    fraction: float | None = None  # 0..1 within the stage, when steps say so
    first: tuple[float, float] | None = None  # (time, fraction) of the first step that said how far it was

    def left_s(self, now: float) -> float | None:
        """Seconds left, from the pace since the first fractional step (what came before it, e.g. loading the
        model, says nothing about the pace); None until 2 % of the stage has been seen at that pace."""
        if self.fraction is None or self.first is None or self.fraction >= 1:
            return None
        t0, f0 = self.first
        if self.fraction - f0 < 0.02:
            return None
        return (now - t0) / (self.fraction - f0) * (1 - self.fraction)


@dataclass
class Progress:
    """Stages of one job, printed to ``stream``; library output goes to ``log_path`` (and ``stream`` if verbose).

    ``stages`` are the titles known up front (their count is the ``n`` of ``[k/n]``); ``estimates`` maps a
    title to the seconds it is expected to take, used for the overall ETA (a stage that ran gives its measured
    time to a later stage of the same kind through :meth:`estimate`).
    """

    stages: Sequence[str]
    stream: TextIO | None = None
    log_path: Path | None = None
    verbose: bool = False
    min_interval_s: float = 5.0
    estimates: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)
    _stage: _Stage | None = None
    _last_print: float = 0.0
    _last_step: str = ""
    _log: TextIO | None = None
    _done: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stream = self.stream or sys.stderr
        self._lock = threading.Lock()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in close()

    # -- activation ---------------------------------------------------------------------------------------
    @contextmanager
    def active(self) -> Iterator[Progress]:
        """Make this the progress that :func:`current` returns inside the block; closes the log at the end."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)
            self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- stages -------------------------------------------------------------------------------------------
    @contextmanager
    def stage(self, title: str, detail: str = "") -> Iterator[None]:
        """One named stage: ``[k/n] title - detail`` when it starts, its duration when it ends."""
        index = list(self.stages).index(title) + 1 if title in self.stages else len(self._done) + 1
        self._stage = _Stage(index, title, time.perf_counter(), self.estimates.get(title))
        self._last_step = ""
        eta = self._overall_eta()
        self._print(f"[{index}/{self.total}] {title}" + (f" - {detail}" if detail else "")
                    + f"  ({fmt_s(self.elapsed)} so far" + (f", about {fmt_s(eta)} to go)" if eta else ")"))
        ok = False
        try:
            yield
            ok = True
        finally:
            st, self._stage = self._stage, None
            took = time.perf_counter() - st.started
            self._done.append(title)
            self._print(f"[{index}/{self.total}] {title}: {'done' if ok else 'stopped'} in {fmt_s(took)}")

    @property
    def total(self) -> int:
        return max(len(self.stages), len(self._done) + (1 if self._stage else 0))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def estimate(self, title: str, seconds: float) -> None:
        """Expect stage ``title`` to take ``seconds`` (for the overall ETA)."""
        self.estimates[title] = seconds

    def _overall_eta(self) -> float | None:
        todo = [t for t in self.stages if t not in self._done and (self._stage is None or t != self._stage.title)]
        if any(t not in self.estimates for t in todo):
            return None
        rest = sum(self.estimates[t] for t in todo)
        st = self._stage
        if st is not None:
            spent = time.perf_counter() - st.started
            left = st.left_s(time.perf_counter())
            if left is not None:
                rest += left
            elif st.estimate_s is not None:
                rest += max(st.estimate_s - spent, 0.0)
            else:
                return None
        return rest

    # -- steps within a stage -----------------------------------------------------------------------------
    def step(self, label: str, done: int | None = None, total: int | None = None, *,
             fraction: float | None = None) -> None:
        """Report a step inside the current stage (``layer 5/31``); printed at most every ``min_interval_s``
        unless the label's kind changed. ``fraction`` (0..1) of the whole stage feeds the ETA."""
        st = self._stage
        if st is None:
            return
        if fraction is None and done is not None and total:
            fraction = done / total
        if fraction is not None:
            st.fraction = min(max(fraction, 0.0), 1.0)
            if st.first is None:
                st.first = (time.perf_counter(), st.fraction)
        kind = re.sub(r"\d+", "", label)
        now = time.perf_counter()
        if kind == self._last_step and now - self._last_print < self.min_interval_s:
            return
        self._last_step = kind
        spent = now - st.started
        where = f" {done}/{total}" if done is not None and total else ""
        tail = f"{fmt_s(spent)} in this stage"
        left = st.left_s(now)
        if left is not None:
            tail += f", about {fmt_s(left)} left"
        self._print(f"    {label}{where}  ({tail})")

    def child_line(self, line: str) -> bool:
        """Handle one stderr line of a child process: steps it reports are shown, every line is logged."""
        self.log(line)
        if line.startswith(CHILD_PREFIX):
            self.step(line[len(CHILD_PREFIX):].strip())
            return True
        return False

    # -- output ---------------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        """Append ``text`` to the run log (and show it if verbose)."""
        with self._lock:
            if self._log is not None:
                self._log.write(text if text.endswith("\n") else text + "\n")
                self._log.flush()
        if self.verbose:
            self._write(text if text.endswith("\n") else text + "\n")

    def _print(self, line: str) -> None:
        self._last_print = time.perf_counter()
        self._write(line + "\n")
        with self._lock:
            if self._log is not None:
                self._log.write(f"== {line}\n")
                self._log.flush()

    def _write(self, text: str) -> None:
        with self._lock:
            assert self.stream is not None
            self.stream.write(text)
            self.stream.flush()

    @contextmanager
    def library_output(self, parser: LineParser | None = None) -> Iterator[None]:
        """Send what the libraries print to ``sys.stdout``/``sys.stderr`` inside the block to the run log;
        lines ``parser`` recognises become steps. Without a log file, output is left alone."""
        if self._log is None and not self.verbose:
            yield
            return
        sink = _LineSink(self, parser)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = sink  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            sink.flush_rest()


class _NullProgress(Progress):
    """What :func:`current` returns with no progress active: prints nothing, captures nothing."""

    def __init__(self) -> None:
        super().__init__(stages=(), stream=io.StringIO())

    def step(self, label: str, done: int | None = None, total: int | None = None, *,
             fraction: float | None = None) -> None:
        return None

    @contextmanager
    def stage(self, title: str, detail: str = "") -> Iterator[None]:
        yield

    @contextmanager
    def library_output(self, parser: LineParser | None = None) -> Iterator[None]:
        yield


_NULL = _NullProgress()


def current() -> Progress:
    """The active :class:`Progress`, or one that does nothing."""
    return _current.get() or _NULL


def is_active() -> bool:
    return _current.get() is not None


def child_step(text: str) -> None:
    """Report a step: to the parent that started this process (the serve environment answering the produce
    environment), which shows it under its current stage; otherwise as an INFO log line."""
    if os.environ.get(CHILD_ENV) == "1":
        sys.stderr.write(f"{CHILD_PREFIX}{text}\n")
        sys.stderr.flush()
    else:
        logging.getLogger("quantkit").info(text)


class _LineSink(io.TextIOBase):
    """A text stream that splits writes into lines (``\\r`` ends a line too: tqdm redraws with it), logs each,
    and turns the ones a parser recognises into steps."""

    def __init__(self, progress: Progress, parser: LineParser | None) -> None:
        super().__init__()
        self._p = progress
        self._parser = parser
        self._buf = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # tqdm then draws fewer frames (no terminal to animate)
        return False

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = re.split(r"[\r\n]", self._buf)
        for line in lines:
            if line.strip():
                self._line(line)
        return len(s)

    def _line(self, line: str) -> None:
        if line.startswith("[quantkit]"):  # quantkit's own messages stay on the terminal
            self._p._write(line + "\n")
            self._p.log(line) if not self._p.verbose else None
            return
        self._p.log(line)
        if self._parser is not None:
            hit = self._parser(line)
            if hit is not None:
                self._p.step(hit.label, hit.done, hit.total, fraction=hit.fraction)

    def flush_rest(self) -> None:
        if self._buf.strip():
            self._line(self._buf)
        self._buf = ""
