#!/usr/bin/env python3
"""Prove quantkit's checkpoints on a real GPU: which vLLM kernel serves each, KV capacity, load time, decode speed,
each beside what ``quantkit plan`` predicted.

On a CUDA GPU with vLLM and the producers (docs/gpu-carry-plan.md carries them to the lent H200), this script:

1. builds a model of Llama-3-8B shape (hidden 4096, FFN 14336, 32 layers, 32 heads / 8 KV heads, vocab 128256;
   random weights from transformers' ``LlamaConfig``, saved as a bf16 checkpoint) -- speed does not depend on the
   values, and the 1B shape was launch-bound at batch 1 and +-10 % at batch 64, unable to rank formats;
2. asks ``quantkit.plan`` for its predictions per scheme (kernel, KV dtype, KV capacity in tokens);
3. quantizes with ``quantkit.quantize`` -- fp8-dynamic, w4a16 (GPTQ), w8a8-int8, nvfp4a16 (llm-compressor) and
   fp8-dynamic (ModelOpt) -- and checks each with ``quantkit.validate``, producers in parallel (``--jobs``);
4. loads each checkpoint, and bf16 with FP8 KV off and on, with ``quantkit.load`` in a fresh process, and records
   the linear kernel and KV capacity vLLM logs, the KV dtype, load time and decode tokens/s at batch 1 and 64;
5. writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``$OUT``), flagging a kernel that is not
   the predicted one and a KV capacity more than 10 % off the prediction.

    PRODUCE_PYTHONPATH=/tmp/qk-site/produce SERVE_PYTHONPATH=/tmp/qk-site/serve \\
        python3 scripts/gpu_check.py --hardware h200 --budget-s 480 --out "$OUT"

``--dry-run`` runs every step that needs no GPU, here on the CPU: it builds a tiny random checkpoint the same way
(the build and tokenizer code), writes a header-only checkpoint of the real shape (sparse file, no data), runs the
plan on it, prints the commands the real run would execute with its time estimate, and writes the table with the
predictions filled in and the measured columns empty.

Producers (compressed-tensors 0.19) and vLLM 0.24 (compressed-tensors 0.17) need different packages, so producing
and serving use different ``PYTHONPATH`` values (``--produce-pythonpath`` / ``--serve-pythonpath``). ``--phase
produce`` can run in the background (``setsid``) while later device calls still carry vLLM; ``--phase serve
--wait-produce S`` then picks up its checkpoints from ``--work``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30

# ----------------------------------------------------------------------------------------------------- what runs

#: Model shapes (LlamaConfig fields). Llama-3-8B: not tied, so ModelOpt exports load in vLLM (vllm#45543).
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                  "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
                  "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    # the dry run's: every dimension a multiple of 128 (Marlin's tiles), same head layout family
    "tiny": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 128256, "max_position_embeddings": 2048, "rope_theta": 500000.0,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
}


@dataclass(frozen=True)
class Row:
    """One line of the table: a checkpoint (None scheme: the bf16 model itself) and how it is loaded."""

    key: str
    label: str
    scheme: str | None
    backend: str | None
    kv_cache_dtype: str | None  # passed to load(); None lets quantkit decide from the checkpoint
    # The KV cache the producer calibrates: "auto" (none) for every quantized row, so that the weight format is the
    # one difference from bf16 (quantize()'s own default now follows the plan, FP8 KV on Hopper); FP8 KV has its
    # own row.
    produce_kv: str = "auto"

    @property
    def plan_scheme(self) -> str:
        return self.scheme or "bf16"


ROWS: tuple[Row, ...] = (
    Row("bf16", "bf16", None, None, None),
    Row("bf16-fp8kv", "bf16 + FP8 KV", None, None, "fp8"),
    Row("fp8-dynamic", "fp8-dynamic (llm-compressor)", "fp8-dynamic", "llmcompressor", None),
    Row("w4a16", "w4a16 GPTQ (llm-compressor)", "w4a16", "llmcompressor", None),
    Row("w8a8-int8", "w8a8-int8 (llm-compressor)", "w8a8-int8", "llmcompressor", None),
    Row("nvfp4a16", "nvfp4a16 (llm-compressor)", "nvfp4a16", "llmcompressor", None),
    Row("modelopt-fp8", "fp8-dynamic (ModelOpt)", "fp8-dynamic", "modelopt", None),
)
ROW_BY_KEY = {r.key: r for r in ROWS}
#: serving order when the budget runs short: the comparisons the issue asks first come first
SERVE_ORDER = ("bf16", "w4a16", "fp8-dynamic", "nvfp4a16", "bf16-fp8kv", "w8a8-int8", "modelopt-fp8")
#: producing order: longest first, so parallel jobs finish together
PRODUCE_ORDER = ("w8a8-int8", "w4a16", "modelopt-fp8", "fp8-dynamic", "nvfp4a16")

#: Seconds per step on one H200 for the 8B shape -- estimates, not measurements (docs/gpu-carry-plan.md derives
#: them from the H100 1B figures in shared/gpu/RECIPE.md): build = import + init on the GPU + writing 16 GB;
#: quantize = a fresh process (imports 15-25 s) loading 16 GB + the algorithm + saving; GPTQ on 32 layers with
#: 16 x 256 calibration tokens is ~2 s a layer. serve = a fresh vLLM process: import, load, torch.compile (15-26 s
#: on H100), CUDA graphs, warm-up and 2 x 3 timed generations; the first load also inspects the model class (~20 s).
ESTIMATE_S = {"build": 35, "fp8-dynamic": 50, "nvfp4a16": 50, "w4a16": 100, "w8a8-int8": 115, "modelopt-fp8": 75,
              "serve": 50, "serve-first": 25}
TINY_ESTIMATE_S = {"build": 10, "fp8-dynamic": 30, "nvfp4a16": 30, "w4a16": 120, "w8a8-int8": 150,
                   "modelopt-fp8": 40, "serve": 120, "serve-first": 60}

KV_TOLERANCE = 0.10


@dataclass(frozen=True)
class RunConfig:
    """The measurement settings shared by every row."""

    hardware: str = "h200"
    max_model_len: int = 1024
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.90  # what quantkit's memory plan assumes (vLLM's default)
    prompt_len: int = 128
    new_tokens: int = 256
    repeats: int = 3
    calib_samples: int = 16
    calib_seq_len: int = 256
    fast_load: bool = False  # vLLM without torch.compile, full CUDA graphs for decode

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"max_model_len": self.max_model_len, "max_num_seqs": self.max_num_seqs,
                                "gpu_memory_utilization": self.gpu_memory_utilization, "seed": 0}
        if self.fast_load:
            # vLLM 0.24 config/vllm.py: FULL* CUDA-graph modes need no piecewise compilation, so they survive
            # mode NONE; saves the 15-26 s of Inductor per load, costs its fusions. Not yet seen on a GPU.
            args["compilation_config"] = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
        return args


# ------------------------------------------------------------------------------------------------ quantkit adapter
# Every call into quantkit's API is in these four functions, so a change of plan()/quantize() (plan() is becoming a
# Plan that quantize() executes) is adjusted here. Stable calls only: plan(model, hardware) with .scheme /
# .kv_cache_dtype / .memory, quantize(model, scheme, hardware=, output_dir=), validate(path, hardware=), load().

def qk_predict(model: Path, cfg: RunConfig, kv_cache: str) -> dict[str, Any]:
    """quantkit's predictions on ``cfg.hardware`` for every scheme it plans there: ``{scheme: {...}}``.

    KV capacity = the plan's max concurrency (memory left after weights and runtime overhead, over one sequence's
    KV) times ``max_model_len``: the same quantity vLLM logs as "GPU KV cache size: N tokens".
    """
    import quantkit
    from quantkit.hardware import get_hardware, support

    p = quantkit.plan(model, cfg.hardware, kv_cache=kv_cache, max_model_len=cfg.max_model_len,
                      concurrency=cfg.max_num_seqs, tensor_parallel_size=1)
    hw = get_hardware(cfg.hardware)
    out: dict[str, Any] = {"_plan": {"scheme": p.scheme, "kv_cache_dtype": p.kv_cache_dtype}}
    for fit in p.memory:
        kernel = ("unquantized (bf16 GEMM)" if fit.scheme == "bf16"
                  else support(quantkit.get_scheme(fit.scheme), hw).kernel)
        tokens = None if fit.max_concurrency is None else round(fit.max_concurrency * cfg.max_model_len)
        out[fit.scheme] = {"kernel": kernel, "kv_cache_dtype": kv_cache, "kv_tokens": tokens,
                           "weight_gib": round(fit.weight_bytes / GIB, 2), "fits": fit.fits}
    return out


def qk_quantize(model: Path, row: Row, cfg: RunConfig, out: Path) -> dict[str, Any]:
    """Quantize and validate one checkpoint (runs in the producer process)."""
    import quantkit

    res = quantkit.quantize(str(model), row.scheme, hardware=cfg.hardware, output_dir=str(out), backend=row.backend,
                            kv_cache=row.produce_kv, overwrite=True, num_calibration_samples=cfg.calib_samples,
                            max_seq_length=cfg.calib_seq_len)
    report = quantkit.validate(str(out), hardware=cfg.hardware)
    findings = [f.to_dict() if hasattr(f, "to_dict") else str(f) for f in report.findings]
    return {"path": str(out), "quantize_s": round(res.timings.get("total_s", 0.0), 1), "timings": res.timings,
            "quantized_gib": round(res.quantized_bytes / GIB, 2), "group_size": res.group_size,
            "notes": list(res.notes), "validator": "ok" if report.ok else "errors", "findings": findings}


def qk_serve_plan(path: Path, cfg: RunConfig, kv: str | None) -> dict[str, Any]:
    """How ``quantkit.load`` will load ``path`` (no vLLM import): KV dtype, why, engine arguments."""
    from quantkit.serve.engine import serve_plan

    sp = serve_plan(path, cfg.hardware, kv_cache_dtype=kv, **cfg.engine_args())
    return {"kv_cache_dtype": sp.kv_cache_dtype, "kv_reason": sp.kv_reason, "engine_args": sp.engine_args,
            "quant_method": sp.quant_method}


def qk_load(path: Path, cfg: RunConfig, kv: str | None) -> tuple[Any, float]:
    """A ``vllm.LLM`` through quantkit's load path, and the seconds it took (runs in the fresh serve process).

    Timed here rather than read from attributes ``load()`` used to set on the engine (its return is becoming the
    plain ``vllm.LLM``); the KV decision comes from :func:`qk_serve_plan`, which ``load()`` follows.
    """
    from quantkit import load

    t0 = time.perf_counter()
    llm = load(str(path), cfg.hardware, kv_cache_dtype=kv, **cfg.engine_args())
    return llm, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ the checkpoint

def build_tokenizer(vocab_size: int) -> Any:
    """A byte-level tokenizer whose vocabulary is exactly the model's (no hub, no files to carry).

    The first 256 ids are the bytes (GPT-2's byte-to-character alphabet), the rest unique filler strings no text
    encodes to, so any id the random model emits decodes and calibration text tokenizes to real ids.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    fillers = itertools.chain(itertools.product(alphabet, repeat=2), itertools.product(alphabet, repeat=3))
    tokens = alphabet + ["".join(t) for t in itertools.islice(fillers, vocab_size - len(alphabet) - len(specials))]
    vocab = {t: i for i, t in enumerate(tokens + specials)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=specials[0], eos_token=specials[1])
    fast.add_special_tokens({"bos_token": specials[0], "eos_token": specials[1]})
    return fast


def llama_config(shape: str) -> Any:
    from transformers import LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape])
    cfg.dtype = "bfloat16"
    return cfg


def build_checkpoint(out: Path, shape: str, device: str, tokenizer: Path | None = None) -> Path:
    """A random-weight bf16 checkpoint of ``shape`` with its tokenizer, written atomically (tmp + rename)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    t0 = time.perf_counter()
    cfg = llama_config(shape)
    tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else build_tokenizer(cfg.vocab_size)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16 directly: 16 GB, not 32, for the 8B shape
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="5GB")
    tok.save_pretrained(tmp)
    tmp.rename(out)
    print(f"built {out} ({shape}, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params, on {device}) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def write_header_only(out: Path, shape: str) -> Path:
    """``config.json`` + one safetensors file listing every tensor's real name, dtype and shape over a sparse,
    unwritten payload: what ``quantkit plan`` reads (headers only), at no disk or memory cost."""
    import torch
    from transformers import LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    cfg = llama_config(shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in model.state_dict().items():
        size = t.numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    cfg.save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------------ vLLM's log

KERNEL_RX = re.compile(r"\b(\w+(?:LinearKernel|LinearMethod|ScaledMM\w*))\b")
KV_TOKENS_RX = re.compile(r"KV cache size:\s*([\d,]+)\s*tokens")
KV_DTYPE_RX = re.compile(r"\bkv_cache_dtype=['\"]?(\w+)")
#: kernel families: a measured class name belongs to the first family whose word it contains
KERNEL_FAMILIES = ("machete", "marlin", "cutlass", "exllama", "flashinfer", "deepgemm", "triton", "conch",
                   "allspark", "torch", "cpu", "dynamic4bit")


def parse_kernels(log: str) -> list[str]:
    """Kernel / method class names vLLM names in its log, in first-seen order."""
    seen: list[str] = []
    for m in KERNEL_RX.finditer(log):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def parse_kv_tokens(log: str) -> int | None:
    m = KV_TOKENS_RX.search(log)
    return int(m.group(1).replace(",", "")) if m else None


def parse_kv_dtype(log: str) -> str | None:
    """The ``kv_cache_dtype`` in vLLM's engine-config line."""
    m = KV_DTYPE_RX.search(log)
    return m.group(1) if m else None


def linear_kernels(kernels: list[str]) -> list[str]:
    """The kernels that do the linear layers' GEMMs (not ``...LinearMethod`` wrappers)."""
    return [k for k in kernels if k.endswith(("LinearKernel", "Kernel")) or "ScaledMM" in k] or kernels


def kernel_agrees(predicted: str, measured: list[str]) -> bool | None:
    """Whether vLLM's kernel is in the family the plan names (None: nothing measured)."""
    lin = linear_kernels(measured)
    if predicted.startswith("unquantized"):
        return not any(k.endswith("Kernel") or "ScaledMM" in k for k in measured)
    if not lin:
        return None
    name = lin[0].lower()
    family = next((f for f in KERNEL_FAMILIES if f in name), name)
    return family in predicted.lower().replace(" ", "").replace("-", "")


def compare(row: dict[str, Any]) -> list[str]:
    """Flags for one measured row against its prediction."""
    flags = []
    pred, meas = row.get("predicted") or {}, row.get("measured") or {}
    if not meas or "error" in row:
        return flags
    ok = kernel_agrees(pred.get("kernel", ""), meas.get("kernels", []))
    if ok is False:
        chose = ", ".join(linear_kernels(meas["kernels"])[:2])
        flags.append(f"kernel: plan says {pred.get('kernel')}, vLLM chose {chose}")
    p, m = pred.get("kv_tokens"), meas.get("kv_tokens")
    if p and m and abs(m - p) / m > KV_TOLERANCE:
        flags.append(f"KV capacity: predicted {p:,}, measured {m:,} ({(p - m) / m:+.0%})")
    if pred.get("kv_cache_dtype") and meas.get("kv_cache_dtype") and \
            _kv_norm(pred["kv_cache_dtype"]) != _kv_norm(meas["kv_cache_dtype"]):
        flags.append(f"KV dtype: predicted {pred['kv_cache_dtype']}, served {meas['kv_cache_dtype']}")
    return flags


def _kv_norm(kv: str) -> str:
    kv = kv.lower()
    return "fp8" if kv.startswith("fp8") else "16-bit" if kv in ("auto", "bfloat16", "float16", "bf16") else kv


# ------------------------------------------------------------------------------------------------ the table

def _num(v: Any, fmt: str = "{:,.0f}") -> str:
    return "" if v is None else fmt.format(v)


def _ratio(meas: dict[str, Any], base: dict[str, Any], key: str) -> str:
    return f"{meas[key] / base[key]:.2f}" if meas.get(key) and base.get(key) else ""


def render_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown table: measured (vLLM's log) beside predicted (quantkit plan), flags last."""
    shape = meta.get("shape", "?")
    kind = "dry run: predictions only, nothing measured" if meta.get("dry_run") else "measured"
    title = (f"GPU check on {meta.get('device', '?')}, {meta.get('date', '?')} ({kind}; {shape} shape, random "
             f"weights, {meta.get('prompt_len', '?')} in / {meta.get('new_tokens', '?')} out, median of "
             f"{meta.get('repeats', '?')}; hardware={meta.get('hardware', '?')}, max_model_len "
             f"{meta.get('max_model_len', '?')}, gpu_memory_utilization {meta.get('gpu_memory_utilization', '?')})")
    header = ("| checkpoint | linear kernel (vLLM log) | predicted kernel | KV dtype | KV tokens | predicted KV tokens "
              "| load s | tok/s bs1 | x bf16 | tok/s bs64 | x bf16 | quantize s | validator | flags |")
    out = [title, "", header,
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = next((r.get("measured") or {} for r in rows if r["key"] == "bf16"), {})
    for r in rows:
        pred, meas = r.get("predicted") or {}, r.get("measured") or {}
        prod = r.get("produced") or {}
        if "error" in r:
            status = f"failed: {r['error'][:160]}"
        elif "skipped" in r:
            status = f"skipped: {r['skipped']}"
        elif not meas:
            status = "not run"
        else:
            status = ", ".join(linear_kernels(meas.get("kernels", []))[:2]) or "-"
        kv = meas.get("kv_cache_dtype") or (f"({pred['kv_cache_dtype']})" if pred.get("kv_cache_dtype") else "")
        out.append(
            f"| {r['label']} | {status} | {pred.get('kernel', '')} | {kv} | {_num(meas.get('kv_tokens'))} "
            f"| {_num(pred.get('kv_tokens'))} | {_num(meas.get('load_s'), '{:.1f}')} | {_num(meas.get('bs1'))} "
            f"| {_ratio(meas, base, 'bs1')} | {_num(meas.get('bs64'))} | {_ratio(meas, base, 'bs64')} "
            f"| {_num(prod.get('quantize_s'), '{:.0f}')} "
            f"| {prod.get('validator', '')} | {'; '.join(r.get('flags', [])) or ''} |")
    out.append("")
    out.append("Predicted columns: `quantkit plan` (kernel from the scheme table for the hardware; KV tokens = the "
               "plan's max concurrency x max_model_len). KV dtype in parentheses: predicted, not served. A flag "
               f"marks a kernel outside the predicted family or KV capacity more than {KV_TOLERANCE:.0%} off.")
    return "\n".join(out) + "\n"


def write_outputs(out_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["flags"] = compare(r)
    table = render_table(rows, meta)
    (out_dir / "gpu_check.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    (out_dir / "gpu_check.md").write_text(table)
    return table


# ------------------------------------------------------------------------------------------------ processes

SERVE_RESULT = "GPU_CHECK_RESULT "


def _prompts(n: int, length: int) -> list[dict[str, list[int]]]:
    # distinct prompts (no prefix-cache sharing across the batch), ids inside every byte-level vocabulary
    return [{"prompt_token_ids": [10 + (7 * i + 13 * j) % 240 for j in range(length)]} for i in range(n)]


def serve_child(path: Path, cfg: RunConfig, kv: str | None) -> None:
    """In a fresh process: load through quantkit, time decode at batch 1 and 64, print one JSON line."""
    from vllm import SamplingParams

    sp = qk_serve_plan(path, cfg, kv)
    llm, load_s = qk_load(path, cfg, kv)
    res: dict[str, Any] = {"load_s": round(load_s, 1), "kv_cache_dtype": sp["kv_cache_dtype"],
                           "kv_reason": sp["kv_reason"]}
    try:
        cc = llm.llm_engine.vllm_config.cache_config
        res["kv_cache_dtype_engine"] = str(cc.cache_dtype)
        if cc.num_gpu_blocks:
            res["kv_tokens_engine"] = int(cc.num_gpu_blocks) * int(cc.block_size)
    except AttributeError:
        pass
    params = SamplingParams(max_tokens=cfg.new_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate(_prompts(4, cfg.prompt_len), SamplingParams(max_tokens=32, ignore_eos=True, detokenize=False),
                 use_tqdm=False)  # warm-up
    for n in (1, 64):
        rates = []
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            outs = llm.generate(_prompts(n, cfg.prompt_len), params, use_tqdm=False)
            rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t0))
        res[f"bs{n}"] = round(statistics.median(rates), 1)
    print(SERVE_RESULT + json.dumps(res), flush=True)


def _env(pythonpath: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    paths = [str(REPO / "src"), *[p for p in pythonpath.split(os.pathsep) if p]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


SERVE_ENV = {"VLLM_USE_FLASHINFER_SAMPLER": "0"}  # no flashinfer carried (shared/gpu/RECIPE.md)


def _child_cmd(kind: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--_{kind}", *args]


def _cfg_json(cfg: RunConfig) -> str:
    return json.dumps(asdict(cfg))


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:] or "?"


def run_produce(model: Path, work: Path, row: Row, cfg: RunConfig, a: argparse.Namespace) -> dict[str, Any]:
    out = work / f"ckpt-{row.key}"
    cmd = _child_cmd("quantize", str(model), row.key, str(out), _cfg_json(cfg))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=_env(a.produce_pythonpath), capture_output=True, text=True, check=False)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"produce-{row.key}.log").write_text(p.stdout + p.stderr)
    if p.returncode or SERVE_RESULT not in p.stdout:
        return {"error": "quantize: " + _tail(p.stderr), "wall_s": round(time.perf_counter() - t0, 1)}
    res = json.loads(p.stdout.split(SERVE_RESULT, 1)[1].splitlines()[0])
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def run_serve(path: Path, work: Path, row: Row, cfg: RunConfig, a: argparse.Namespace) -> dict[str, Any]:
    cmd = _child_cmd("serve", str(path), row.kv_cache_dtype or "none", _cfg_json(cfg))
    env = _env(a.serve_pythonpath, {**SERVE_ENV, "VLLM_CACHE_ROOT": str(work / "vllm-cache")})
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    log = p.stdout + p.stderr
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"serve-{row.key}.log").write_text(log)
    meas: dict[str, Any] = {"kernels": parse_kernels(log), "kv_tokens": parse_kv_tokens(log),
                            "kv_dtype_log": parse_kv_dtype(log), "wall_s": round(time.perf_counter() - t0, 1)}
    if p.returncode or SERVE_RESULT not in p.stdout:
        return {"measured": meas, "error": f"load (exit {p.returncode}): " + _tail(p.stderr)}
    meas.update(json.loads(p.stdout.split(SERVE_RESULT, 1)[1].splitlines()[0]))
    if meas.get("kv_tokens") is None:
        meas["kv_tokens"] = meas.get("kv_tokens_engine")
    return {"measured": meas}


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out.splitlines()[0] if out else "no GPU (CPU)"


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------------ orchestration

class Budget:
    """Wall-clock budget: a step starts only if its estimate fits in what is left."""

    def __init__(self, seconds: float, estimates: dict[str, float]):
        self.t0, self.seconds, self.est = time.monotonic(), seconds, dict(estimates)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def fits(self, step: str, extra: float = 0.0) -> bool:
        return self.est.get(step, 0.0) + extra <= self.left()


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _selected(a: argparse.Namespace) -> list[Row]:
    if not a.only:
        return list(ROWS)
    bad = [k for k in a.only if k not in ROW_BY_KEY]
    if bad:
        raise SystemExit(f"unknown --only {bad}; known: {', '.join(ROW_BY_KEY)}")
    return [ROW_BY_KEY[k] for k in a.only]


def predictions(model: Path, cfg: RunConfig, rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per row key: quantkit's prediction (kernel, KV dtype, KV tokens)."""
    by_kv = {kv: qk_predict(model, cfg, kv) for kv in {r.kv_cache_dtype or "auto" for r in rows}}
    return {r.key: by_kv[r.kv_cache_dtype or "auto"].get(r.plan_scheme, {"kernel": "not planned on this hardware"})
            for r in rows}


def estimate_lines(rows: list[Row], est: dict[str, float], jobs: int, budget: float) -> list[str]:
    prod = sorted((est[r.key] for r in rows if r.scheme), reverse=True)
    lanes = [0.0] * max(1, jobs)
    for s in prod:  # longest first onto the least loaded lane
        lanes[lanes.index(min(lanes))] += s
    produce = max(lanes) * (1.15 if jobs > 1 else 1.0)  # parallel producers share the GPU and the disk
    serve = est["serve"] * len(rows) + est["serve-first"]
    total = est["build"] + produce + serve
    return [f"estimate: build {est['build']:.0f} s + produce {produce:.0f} s ({len(prod)} checkpoints, {jobs} at a "
            f"time) + serve {serve:.0f} s ({len(rows)} loads) = {total:.0f} s against a budget of {budget:.0f} s"
            + ("" if total <= budget else " -- over: the last rows in serving order will be skipped, or run "
               "--phase produce in the background first (docs/gpu-carry-plan.md)")]


def dry_run(a: argparse.Namespace, cfg: RunConfig) -> int:
    rows = _selected(a)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tiny = build_checkpoint(work / "tiny", "tiny", "cpu", a.tokenizer)
    header = write_header_only(work / f"{a.shape}-header", a.shape)
    print(f"header-only {a.shape} checkpoint: {header} (sparse; plan reads headers only)")
    pred = predictions(header, cfg, rows)
    tiny_pred = predictions(tiny, cfg, rows)
    est = ESTIMATE_S if a.shape == "llama3-8b" else TINY_ESTIMATE_S
    print("\n# what the real run executes (PYTHONPATH: src + the producer / vLLM site-packages)")
    model = work / a.shape
    print(" ".join(shlex.quote(c) for c in _child_cmd("build", str(model), a.shape, "cuda")))
    for key in PRODUCE_ORDER:
        r = ROW_BY_KEY[key]
        if r in rows:
            print(f"PYTHONPATH=src:{a.produce_pythonpath or '$PRODUCE_PYTHONPATH'} "
                  + " ".join(shlex.quote(c) for c in _child_cmd("quantize", str(model), r.key,
                                                                 str(work / f'ckpt-{r.key}'), _cfg_json(cfg))))
    sp = qk_serve_plan(tiny, cfg, None)
    for key in SERVE_ORDER:
        r = ROW_BY_KEY[key]
        if r in rows:
            path = model if r.scheme is None else work / f"ckpt-{r.key}"
            print(f"PYTHONPATH=src:{a.serve_pythonpath or '$SERVE_PYTHONPATH'} VLLM_USE_FLASHINFER_SAMPLER=0 "
                  + " ".join(shlex.quote(c) for c in _child_cmd("serve", str(path), r.kv_cache_dtype or "none",
                                                                 _cfg_json(cfg))))
    print(f"  load() engine arguments: {json.dumps(sp['engine_args'])} (KV {sp['kv_cache_dtype']}: {sp['kv_reason']})")
    print("\n# " + "\n# ".join(estimate_lines(rows, est, a.jobs, a.budget_s)))
    print(f"\n# tiny checkpoint ({tiny}): the plan predicts "
          + "; ".join(f"{k}: {v.get('kernel')}, KV {v.get('kv_tokens')}" for k, v in tiny_pred.items()))
    table_rows = [{"key": r.key, "label": r.label, "scheme": r.scheme, "backend": r.backend,
                   "kv_requested": r.kv_cache_dtype, "predicted": pred[r.key]} for r in rows]
    meta = {**asdict(cfg), "dry_run": True, "shape": a.shape, "device": f"{device_name()} (dry run)",
            "date": time.strftime("%Y-%m-%d"), "estimate": estimate_lines(rows, est, a.jobs, a.budget_s)[0]}
    table = write_outputs(a.out, table_rows, meta)
    print("\n" + table)
    print(f"dry run done in {time.perf_counter() - t0:.1f} s; wrote {a.out / 'gpu_check.md'} and gpu_check.json")
    return 0


def real_run(a: argparse.Namespace, cfg: RunConfig) -> int:
    rows = _selected(a)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    est = ESTIMATE_S if a.shape == "llama3-8b" else TINY_ESTIMATE_S
    budget = Budget(a.budget_s, est)
    print("\n".join(estimate_lines(rows, est, a.jobs, a.budget_s)), flush=True)
    device = "cuda" if _has_cuda() else "cpu"
    model = work / a.shape
    if a.phase in ("all", "produce"):
        if not (model / "config.json").exists():
            p = subprocess.run(_child_cmd("build", str(model), a.shape, device, str(a.tokenizer or "")),
                               env=_env(a.produce_pythonpath), check=False)
            if p.returncode:
                print("building the checkpoint failed", file=sys.stderr)
                return 1
        produce_json = work / "produce.json"
        produced = _load_json(produce_json)
        todo = [ROW_BY_KEY[k] for k in PRODUCE_ORDER if ROW_BY_KEY[k] in rows and k not in produced]
        # Disk: the 8B source (16 GB) and five checkpoints (~37 GB) may not fit beside the image. A producer starts
        # only if the free space, less what running producers will still write, holds its predicted size.
        size_gib = {k: v.get("weight_gib", 0.0) * 1.05 + 0.5 for k, v in predictions(model, cfg, todo).items()}
        print(f"disk free in {work}: {shutil.disk_usage(work).free / GIB:.0f} GiB; checkpoints to write: "
              f"{sum(size_gib.values()):.0f} GiB", flush=True)
        lock, reserved = threading.Lock(), [0.0]

        def job(r: Row) -> tuple[Row, dict[str, Any]]:
            # in one call with serving, keep room to serve bf16 and this checkpoint at least
            reserve = 2 * est["serve"] + est["serve-first"] if a.phase == "all" else 0.0
            if not budget.fits(r.key, reserve):
                return r, {"skipped": f"budget ({budget.left():.0f} s left, estimate {est[r.key]} s)"}
            need = size_gib[r.key]
            with lock:
                free = shutil.disk_usage(work).free / GIB - reserved[0]
                if free < need + a.disk_margin_gib:
                    return r, {"skipped": f"disk ({free:.0f} GiB free, {need:.0f} GiB needed)"}
                reserved[0] += need
            try:
                return r, run_produce(model, work, r, cfg, a)
            finally:
                with lock:
                    reserved[0] -= need

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
            for r, res in pool.map(job, todo):
                produced[r.key] = res
                produce_json.write_text(json.dumps(produced, indent=2))
                brief = {k: v for k, v in res.items() if k not in ("findings", "timings")}
                print(f"produce {r.key}: " + json.dumps(brief), flush=True)
        (work / "produce.done").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        if a.phase == "produce":
            return 0 if all("error" not in v for v in produced.values()) else 1
    else:
        deadline = time.monotonic() + a.wait_produce
        while not (work / "produce.done").exists() and time.monotonic() < deadline:
            time.sleep(5)
        if not (work / "produce.done").exists():
            print(f"produce phase not finished after {a.wait_produce} s; serving what exists", flush=True)
    produced = _load_json(work / "produce.json")
    pred = predictions(model, cfg, rows)
    results: dict[str, dict[str, Any]] = _load_json(work / "results.json")
    for key in SERVE_ORDER:
        r = ROW_BY_KEY[key]
        if r not in rows:
            continue
        res: dict[str, Any] = {"key": r.key, "label": r.label, "scheme": r.scheme, "backend": r.backend,
                               "kv_requested": r.kv_cache_dtype, "predicted": pred[r.key]}
        prod = produced.get(r.key, {}) if r.scheme else {}
        res["produced"] = {k: v for k, v in prod.items() if k != "timings"}
        path = model if r.scheme is None else Path(prod.get("path", work / f"ckpt-{r.key}"))
        first = not any("measured" in v for v in results.values())
        if "error" in prod or "skipped" in prod:
            res["error" if "error" in prod else "skipped"] = prod.get("error") or prod["skipped"]
        elif not (path / "config.json").exists():
            res["error"] = f"no checkpoint at {path}"
        elif not budget.fits("serve", est["serve-first"] if first else 0.0):
            res["skipped"] = f"budget ({budget.left():.0f} s left)"
        else:
            res["predicted"]["kv_cache_dtype"] = qk_serve_plan(path, cfg, r.kv_cache_dtype)["kv_cache_dtype"]
            res.update(run_serve(path, work, r, cfg, a))
        results[r.key] = res
        (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"serve {r.key}: " + json.dumps({k: res.get(k) for k in ("measured", "error", "skipped")}), flush=True)
    meta = {**asdict(cfg), "dry_run": False, "shape": a.shape, "device": device_name(),
            "date": time.strftime("%Y-%m-%d"), "elapsed_s": round(time.monotonic() - budget.t0, 1),
            "versions": _versions(a)}
    ordered = [results[r.key] for r in ROWS if r.key in results]
    table = write_outputs(a.out, ordered, meta)
    _copy_logs(work, a.out)
    print(table)
    return 0 if all("error" not in r for r in ordered) else 1


def _versions(a: argparse.Namespace) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; out = {}\n"
            "for p in ('torch', 'transformers', 'vllm', 'llmcompressor', 'compressed-tensors', 'nvidia-modelopt'):\n"
            "    try: out[p] = m.version(p)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
    out: dict[str, str] = {}
    for side, pp in (("produce", a.produce_pythonpath), ("serve", a.serve_pythonpath)):
        p = subprocess.run([sys.executable, "-c", code], env=_env(pp), capture_output=True, text=True, check=False)
        if p.returncode == 0:
            out.update({f"{side}:{k}": v for k, v in json.loads(p.stdout).items()})
    return out


def _copy_logs(work: Path, out: Path) -> None:
    """The kernel/KV lines and the tail of each log, in one file ($OUT returns at most 8 files)."""
    keep = re.compile(r"Selected|Using \w+ for|KV cache size|kv_cache_dtype|Error|error|Traceback|Maximum concurrency"
                      r"|Model loading took|torch.compile|CUDA graph")
    lines = []
    for f in sorted((work / "logs").glob("*.log")):
        text = f.read_text(errors="replace").splitlines()
        lines += [f"===== {f.name}", *[ln for ln in text if keep.search(ln)][:80], "----- tail", *text[-25:]]
    (out / "gpu_check_logs.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU only: build, plan, print commands and the skeleton.")
    ap.add_argument("--phase", choices=("all", "produce", "serve"), default="all")
    ap.add_argument("--shape", choices=tuple(SHAPES), default="llama3-8b")
    ap.add_argument("--hardware", default="h200")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qk-work"))
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                    help="Folder for gpu_check.json / gpu_check.md (default $OUT, else WORK/out).")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="A tokenizer directory; default: a byte-level one built with the model's vocabulary.")
    ap.add_argument("--only", nargs="*", default=None, help=f"Row keys: {', '.join(ROW_BY_KEY)}.")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="Wall-clock budget; steps whose estimate no longer fits are skipped and reported.")
    ap.add_argument("--jobs", type=int, default=3, help="Producers run at once (each holds the model in RAM).")
    ap.add_argument("--wait-produce", type=float, default=600.0, help="--phase serve: wait this long for produce.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-seq-len", type=int, default=256)
    ap.add_argument("--disk-margin-gib", type=float, default=2.0, help="Free disk kept beyond the checkpoints.")
    ap.add_argument("--fast-load", action="store_true", help="vLLM without torch.compile (FULL_DECODE_ONLY graphs).")
    ap.add_argument("--produce-pythonpath", default=os.environ.get("PRODUCE_PYTHONPATH", ""))
    ap.add_argument("--serve-pythonpath", default=os.environ.get("SERVE_PYTHONPATH", ""))
    a = ap.parse_args(argv)
    a.out = a.out or a.work / "out"
    cfg = RunConfig(hardware=a.hardware, repeats=a.repeats, new_tokens=a.new_tokens, calib_samples=a.calib_samples,
                    calib_seq_len=a.calib_seq_len, fast_load=a.fast_load)
    return dry_run(a, cfg) if a.dry_run else real_run(a, cfg)


def _child(argv: list[str]) -> int:
    """The subprocesses: ``--_build OUT SHAPE DEVICE [TOKENIZER]``, ``--_quantize MODEL KEY OUT CFG``,
    ``--_serve PATH KV CFG``."""
    kind, args = argv[0], argv[1:]
    if kind == "--_build":
        build_checkpoint(Path(args[0]), args[1], args[2], Path(args[3]) if len(args) > 3 and args[3] else None)
        return 0
    if kind == "--_quantize":
        res = qk_quantize(Path(args[0]), ROW_BY_KEY[args[1]], RunConfig(**json.loads(args[3])), Path(args[2]))
        print(SERVE_RESULT + json.dumps(res, default=str), flush=True)
        return 0
    if kind == "--_serve":
        serve_child(Path(args[0]), RunConfig(**json.loads(args[2])), None if args[1] == "none" else args[1])
        return 0
    raise SystemExit(f"unknown child {kind}")


if __name__ == "__main__":  # the guard vLLM needs: it spawns workers that re-import this file
    # the orchestrator plans in-process: this checkout's quantkit, installed or not (the device has a bare python3)
    sys.path.insert(0, str(REPO / "src"))
    if len(sys.argv) > 1 and sys.argv[1] in ("--_build", "--_quantize", "--_serve"):
        sys.exit(_child(sys.argv[1:]))
    sys.exit(main())
