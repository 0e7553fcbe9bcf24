"""Distributed oneshot (``quantize(nproc=N)``, ``quantkit quantize --nproc N``): quantkit launches itself under
torchrun (``python -m torch.distributed.run``) with N processes, the way llm-compressor's own DDP examples run.

Each rank loads the model through compressed-tensors' ``load_offloaded_model`` (rank 0 reads the weights into
shared CPU memory, the other ranks map them), calibrates on its slice of the samples (the split of
llm-compressor's ``get_rank_partition``), and llm-compressor's GPTQ sums the Hessians across ranks and quantizes
each module on one rank (``GPTQModifier.compress_modules``). Rank 0 alone writes, validates and publishes the
checkpoint (the usual staging directory and atomic rename); the launching process only waits and reads the
result rank 0 leaves behind.

The launch is the parent's only job; everything a rank does is ``quantkit.pipeline.quantize()`` with the same
arguments, run inside the process group this module opens (``main``). Nothing here imports torch at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: environment variables torchrun sets in every process it starts (torch/distributed/run.py)
TORCHRUN_ENV = ("TORCHELASTIC_RUN_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def is_worker() -> bool:
    """Whether this process is one of the ranks torchrun started (not the launching process)."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def rank() -> int:
    """This process's rank (0 outside a torchrun launch)."""
    return int(os.environ.get("RANK", "0")) if is_worker() else 0


def world_size() -> int:
    """The number of ranks (1 outside a torchrun launch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if is_worker() else 1


def rank_slice(num_samples: int, index: int, ranks: int) -> tuple[int, int]:
    """``(start, end)`` of rank ``index``'s calibration samples: llm-compressor's split
    (``datasets/utils.py: get_rank_partition``), floor(n * i / N) to floor(n * (i + 1) / N)."""
    return num_samples * index // ranks, num_samples * (index + 1) // ranks


def launch_command(spec: Path, nproc: int, *, python: str | None = None) -> list[str]:
    """The command that runs ``quantize()`` on ``nproc`` ranks of this host.

    ``--standalone`` makes torchrun start its own rendezvous on a free local port (one node); every rank runs
    ``python -m quantkit.backends.distributed SPEC``, which reads the ``quantize()`` arguments from ``spec``.
    """
    if nproc < 2:
        raise ValueError(f"a distributed launch needs 2 or more processes, got {nproc}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "quantkit.backends.distributed", str(spec)]


def launch(plan: Any, execute_kwargs: dict[str, Any], work: Path) -> Any:
    """Run ``pipeline.execute(plan, **execute_kwargs)`` on ``plan.production_nproc`` ranks; return rank 0's
    :class:`~quantkit.pipeline.QuantizeResult`.

    The plan and arguments go to the ranks pickled in ``work`` (the caller removes it): every rank executes the
    very plan this process made, never a re-planned one. The ranks' output is copied to this process's
    ``sys.stdout``.

    Raises:
        QuantkitError: the error rank 0 raised, re-raised here with its rule and fix.
        BackendError: torchrun failed, or a rank failed before rank 0 could report.
    """
    import pickle

    from quantkit import errors

    spec_path, result_path, error_path = work / "spec.pickle", work / "result.pickle", work / "error.json"
    spec_path.write_bytes(pickle.dumps({"plan": plan, "kwargs": execute_kwargs, "result": str(result_path),
                                        "error": str(error_path)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_src_root(), os.environ.get("PYTHONPATH"))
                                                      if p)}
    nproc = plan.production_nproc
    # the ranks' output goes through this process's sys.stdout, so a progress display routes it to the run log
    with subprocess.Popen(launch_command(spec_path, nproc), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
        sys.stdout.flush()
    if error_path.is_file():
        err = json.loads(error_path.read_text())
        cls = getattr(errors, str(err.get("error")), None)
        if not (isinstance(cls, type) and issubclass(cls, errors.QuantkitError)):
            cls = errors.BackendError
        raise cls(err["message"], fix=err.get("fix"), rule=err.get("rule"))
    if proc.returncode != 0 or not result_path.is_file():
        raise errors.BackendError(
            f"The distributed quantize ({nproc} processes under torchrun) exited with status {proc.returncode}"
            + ("" if result_path.is_file() else " before rank 0 reported a result") + ".",
            fix="Read the ranks' output above; run once with nproc=1 to see whether the single-process path "
                "works.")
    return pickle.loads(result_path.read_bytes())


def _src_root() -> str:
    """The directory ``quantkit`` is imported from, so every rank imports this same copy."""
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def process_group() -> Iterator[None]:
    """The torch.distributed process group of this rank: NCCL with one GPU per rank where CUDA is available
    (rank ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``), else gloo on CPU.

    compressed-tensors' ``init_dist()`` is what llm-compressor's examples call; it needs an accelerator
    (``torch.accelerator.current_accelerator().type`` raises on a CPU-only host), so the group is opened here.
    """
    import torch
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one rank: ``python -m quantkit.backends.distributed SPEC`` (a pickle from :func:`launch`).
    Rank 0 pickles its result (or writes its error as JSON) where the spec says."""
    import pickle

    from quantkit.errors import QuantkitError
    from quantkit.pipeline import execute

    args = list(sys.argv[1:] if argv is None else argv)
    spec = pickle.loads(Path(args[0]).read_bytes())
    me = rank()
    try:
        with process_group():
            result = execute(spec["plan"], **spec["kwargs"])
    except QuantkitError as exc:
        if me == 0:
            Path(spec["error"]).write_text(json.dumps(exc.to_dict()))
        if exc.__cause__ is not None:
            # the chained exception lives in this rank's process only: print it here, where the launcher's
            # output shows it, since the error that reaches quantize() carries the message alone
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"rank {me}: {exc}", file=sys.stderr)
        return 1
    if me == 0:
        Path(spec["result"]).write_bytes(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
