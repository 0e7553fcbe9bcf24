"""Load the model to quantize: a path, the embedded default, or a transformers model the user already has."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantkit.checkpoint.reader import check_source
from quantkit.errors import MissingDependencyError, ModelNotFoundError

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = ("embedded", "default", "smollm2-135m-instruct")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: Path | None  # the checkpoint directory, when the model came from disk
    name: str


def resolve_model_path(model: str | Path | None) -> Path:
    """Return a checkpoint directory for a path or the embedded model alias.

    Raises:
        ModelNotFoundError: the path is missing or holds no ``config.json``.
    """
    if model is None or str(model) in EMBEDDED_ALIASES:
        from quantkit.models.embedded import embedded_model_path

        return embedded_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            f"Model path {str(path)!r} does not exist (quantkit never downloads from a hub).",
            fix="Pass a local Hugging Face checkpoint directory, or 'embedded' for the built-in SmolLM2-135M.")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} is not a Hugging Face checkpoint: it has no config.json.",
                                 fix="Point at the directory that holds config.json and the *.safetensors files.")
    return path


@dataclass(frozen=True)
class Offload:
    """Load the model offloaded: ``cpu_budget`` bytes of weights in host RAM (None: compressed-tensors' own
    budget, the available RAM less 5 GB), the rest in ``folder`` on disk."""

    folder: Path
    cpu_budget: int | None


#: when the model does not fit the GPUs, the share of each GPU's memory weights may take, leaving the rest for
#: calibration activations (ModelOpt's examples/llm_ptq/example_utils.py ``get_model``: gpu_mem_percentage=0.8)
GPU_WEIGHT_SHARE = 0.8


def _gpu_spread_kwargs(path: Path) -> dict[str, Any]:
    """``from_pretrained`` arguments that spread the model over the GPUs present, ModelOpt's way: accelerate's
    ``device_map="auto"``; when accelerate's own map for the whole memory would put layers in host RAM, every
    GPU is capped at :data:`GPU_WEIGHT_SHARE` so calibration has room, and more layers stay in host RAM."""
    import torch
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_max_memory
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None) or torch.bfloat16)
    max_memory = get_max_memory()
    kwargs: dict[str, Any] = {"device_map": "auto"}
    if any(d in ("cpu", "disk") for d in infer_auto_device_map(empty, max_memory=max_memory).values()):
        kwargs["max_memory"] = {k: int(v * GPU_WEIGHT_SHARE) if isinstance(k, int) else v
                                for k, v in max_memory.items()}
        log.warning("the model does not fit the GPUs: each GPU is capped at %d %% of its memory for calibration, "
                    "the rest of the model stays in host RAM (slower)", GPU_WEIGHT_SHARE * 100)
    return kwargs


def load_model(model: Any, tokenizer: Any = None, *, offload: Offload | None = None,
               on_gpus: bool = False) -> LoadedModel:
    """Load ``model`` (a path, 'embedded', or a ``PreTrainedModel``) and its tokenizer for quantization.

    A path is checked first, from its config and safetensors headers (:func:`check_source`), so a missing,
    corrupt or truncated checkpoint fails with an error naming the file before torch is even imported.

    With ``offload`` (a path only), the model is loaded the way llm-compressor's big-model examples do:
    inside compressed-tensors' ``load_offloaded_model`` with ``device_map="auto_offload"`` (as much as
    ``max_memory`` allows in host RAM, the rest on disk, nothing on an accelerator), so oneshot's sequential
    pipeline onloads one decoder layer at a time. With ``on_gpus`` (a path only, a plan whose placement is
    ``gpus``), the model is spread over the GPUs present (:func:`_gpu_spread_kwargs`).

    Raises:
        ModelNotFoundError: the path is missing or holds no ``config.json``.
        CheckpointReadError: ``config.json`` or a shard is unreadable or truncated.
        MissingDependencyError: torch or transformers is not installed.
    """
    is_object = hasattr(model, "named_modules") and hasattr(model, "config")
    if not is_object:
        path = resolve_model_path(model)
        check_source(path)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("Quantizing needs torch and transformers.",
                                     fix="Run `scripts/setup_envs.sh produce` and use .venvs/produce/bin/python.") from exc
    if is_object:
        src = getattr(model.config, "_name_or_path", None)
        src_path = Path(src) if src and Path(src).is_dir() else None
        if tokenizer is None:
            if src_path is None:
                raise ModelNotFoundError("A model object was passed without a tokenizer, and its source is unknown.",
                                         fix="Pass tokenizer=... along with the model.")
            tokenizer = AutoTokenizer.from_pretrained(src_path)
        return LoadedModel(model, tokenizer, src_path, str(src or type(model).__name__))
    log.info("loading %s", path)
    tok = tokenizer or AutoTokenizer.from_pretrained(path)
    if offload is not None:
        from compressed_tensors.offload import load_offloaded_model

        kwargs: dict[str, Any] = {"device_map": "auto_offload", "offload_folder": str(offload.folder)}
        if offload.cpu_budget is not None:
            kwargs["max_memory"] = {"cpu": offload.cpu_budget}
        offload.folder.mkdir(parents=True, exist_ok=True)
        with load_offloaded_model():
            m = AutoModelForCausalLM.from_pretrained(path, dtype="auto", **kwargs)
    elif on_gpus:
        kwargs = _gpu_spread_kwargs(path)
        m = AutoModelForCausalLM.from_pretrained(path, dtype="auto", **kwargs)
        placed = sorted({str(p.device) for p in m.parameters()})
        log.info("model spread over %s", ", ".join(placed))
    else:
        m = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    if m.dtype == torch.float32:
        log.info("model is float32; quantizing from float32 weights")
    return LoadedModel(m, tok, path, path.name)
