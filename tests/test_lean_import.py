"""`import quantkit` (and the light subpackages the CLI imports) must not pull heavy frameworks."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "llmcompressor", "modelopt", "vllm", "compressed_tensors", "datasets")


def _loaded_after(stmt: str) -> list[str]:
    code = f"import sys; {stmt}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_import_quantkit_is_light() -> None:
    assert _loaded_after("import quantkit") == []


def test_public_names_resolve_lazily_without_heavy_imports() -> None:
    assert _loaded_after("from quantkit import quantize, load, validate, plan, SCHEMES, HARDWARE") == []


def test_cli_and_validator_are_light() -> None:
    assert _loaded_after("import quantkit.cli, quantkit.validation, quantkit.planning.planner") == []
