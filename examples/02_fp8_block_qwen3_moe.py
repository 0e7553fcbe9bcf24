"""FP8 block-wise for a Qwen3-MoE model: the safe FP8 route for MoE on Hopper and Blackwell.

Why block-wise: FP8 weights in 128x128 blocks with activations quantized per group of 128 at run time need no
calibration data, run on vLLM's CUTLASS/DeepGEMM block-FP8 MoE kernels, and avoid the dimension-mismatch bugs
reported for per-tensor FP8 on Qwen3-MoE. The router (``mlp.gate``) must stay in 16 bits: vLLM keeps it
unquantized, and a quantized router silently changes which experts fire. quantkit builds that ignore list
from the architecture; this recipe checks it.

    python examples/02_fp8_block_qwen3_moe.py --output-dir out/                  # a tiny random Qwen3-MoE
    python examples/02_fp8_block_qwen3_moe.py --model /models/Qwen3-30B-A3B --output-dir out/

Without ``--model`` it builds a tiny Qwen3-MoE with random weights (2 layers, 8 experts, dimensions that are
multiples of 128) so the recipe runs anywhere in seconds; the checkpoint layout is the real one.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from quantkit import embedded_model_path, quantize, validate

TINY = "tiny-qwen3-moe"
ROUTER = re.compile(r".*\.mlp\.gate$")


def build_tiny_qwen3_moe(out: Path) -> Path:
    """Save a randomly initialised Qwen3-MoE (bf16) with a real tokenizer; hubs are not needed."""
    import torch
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(embedded_model_path())  # any real tokenizer works
    cfg = Qwen3MoeConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def router_tensors(path: Path) -> tuple[list[str], list[str]]:
    """The router modules in a checkpoint (``...mlp.gate``) and those that were quantized (have a scale)."""
    from safetensors import safe_open

    names: set[str] = set()
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            names.update(f.keys())
    routers = sorted(n.removesuffix(".weight") for n in names if ROUTER.match(n.removesuffix(".weight"))
                     and n.endswith(".weight"))
    return routers, [r for r in routers if f"{r}.weight_scale" in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=TINY, help=f"A Qwen3-MoE checkpoint directory, or '{TINY}' (built here).")
    ap.add_argument("--output-dir", type=Path, default=Path("out"), help="Root folder for what this recipe writes.")
    ap.add_argument("--hardware", default="h100", help="Serving target: h100, h200, b200, ... (`quantkit hardware`).")
    ap.add_argument("--overwrite", action="store_true", help="Replace an existing quantized checkpoint.")
    args = ap.parse_args(argv)

    model = build_tiny_qwen3_moe(args.output_dir / TINY) if args.model == TINY else Path(args.model)
    res = quantize(model, "fp8-block", hardware=args.hardware, output_dir=args.output_dir / f"{model.name}-fp8-block",
                   overwrite=args.overwrite)

    print(f"wrote {res.output_dir} in {res.timings['total_s']:.1f} s")

    # What vLLM reads: config.json's ignore list must cover every router, and no router may carry FP8 scales.
    ignore = json.loads((res.output_dir / "config.json").read_text())["quantization_config"]["ignore"]
    routers, scaled = router_tensors(res.output_dir)
    uncovered = [r for r in routers if not any(r == i or (i.startswith("re:") and re.match(i[3:], r)) for i in ignore)]
    print(f"routers kept 16-bit: {len(routers) - len(uncovered)}/{len(routers)}; ignore list: {ignore}")
    if not routers or uncovered or scaled:
        print(f"error: routers not ignored: {uncovered or scaled or 'no router found'}")
        return 1
    report = validate(res.output_dir, hardware=args.hardware)
    print(report.summary())
    print(f"serve it: vllm serve {res.output_dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
