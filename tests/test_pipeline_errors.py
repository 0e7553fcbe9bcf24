"""Bad input gets one clear error, before any expensive work, and never loses data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import quantkit
from quantkit.checkpoint import atomic
from quantkit.errors import (
    BackendError,
    MissingDependencyError,
    ModelNotFoundError,
    OutputExistsError,
    UnknownNameError,
    UnsupportedSchemeError,
)


def test_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Valid schemes"):
        quantkit.quantize("embedded", "int3", hardware="cpu", output_dir=tmp_path / "o")


def test_unknown_hardware_lists_valid(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="h100"):
        quantkit.quantize("embedded", "fp8-dynamic", hardware="tpu9", output_dir=tmp_path / "o")


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as e:
        quantkit.quantize(tmp_path / "nope", "fp8-dynamic", hardware="h100", output_dir=tmp_path / "o")
    assert "To resolve" in str(e.value)


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        quantkit.quantize(tmp_path / "m", "fp8-dynamic", hardware="h100", output_dir=tmp_path / "o")


def test_scheme_the_target_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedSchemeError, match="cannot serve nvfp4a16"):
        quantkit.quantize("embedded", "nvfp4a16", hardware="cpu", output_dir=tmp_path / "o")


def test_missing_backend_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Reaching this error path needs an environment without llm-compressor; simulate only the lookup.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llmcompressor" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="llmcompressor") as e:
        quantkit.quantize("embedded", "fp8-dynamic", hardware="h100", output_dir=tmp_path / "o")
    assert "pip install" in str(e.value)


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        quantkit.quantize("embedded", "fp8-dynamic", hardware="h100", output_dir=out)
    assert (out / "config.json").read_text() == "{}"


def test_failed_backend_leaves_nothing_that_looks_like_a_checkpoint(tmp_path: Path, embedded_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from quantkit.backends.llmcompressor import LlmCompressorBackend

    def boom(self, job, out_dir):  # a producer crash half-way through writing
        (out_dir / "config.json").write_text("{}")
        raise BackendError("simulated crash")

    monkeypatch.setattr(LlmCompressorBackend, "produce", boom)
    out = tmp_path / "ckpt"
    with pytest.raises(BackendError):
        quantkit.quantize(embedded_path, "fp8-dynamic", hardware="h100", output_dir=out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_publish_with_overwrite_replaces_only_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "old").write_text("x")
    tmp = atomic.staging_dir(out)
    (tmp / "new").write_text("y")
    with pytest.raises(OutputExistsError):
        atomic.publish(tmp, out, overwrite=False)
    assert (out / "old").exists()
    atomic.publish(tmp, out, overwrite=True)
    assert (out / "new").exists() and not (out / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_eval_data_too_short_to_score_a_budget(tmp_path: Path, embedded_path: Path) -> None:
    """Held-out text for a mixed-precision budget must give enough tokens to score (a quarter of the 2,048 the
    search scores); the error names the file and comes before any sensitivity pass or output."""
    from quantkit.errors import CalibrationDataError

    short = tmp_path / "held-out.txt"
    short.write_text("To be, or not to be, that is the question.")
    with pytest.raises(CalibrationDataError, match="held-out.txt gave only"):
        quantkit.quantize(embedded_path, "w4a16", hardware="h100", output_dir=tmp_path / "o",
                          max_quality_loss=0.1, eval_data=short)
    assert not (tmp_path / "o").exists()
