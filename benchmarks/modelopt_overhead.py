"""quantkit.quantize(backend="modelopt") vs calling ModelOpt directly (mtq.quantize + export_hf_checkpoint) with the
same config, in the same run.

Each side runs in a fresh subprocess (so peak RSS is that side's own), alternating A/B, N rounds; the script
prints a table of medians and the ratios. CPU seconds (user + system of the side's process) are the steadier
figure on a shared machine: wall time follows the load of whatever else runs there.

    .venvs/produce/bin/python benchmarks/modelopt_overhead.py --scheme fp8-dynamic --rounds 3

What is timed: the whole job a user runs, from a fresh interpreter to a saved checkpoint with its tokenizer
(imports, model load, calibration, quantization, export). quantkit adds its version check, ignore list, the
untying of tied embeddings for vLLM (SmolLM2 is tied: one more 16-bit 49152x576 tensor written), validation
and the atomic publish. The raw side uses the very config quantkit builds (``ModelOptBackend.quant_config``)
and the same calibration windows, so the two sides quantize identically.
"""

from __future__ import annotations

import json
import tempfile

from abtest import alternate, parse_args, report, side

RAW = side('''
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    model_path, out, cfg_json, n, seqlen = sys.argv[1:6]
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    cfg = json.loads(cfg_json)
    for e in cfg["quant_cfg"]:  # JSON turned the block-size key -1 into "-1"
        for d in (e.get("cfg") or {},):
            if isinstance(d, dict) and isinstance(d.get("block_sizes"), dict):
                d["block_sizes"] = {(int(k) if k.lstrip("-").isdigit() else k): v for k, v in d["block_sizes"].items()}
    loop = None
    if int(n):
        from quantkit.calibration import default_calibration_text
        ids = tok(default_calibration_text(), add_special_tokens=False)["input_ids"]
        L = int(seqlen)
        wins = [ids[i:i + L] for i in range(0, len(ids), L)][:int(n)]
        def loop(m):
            with torch.no_grad():
                for w in wins:
                    m(torch.tensor([w]))
    mtq.quantize(model, cfg, loop)
    export_hf_checkpoint(model, export_dir=out)
    tok.save_pretrained(out)
''')

QK = side('''
    import quantkit
    model_path, out, scheme, hardware, n, seqlen = sys.argv[1:7]
    quantkit.quantize(model_path, scheme, backend="modelopt", hardware=hardware, output_dir=out,
                      num_calibration_samples=int(n), max_seq_length=int(seqlen))
''')


def raw_config(scheme: str, model: str) -> str:
    """The config quantkit builds for this scheme and model, as JSON for the raw side."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantkit.backends import ProduceJob, get_backend
    from quantkit.pipeline import _quantized_in_features, choose_group_size
    from quantkit.planning.ignore import build_ignore, linear_module_names
    from quantkit.schemes import get_scheme

    s = get_scheme(scheme)
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    ignore = build_ignore(linear_module_names(m))
    group, _ = choose_group_size(s, _quantized_in_features(m, ignore), None)
    job = ProduceJob(model=m, tokenizer=None, scheme=s, ignore=tuple(ignore), kv_cache="auto", calibration=(),
                     max_seq_length=0, group_size=group)
    return json.dumps(get_backend("modelopt").quant_config(job))


def main() -> None:
    a = parse_args(__doc__, "fp8-dynamic", lambda ap: ap.add_argument(
        "--hardware", default="h100", help="serving target passed to quantkit (decides legality only)"))
    from quantkit import get_scheme
    from quantkit.models.embedded import embedded_model_path

    model = str(embedded_model_path())
    s = get_scheme(a.scheme)
    assert s.modelopt is not None, f"{s.name} has no ModelOpt recipe"
    n = a.samples if s.needs_calibration else 0
    cfg = raw_config(s.name, model)
    with tempfile.TemporaryDirectory() as d:
        raw, qk = alternate(
            a.rounds,
            lambda out: (RAW, [model, out, cfg, str(n), str(a.seq_len)]),
            lambda out: (QK, [model, out, s.name, a.hardware, str(max(n, 1)), str(a.seq_len)]), d)
    report(f"scheme {a.scheme} ({s.modelopt.config}), "
           + (f"{n} x {a.seq_len} calibration tokens" if n else "data-free") + f", {a.rounds} rounds (median)",
           "raw ModelOpt", raw, qk)


if __name__ == "__main__":
    main()
