"""quantkit.quantize() vs calling llm-compressor's oneshot directly with the same recipe, in the same run.

Each side runs in a fresh subprocess (so peak RSS is that side's own), alternating A/B, N rounds; the
script prints a table of medians and the ratios. Goal: <= 3 % overhead in wall time and peak memory.

    .venvs/produce/bin/python benchmarks/quantize_overhead.py --scheme w8a8-int8 --rounds 3

What is timed: the whole job a user runs, from a fresh interpreter to a saved checkpoint (import, model
load, calibration, quantization, save; quantkit adds its plan, ignore list, validation and atomic publish).
"""

from __future__ import annotations

import tempfile

from abtest import alternate, parse_args, report, side

RAW = side('''
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import SmoothQuantModifier
    from compressed_tensors.quantization import preset_name_to_scheme
    model_path, out, preset, algo, group, n, seqlen = sys.argv[1:8]
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    scheme = preset_name_to_scheme(preset, ["Linear"])
    if group != "none":
        scheme.weights.group_size = int(group)
    common = dict(config_groups={"group_0": scheme}, ignore=["lm_head"])
    recipe = {"rtn": [QuantizationModifier(**common)], "gptq": [GPTQModifier(**common)],
              "smoothquant+gptq": [SmoothQuantModifier(smoothing_strength=0.8, ignore=["lm_head"]),
                                   GPTQModifier(**common)]}[algo]
    kwargs = {}
    if algo != "rtn":
        from quantkit.calibration import default_calibration_text
        ids = tok(default_calibration_text(), add_special_tokens=False)["input_ids"]
        L = int(seqlen)
        wins = [ids[i:i + L] for i in range(0, len(ids), L)][:int(n)]
        kwargs = dict(dataset=Dataset.from_dict({"input_ids": wins, "attention_mask": [[1] * len(w) for w in wins]}),
                      num_calibration_samples=len(wins), max_seq_length=L, shuffle_calibration_samples=False)
    oneshot(model=model, tokenizer=tok, recipe=recipe, **kwargs)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
''')

QK = side('''
    import quantkit
    model_path, out, scheme, n, seqlen = sys.argv[1:6]
    quantkit.quantize(model_path, scheme, hardware="h100", output_dir=out, num_calibration_samples=int(n),
                      max_seq_length=int(seqlen))
''')


def main() -> None:
    a = parse_args(__doc__, "w8a8-int8")
    from quantkit import get_scheme
    from quantkit.models.embedded import embedded_model_path
    from quantkit.pipeline import choose_group_size

    model = str(embedded_model_path())
    s = get_scheme(a.scheme)
    assert s.llmcompressor is not None
    group = "none"
    if s.llmcompressor.group_candidates:  # the same group quantkit picks for this model (64 for SmolLM2)
        group = str(choose_group_size(s, {"x": 576, "y": 1536}, None)[0])
    lc = s.llmcompressor
    with tempfile.TemporaryDirectory() as d:
        raw, qk = alternate(
            a.rounds,
            lambda out: (RAW, [model, out, lc.preset, lc.algorithm, group, str(a.samples), str(a.seq_len)]),
            lambda out: (QK, [model, out, s.name, str(a.samples), str(a.seq_len)]), d)
    data = f"{a.samples} x {a.seq_len} calibration tokens" if s.needs_calibration else "data-free"
    report(f"scheme {a.scheme} ({lc.preset}, {lc.algorithm}), {data}, {a.rounds} rounds (median)",
           "raw oneshot", raw, qk)


if __name__ == "__main__":
    main()
