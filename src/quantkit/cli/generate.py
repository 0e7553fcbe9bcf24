"""``quantkit generate``: load a checkpoint in vLLM, generate, time and score it.

Run it where vLLM is installed (the serve environment) or anywhere else: without vLLM in this interpreter the
same command runs in the serve environment (``$QUANTKIT_SERVE_PYTHON``, else ``.venvs/serve``) and its JSON
answer is printed here. ``--json`` prints exactly one JSON object on stdout; vLLM's own logs go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from quantkit.cli import app
from quantkit.cli import common as _load


@app.command("generate")
def generate_command(
    path: Path = typer.Argument(..., help="Checkpoint directory."),
    hardware: str = typer.Option(None, "--hardware", "-H", help="Serving target (default: local GPU, else cpu)."),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Prompt(s); a fixed set of 8 by default."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1, help="Tokens to generate per prompt."),
    perplexity: bool = typer.Option(True, "--perplexity/--no-perplexity", help="Score held-out text (Hamlet)."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Held-out tokens to score."),
    eval_data: Path = typer.Option(None, "--eval-data",
                                   help="Held-out text to score: .txt, or .jsonl of {\"text\": ...} rows "
                                        "(default: the shipped Hamlet)."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure decode tokens/s at batch 1 and 16."),
    kv_cache_dtype: str = typer.Option(None, "--kv-cache-dtype", help="Override the KV-cache dtype."),
    tensor_parallel_size: int = typer.Option(None, "--tensor-parallel-size", "--tp", min=1, help="Passed to vLLM."),
    max_model_len: int = typer.Option(None, "--max-model-len", min=1, help="Passed to vLLM."),
    dtype: str = typer.Option(None, "--dtype", help="Passed to vLLM (e.g. float32; default: the plan's)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
) -> None:
    """Load PATH with quantkit.load() (vLLM), generate greedily, and report speed and perplexity."""
    from quantkit.serve.engine import serve_plan

    engine_args = {k: v for k, v in {"tensor_parallel_size": tensor_parallel_size,
                                     "max_model_len": max_model_len, "dtype": dtype}.items() if v is not None}
    with _load.json_errors(as_json), _load.work_output_to_stderr():
        serve_plan(path, hardware, kv_cache_dtype=kv_cache_dtype)  # bad path or hardware: exit 2 before vLLM
        if perplexity and eval_data is not None:
            from quantkit.calibration import eval_text

            eval_text(eval_data)  # a missing or unreadable file: exit 2 before vLLM
        res = _load.run_probe(path, hardware=hardware, prompts=prompt, max_tokens=max_tokens, perplexity=perplexity,
                              eval_tokens=eval_tokens, speed=speed, kv_cache_dtype=kv_cache_dtype,
                              eval_data=str(eval_data) if eval_data is not None else None,
                              engine_args=engine_args)
    if as_json:
        typer.echo(json.dumps({"ok": True, **res}))
        return
    typer.echo(f"{path}: quantization {res['quant_method'] or 'none'}, kv_cache_dtype={res['kv_cache_dtype']} "
               f"({res['kv_reason']}), loaded in {res['load_s']:.1f} s")
    for g in res["generations"]:
        typer.echo(f"  {g['prompt']!r} -> {g['text']!r}")
    for k, v in res.items():
        if k.startswith("tokens_per_s"):
            typer.echo(f"  decode {k.removeprefix('tokens_per_s_')}: {v} tok/s")
    if "perplexity" in res:
        ppl = res["perplexity"]
        src = str(ppl.get("source", "Hamlet")).removeprefix("file ")
        typer.echo(f"  perplexity ({'Hamlet' if src.startswith('built-in') else src}, {ppl['tokens']} tokens): "
                   f"{ppl['perplexity']:.2f}")


@app.command("lm-eval")
def lm_eval_command(
    path: Path = typer.Argument(..., help="Checkpoint directory."),
    tasks: str = typer.Option(..., "--tasks", help="lm-eval task(s), comma-separated; quantkit's local tasks "
                                                   "(e.g. quantkit_support_mc) need no hub."),
    hardware: str = typer.Option(None, "--hardware", "-H", help="Serving target (default: local GPU, else cpu)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Score only the first N examples of each task."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
) -> None:
    """Score PATH on lm-eval task(s) with lm-eval's vLLM backend and the engine arguments quantkit serves with."""
    from quantkit.eval.lm_eval_tasks import check_lm_eval, parse_tasks, score_tasks
    from quantkit.serve.engine import serve_plan

    names = parse_tasks(tasks)
    with _load.json_errors(as_json), _load.work_output_to_stderr():
        serve_plan(path, hardware)  # bad path or hardware: exit 2 before vLLM
        if _load.vllm_here():
            _load.route_vllm_logs_to_stderr()
            res = score_tasks(path, names, hardware=hardware, limit=limit)
        else:
            from quantkit.serve.remote import run_quantkit

            check_lm_eval(names)
            args = ["lm-eval", str(path.resolve()), "--tasks", ",".join(names)]
            args += ["--hardware", hardware] if hardware else []
            args += ["--limit", str(limit)] if limit else []
            res = run_quantkit(args)
            res.pop("ok", None)
    if as_json:
        typer.echo(json.dumps({"ok": True, **res}))
        return
    for t, s in res["scores"].items():
        typer.echo(f"{path}: {t} {s['metric']} = {s['value']}")
