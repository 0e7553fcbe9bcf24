"""Reading a ModelOpt export back into a 16-bit model (transformers has no ModelOpt loader) to measure what the
stored weights lose, and perplexity on the held-out text."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def dequantized_model(path: Path, original: Path) -> Any:
    """The original 16-bit model with each linear weight replaced by the export's dequantized weight.

    Handles what the CPU tests export: FP8 (per-tensor or per-channel scales) and INT8 (per-channel, with
    SmoothQuant's ``pre_quant_scale`` folded into the weight's columns). Activation quantization is not
    applied, so this measures what the stored weights lose; the vLLM round trip covers the rest.
    """
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.bfloat16)
    modules = dict(model.named_modules())
    replaced = 0
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            keys = set(f.keys())
            for key in keys:
                if not key.endswith(".weight_scale"):
                    continue
                name = key[: -len(".weight_scale")]
                w = f.get_tensor(f"{name}.weight").float()
                scale = f.get_tensor(key).float()
                deq = w * (scale[:, None] if scale.dim() == 1 else scale)
                if f"{name}.pre_quant_scale" in keys:
                    deq = deq * f.get_tensor(f"{name}.pre_quant_scale").float()[None, :]
                modules[name].weight.data = deq.to(torch.bfloat16)
                replaced += 1
    assert replaced, f"no quantized weights found in {path}"
    return model


def perplexity_of(model: Any, tokenizer_path: Path, max_tokens: int = 1024) -> float:
    """Perplexity over the held-out text, windowed as quantkit.eval.perplexity does."""
    from transformers import AutoTokenizer

    from quantkit.eval.perplexity import perplexity_of_model

    model.eval()
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    return perplexity_of_model(model, tok, max_tokens=max_tokens)["perplexity"]


E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def nvfp4_weight(path: Path, name: str) -> Any:
    """Dequantize one NVFP4 weight of a ModelOpt export: two E2M1 codes per byte (low nibble first), an FP8 scale
    per 16 weights and an FP32 global scale (``weight_scale_2``)."""
    import torch
    from safetensors import safe_open

    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            if f"{name}.weight" not in f.keys():
                continue
            packed = f.get_tensor(f"{name}.weight")
            codes = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1).long()
            values = torch.tensor(E2M1)[codes]
            scale = f.get_tensor(f"{name}.weight_scale").float().repeat_interleave(16, dim=1)
            return values * scale * f.get_tensor(f"{name}.weight_scale_2").float()
    raise KeyError(name)
