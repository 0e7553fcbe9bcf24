"""A source checkpoint that cannot be read is bad input: one error naming the file, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import quantkit
from quantkit.checkpoint.reader import check_source
from quantkit.errors import CheckpointReadError, ModelNotFoundError
from quantkit.models.loading import load_model

CLI = Path(sys.executable).with_name("quantkit")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama saved by transformers in two shards (with an index), as a hub download is."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out, max_shard_size="100KB")
    assert (out / "model.safetensors.index.json").is_file()
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _last_shard(path: Path) -> Path:
    return sorted(path.glob("*.safetensors"))[-1]


def test_an_intact_checkpoint_passes(tiny_llama: Path) -> None:
    check_source(tiny_llama)


def test_a_truncated_shard_names_the_file(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    shard = _last_shard(src)
    os.truncate(shard, shard.stat().st_size - 1000)  # a download cut short: header intact, tail gone
    check_source(src, data=False)  # headers alone are fine: plan() sizes header-only checkpoints
    with pytest.raises(CheckpointReadError, match="is truncated") as e:
        check_source(src)
    assert str(shard) in e.value.message and str(e.value).count("To resolve:") == 1
    with pytest.raises(CheckpointReadError, match=shard.name):
        load_model(src)
    with pytest.raises(CheckpointReadError, match=shard.name):
        quantkit.quantize(src, "fp8-dynamic", hardware="cpu", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_shard_cut_inside_its_header(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    shard = _last_shard(src)
    os.truncate(shard, 100)
    with pytest.raises(CheckpointReadError, match=f"{shard.name} declares a .*-byte header"):
        load_model(src)


def test_a_shard_the_index_lists_is_missing(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    shard = _last_shard(src)
    shard.unlink()
    with pytest.raises(CheckpointReadError, match=f"does not hold .*{shard.name}"):
        load_model(src)


def test_a_corrupt_config_names_the_file(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    (src / "config.json").write_text('{"model_type": "llama", "hidden_si')
    with pytest.raises(CheckpointReadError, match="config.json is not readable JSON"):
        load_model(src)


def test_a_missing_path_is_still_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")


def _cli_in_a_fresh_interpreter(*argv: str) -> tuple[int, str, list[str]]:
    """Run the CLI's main in a new interpreter: (exit code, stderr, heavy modules imported by then)."""
    code = ("import sys; from quantkit.cli import main; rc = main(sys.argv[1:]); "
            "print(','.join(m for m in ('torch', 'transformers', 'llmcompressor') if m in sys.modules)); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode, proc.stderr, [m for m in last.split(",") if m]


@pytest.mark.parametrize("scheme", ["auto", "fp8-dynamic"])
def test_cli_refuses_a_missing_model_before_heavy_imports(tmp_path: Path, scheme: str) -> None:
    rc, err, heavy = _cli_in_a_fresh_interpreter("quantize", str(tmp_path / "no-such-model"), "-s", scheme,
                                                 "-H", "cpu", "-o", str(tmp_path / "out"))
    assert rc == 2 and "does not exist" in err and err.count("To resolve:") == 1
    assert heavy == []


def test_cli_refuses_a_corrupt_config_before_heavy_imports(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    (src / "config.json").write_text("{")
    rc, err, heavy = _cli_in_a_fresh_interpreter("quantize", str(src), "-s", "fp8-dynamic", "-H", "cpu",
                                                 "-o", str(tmp_path / "out"))
    assert rc == 2 and f"{src / 'config.json'} is not readable JSON" in err and heavy == []


def test_cli_truncated_shard_is_exit_2_naming_the_file(tiny_llama: Path, tmp_path: Path) -> None:
    src = _copy(tiny_llama, tmp_path / "m")
    shard = _last_shard(src)
    os.truncate(shard, shard.stat().st_size - 1000)
    proc = subprocess.run([str(CLI), "quantize", str(src), "-s", "fp8-dynamic", "-H", "cpu",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{shard} is truncated" in proc.stderr and "SafetensorError" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_on_gpus_loads_through_accelerates_device_map(tiny_llama: Path, embedded_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The ModelOpt placement (accelerate's device_map="auto", capped when the model does not fit) runs on the
    installed accelerate and transformers and loads the same weights. Without a GPU accelerate's map holds only
    the host, so the cap-and-warn branch is the one taken here; on a GPU machine scripts/gpu_check.py's ModelOpt
    row takes the spread one (its log names the cuda devices)."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_path)  # the tiny Llama ships no tokenizer
    plain = load_model(tiny_llama, tok).model
    with caplog.at_level("INFO", logger="quantkit.models.loading"):
        spread = load_model(tiny_llama, tok, on_gpus=True).model
    assert "model spread over cpu" in caplog.text
    assert "does not fit the GPUs" in caplog.text  # no GPU: accelerate maps every layer to the host
    for (name, a), (_, b) in zip(plain.state_dict().items(), spread.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
