"""Run the cookbook's scripts (``examples/NN_*.py``) in this process, as a user would run them.

Each example exposes ``main(argv) -> int``; running it in-process shares the already-imported torch,
transformers and llm-compressor between examples (seconds saved per run). ``run_once`` caches an example's
exit code and output next to what it wrote, so a checkpoint the CLI tests also need is produced once.
"""

from __future__ import annotations

import importlib.util
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: the calibration budget the tests pass to every calibrated example
SMALL_CALIBRATION = ("--num-samples", "16", "--seq-len", "128")


def example_path(name: str) -> Path:
    matches = sorted(EXAMPLES.glob(f"{name}*.py"))
    assert len(matches) == 1, f"expected one example named {name}*.py in {EXAMPLES}, found {matches}"
    return matches[0]


def load_example(name: str) -> ModuleType:
    path = example_path(name)
    spec = importlib.util.spec_from_file_location(f"quantkit_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *argv: object) -> tuple[int, str]:
    """Run ``examples/<name>*.py`` with ``argv``; return its exit code and stdout."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = load_example(name).main([str(a) for a in argv])
    return rc, buf.getvalue()


def run_once(root: Path, name: str, *argv: object) -> tuple[int, str]:
    """Like :func:`run_example`, but once per ``root``: later calls return the first run's result."""
    record = root / f".{name}.run.json"
    if record.is_file():
        data = json.loads(record.read_text())
        return data["rc"], data["stdout"]
    rc, out = run_example(name, *argv)
    root.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"rc": rc, "stdout": out}))
    return rc, out


def shared_w4a16(checkpoints: Path) -> tuple[Path, int, str]:
    """The W4A16 GPTQ checkpoint of example 03 on the embedded model (calibrated on the Python-docs set),
    made once per test session; the examples' tests check it and the CLI's report test serves it."""
    root = checkpoints / "shared-examples"
    rc, out = run_once(root, "03_", "--output-dir", root, "--algorithm", "gptq", "--hardware", "h100",
                       *SMALL_CALIBRATION)
    return root / "smollm2-135m-w4a16", rc, out
