"""Real producer outputs of the embedded model, made by calling llm-compressor and ModelOpt directly.

The validator's tests mutate copies of these checkpoints, so every broken case starts from what a real
producer wrote. Producing them takes about a minute on 2 CPU cores, so they are built once per producer
version and kept under ``$QUANTKIT_CACHE/test-fixtures/`` (see ``conftest.py``); a changed recipe or producer
version gets a new cache key.

Run as a script in the produce environment (``python producer_fixtures.py OUT_DIR NAME...``): the session fixture
does that in a subprocess so that the test process never imports torch, llm-compressor or ModelOpt, and a
failure names the producer that failed.

``full`` recipes quantize the whole 30-layer model; the others quantize its first ``TRUNCATED_LAYERS``
decoder layers (same shapes, same names, same config otherwise), because NVFP4 packing on CPU is slow and
the validator sees nothing per layer that four layers do not show.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: bump when a recipe below changes, so cached fixtures are rebuilt
RECIPES_VERSION = "3"
TRUNCATED_LAYERS = 4
CALIBRATION_TEXT = ("Double, double toil and trouble; fire burn and cauldron bubble. "
                    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.")


@dataclass(frozen=True)
class Recipe:
    name: str
    producer: str  # "llmcompressor" | "modelopt"
    full: bool
    build: Callable[[Any, Any, Path], None]


def _lc(modifier_kwargs: dict[str, Any], *, calibrate: bool = False) -> Callable[[Any, Any, Path], None]:
    def build(model: Any, tok: Any, out: Path) -> None:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import QuantizationModifier

        kwargs: dict[str, Any] = {}
        if calibrate:
            from datasets import Dataset

            ids = tok(CALIBRATION_TEXT)["input_ids"]
            kwargs = {"dataset": Dataset.from_dict({"input_ids": [ids] * 2, "attention_mask": [[1] * len(ids)] * 2}),
                      "num_calibration_samples": 2, "max_seq_length": len(ids), "shuffle_calibration_samples": False}
        oneshot(model=model, tokenizer=tok, recipe=QuantizationModifier(**modifier_kwargs), **kwargs)
        model.save_pretrained(out, save_compressed=True)

    return build


def _mo(config_name: str, *, kv: bool = False) -> Callable[[Any, Any, Path], None]:
    def build(model: Any, tok: Any, out: Path) -> None:
        import modelopt.torch.quantization as mtq
        import torch
        from modelopt.torch.export import export_hf_checkpoint

        cfg = copy.deepcopy(getattr(mtq, config_name))
        if kv:
            extra = mtq.FP8_KV_CFG["quant_cfg"]
            if isinstance(cfg["quant_cfg"], dict):
                cfg["quant_cfg"].update(extra)
            else:
                cfg["quant_cfg"].extend(extra)
        batch = tok([CALIBRATION_TEXT], return_tensors="pt")

        def forward_loop(m: Any) -> None:
            with torch.no_grad():
                m(**batch)

        mtq.quantize(model, cfg, forward_loop=forward_loop)
        export_hf_checkpoint(model, export_dir=str(out))

    return build


_W4A16_G64 = {"group_0": {"targets": ["Linear"], "weights": {
    "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}}}
_W4A16_ASYM = {"group_0": {"targets": ["Linear"], "weights": {
    "num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 64}}}
_W4A8_G64 = {"group_0": {"targets": ["Linear"], "weights": {
    "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64},
    "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}}}
_FP8_KV = {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True}

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("lc-fp8-dynamic", "llmcompressor", True,
           _lc({"targets": "Linear", "scheme": "FP8_DYNAMIC", "ignore": ["lm_head"]})),
    Recipe("lc-w4a16-g64", "llmcompressor", False, _lc({"config_groups": _W4A16_G64, "ignore": ["lm_head"]})),
    Recipe("lc-nvfp4a16", "llmcompressor", False,
           _lc({"targets": "Linear", "scheme": "NVFP4A16", "ignore": ["lm_head"]})),
    Recipe("lc-nvfp4", "llmcompressor", False,
           _lc({"targets": "Linear", "scheme": "NVFP4", "ignore": ["lm_head"]}, calibrate=True)),
    Recipe("lc-fp8-kv", "llmcompressor", False,
           _lc({"targets": "Linear", "scheme": "FP8_DYNAMIC", "ignore": ["lm_head"], "kv_cache_scheme": _FP8_KV},
               calibrate=True)),
    Recipe("lc-w8a8", "llmcompressor", False, _lc({"targets": "Linear", "scheme": "W8A8", "ignore": ["lm_head"]})),
    Recipe("lc-w4a8", "llmcompressor", False, _lc({"config_groups": _W4A8_G64, "ignore": ["lm_head"]})),
    Recipe("lc-fp8-block", "llmcompressor", False,
           _lc({"targets": "Linear", "scheme": "FP8_BLOCK", "ignore": ["lm_head"]})),
    Recipe("lc-w4a16-asym", "llmcompressor", False, _lc({"config_groups": _W4A16_ASYM, "ignore": ["lm_head"]})),
    Recipe("mo-fp8", "modelopt", True, _mo("FP8_DEFAULT_CFG")),
    Recipe("mo-fp8-pcpt", "modelopt", False, _mo("FP8_PER_CHANNEL_PER_TOKEN_CFG")),
    Recipe("mo-w4a16-nvfp4", "modelopt", False, _mo("W4A16_NVFP4_CFG")),
    Recipe("mo-fp8-kv", "modelopt", False, _mo("FP8_DEFAULT_CFG", kv=True)),
    Recipe("mo-nvfp4", "modelopt", False, _mo("NVFP4_DEFAULT_CFG")),
    Recipe("mo-int8-sq", "modelopt", False, _mo("INT8_SMOOTHQUANT_CFG")),
]}


def producer_versions() -> dict[str, str]:
    """Versions of the producers (read from package metadata, without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("llmcompressor", "compressed-tensors", "nvidia-modelopt", "transformers", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def produce(out_root: Path, names: list[str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantkit.models.embedded import embedded_model_path

    src = embedded_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    for name in names:
        recipe = RECIPES[name]
        t0 = time.perf_counter()
        model = copy.deepcopy(base)
        if not recipe.full:
            model.model.layers = model.model.layers[:TRUNCATED_LAYERS]
            model.config.num_hidden_layers = TRUNCATED_LAYERS
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = model.config.layer_types[:TRUNCATED_LAYERS]
        tmp = out_root / f".{name}.tmp"
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        recipe.build(model, tok, tmp)
        (tmp / "producer.json").write_text(json.dumps({"recipe": name, "versions": producer_versions(),
                                                       "seconds": round(time.perf_counter() - t0, 1)}))
        tmp.rename(out_root / name)
        print(f"produced {name} in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    produce(Path(sys.argv[1]), sys.argv[2:])
