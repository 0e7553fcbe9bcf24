"""Random and corrupted configs and headers: never a traceback, always a report or a read error (exit 0/1/2).

Every generated checkpoint must also leave no ``validator-internal`` finding: such a finding means a check
crashed on input it should have reported on, which the runner only hides from users, not from these tests.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import synthetic_checkpoints as S
from hypothesis import given
from hypothesis import strategies as st

from quantkit.cli import main
from quantkit.errors import CheckpointReadError
from quantkit.validation import validate

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                      st.text(max_size=12))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=10), kids, max_size=5)),
                    max_leaves=20)

NAMES = st.sampled_from(["lm_head", "model.layers.0.mlp.gate", "model.layers.0.self_attn.q_proj", "Linear",
                         "re:.*", "re:(", "re:.*\\.mlp\\.gate$", "model.layers.*", "*", "", "re:", "model",
                         "model.layers.0.self_attn.k_proj", "LlamaAttention", "model.layers.0.mlp.experts",
                         "re:(.*)*z", "re:(a|aa)+$", "re:(?P<x>.*)(?P=x)"])
ARGS = st.fixed_dictionaries({}, optional={
    "num_bits": st.one_of(st.sampled_from([4, 8, 16, 0, 3]), JSON_LEAF),
    "type": st.sampled_from(["int", "float", "fp", None]),
    "strategy": st.sampled_from(["tensor", "channel", "group", "block", "token", "tensor_group", "attn_head", "x"]),
    "group_size": st.one_of(st.sampled_from([None, -1, 0, 16, 32, 64, 128, 100]), JSON_LEAF),
    "symmetric": st.one_of(st.booleans(), JSON_LEAF),
    "dynamic": st.sampled_from([True, False, "local", "yes", None]),
    "block_structure": st.one_of(st.none(), st.lists(st.integers(-1, 256), max_size=3), JSON_LEAF),
    "actorder": st.sampled_from([None, "group", "weight", "static", "dynamic", 3]),
    "scale_dtype": st.sampled_from([None, "torch.uint8", "torch.float8_e4m3fn"]),
})
GROUP = st.fixed_dictionaries({}, optional={
    "targets": st.one_of(st.lists(NAMES, max_size=3), JSON_LEAF),
    "weights": st.one_of(st.none(), ARGS, JSON_LEAF),
    "input_activations": st.one_of(st.none(), ARGS),
    "output_activations": st.one_of(st.none(), ARGS),
    "format": st.sampled_from([None, "float-quantized", "pack-quantized", "int-quantized", "nvfp4-pack-quantized",
                               "naive-quantized", "dense", 7]),
})
QUANT_CONFIG = st.one_of(JSON, st.fixed_dictionaries({}, optional={
    "quant_method": st.sampled_from(["compressed-tensors", "compressed_tensors", "modelopt", "modelopt_fp4",
                                     "gptq", "awq", "fp8", "bogus", "", None, 3]),
    "config_groups": st.one_of(st.dictionaries(st.text(max_size=6), GROUP, max_size=3), JSON_LEAF),
    "ignore": st.one_of(st.lists(NAMES, max_size=5), JSON_LEAF),
    "format": st.sampled_from([None, "float-quantized", "pack-quantized", "nvfp4-pack-quantized", 1]),
    "kv_cache_scheme": st.one_of(st.none(), ARGS, JSON_LEAF),
    "quant_algo": st.sampled_from(["FP8", "NVFP4", "W4A16_NVFP4", "MIXED_PRECISION", "INT4_AWQ", "", None, 5]),
    "quantized_layers": st.one_of(st.dictionaries(NAMES, st.dictionaries(st.just("quant_algo"), JSON_LEAF)),
                                  JSON_LEAF),
    "group_size": st.one_of(JSON_LEAF, st.just("16")),
    "producer": st.one_of(st.just({"name": "modelopt"}), JSON),
    "quantization": st.one_of(st.fixed_dictionaries({}, optional={
        "quant_algo": st.sampled_from(["FP8", "NVFP4", "W4A16_NVFP4", "bad", None]),
        "exclude_modules": st.one_of(st.lists(NAMES, max_size=3), JSON_LEAF),
        "kv_cache_quant_algo": st.sampled_from(["FP8", None, 3]), "group_size": JSON_LEAF}), JSON_LEAF),
    "bits": JSON_LEAF, "sym": JSON_LEAF, "modules_to_not_convert": st.one_of(st.lists(NAMES), JSON_LEAF),
}))

DTYPES = st.sampled_from(["BF16", "F16", "F32", "F8_E4M3", "U8", "I8", "I32", "I64", "BOOL", "F4", "Q9", ""])
MODULES = st.sampled_from(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                           "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.gate", "lm_head",
                           "model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.mlp.experts.0.up_proj",
                           "model.layers.0.linear_attn.in_proj_ba", "model.embed_tokens", "model.visual.blocks.0",
                           "model.layers.0.self_attn", "x", ""])
PARAMS = st.sampled_from(["weight", "weight_packed", "weight_scale", "weight_scale_2", "weight_global_scale",
                          "input_scale", "input_global_scale", "k_scale", "v_scale", "qweight", "scales",
                          "weight_shape", "weight_zero_point", "_amax", "bias"])
SHAPES = st.lists(st.integers(0, 4096), max_size=3)


@st.composite
def headers(draw) -> dict[str, tuple[str, tuple[int, ...]]]:
    out = {}
    for _ in range(draw(st.integers(0, 12))):
        name = f"{draw(MODULES)}.{draw(PARAMS)}".lstrip(".")
        out[name] = (draw(DTYPES), tuple(draw(SHAPES)))
    return out


def _write(path: Path, tensors, *, lie: int = 0) -> None:
    header, pos = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * 2 + lie
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, max(pos, pos + size)]}
        pos = max(pos, pos + size)
    raw = json.dumps(header).encode()
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + max(0, pos - 3 * lie))


def _fresh(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def _check(ckpt: Path) -> None:
    try:
        report = validate(ckpt, hardware="h100", tensor_parallel_size=2)
    except CheckpointReadError as exc:
        assert exc.message
        return
    assert not report.by_rule("validator-internal"), [str(f) for f in report.by_rule("validator-internal")]
    json.dumps(report.to_dict())
    assert all(f.message and f.fix and f.severity in ("error", "warning") for f in report.findings)


@given(qc=QUANT_CONFIG, tensors=headers(), sidecar=st.one_of(st.none(), JSON))
def test_random_configs_and_headers_never_crash(tmp_path, qc, tensors, sidecar):
    ckpt = _fresh(tmp_path)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "tie_word_embeddings": True,
                                                  "quantization_config": qc}))
    if sidecar is not None:
        (ckpt / "hf_quant_config.json").write_text(json.dumps(sidecar))
    _write(ckpt / "model.safetensors", tensors)
    _check(ckpt)


@given(tensors=headers(), lie=st.integers(-3, 3))
def test_offsets_that_lie_are_findings_not_crashes(tmp_path, tensors, lie):
    ckpt = _fresh(tmp_path)
    (ckpt / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "compressed-tensors",
                                                                          "config_groups": {}}}))
    _write(ckpt / "model.safetensors", tensors, lie=lie)
    _check(ckpt)


REAL_HEADER = None


def _real_header_bytes() -> bytes:
    global REAL_HEADER
    if REAL_HEADER is None:
        cfg, t = S.qwen3_moe(layers=1, experts=2)
        qt = S.quantize(t, S.matcher(["lm_head", r"re:.*\.mlp\.gate$"]), "ct-nvfp4")
        tensors = {k: v for k, v in qt.items() if "embed" not in k and "lm_head" not in k}
        header: dict = {}
        pos = 0
        for name, (dtype, shape) in tensors.items():
            n = S.nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
            pos += n
        REAL_HEADER = json.dumps(header).encode()
    return REAL_HEADER


@given(data=st.data())
def test_corrupted_real_headers_read_error_or_report(tmp_path, data):
    raw = bytearray(_real_header_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[i:i + data.draw(st.integers(1, 200))]
        else:
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    declared = data.draw(st.sampled_from([len(raw), len(raw) + 1, max(0, len(raw) - 1), 2**40]))
    ckpt = _fresh(tmp_path)
    (ckpt / "config.json").write_text(json.dumps({"quantization_config": S.ct_config(S.CT_NVFP4, ["lm_head"])}))
    with (ckpt / "model.safetensors").open("wb") as fh:
        fh.write(struct.pack("<Q", declared) + bytes(raw))
        fh.truncate(8 + len(raw) + data.draw(st.integers(0, 10**6)))
    _check(ckpt)


@given(files=st.dictionaries(st.sampled_from(["config.json", "hf_quant_config.json", "model.safetensors",
                                              "model.safetensors.index.json", "model-00001-of-00002.safetensors"]),
                             st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()), min_size=1))
def test_cli_exit_codes_on_arbitrary_files(tmp_path, capsys, files):
    ckpt = _fresh(tmp_path)
    for name, content in files.items():
        (ckpt / name).write_bytes(content)
    code = main(["validate", str(ckpt), "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1, 2)
    doc = json.loads(captured.out)
    assert set(doc) == {"ok", "quant_method", "findings"}
    assert doc["ok"] is (code == 0)
    assert not any(f["rule"] == "validator-internal" for f in doc["findings"])
    if code == 2:
        assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")


@pytest.mark.parametrize("index", [{"weight_map": {"a": 1}}, {"weight_map": None}, {"nothing": 1},
                                   {"weight_map": {"a": "model.safetensors", "b": "gone.safetensors"}}])
def test_odd_indexes(tmp_path, index):
    ckpt = _fresh(tmp_path)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    _write(ckpt / "model.safetensors", {"a": ("BF16", (2,))})
    _check(ckpt)


IGNORE_POOL = st.sampled_from([
    "lm_head", r"re:.*\.mlp\.gate$", r"re:.*mlp\.experts\..+\.up_proj$", r"re:^model\.layers\..*\.k_proj$",
    r"re:.*(q|k)_proj$", "model.layers.1.self_attn.k_proj", "model.layers.0.mlp.experts.1.down_proj",
    r"re:.*layers\.1\..*", r"re:.*experts\.\d\.gate_proj", r"re:.*\.self_attn\..*", "model.layers.1.mlp.gate",
    r"re:(?:model)\.layers\.[01]\.mlp\..*", r"re:.*\.(gate|up)_proj$"])


@given(ignore=st.lists(IGNORE_POOL, max_size=4), targets=st.lists(IGNORE_POOL | st.just("Linear"), min_size=1,
                                                                   max_size=3))
def test_per_wildcard_memo_gives_the_same_statuses_as_deciding_each_layer(ignore, targets):
    """The matcher decides once per wildcard only when no pattern can tell layer numbers apart."""
    from quantkit.checkpoint.reader import TensorInfo
    from quantkit.validation.layout import Layout
    from quantkit.validation.matching import Matcher
    from quantkit.validation.qconfig import read_spec

    cfg, t = S.qwen3_moe(layers=3, experts=3)
    qc = S.ct_config(S.CT_FP8_DYNAMIC, ignore)
    qc["config_groups"]["group_0"]["targets"] = targets
    spec = read_spec({"quantization_config": qc}, None)
    layout = Layout({n: TensorInfo(n, d, s, "x", (0, 0)) for n, (d, s) in t.items()})
    fast = Matcher(spec, layout)
    slow = Matcher(spec, layout)
    slow.__dict__["_memo_plan"] = (False, set())
    assert fast.statuses == slow.statuses
