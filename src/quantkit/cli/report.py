"""``quantkit roundtrip`` and ``quantkit report``: the proof, as JSON, Markdown and a plot.

``roundtrip`` is the main job: quantize with each scheme, validate, load original and quantized in vLLM,
generate, and compare. ``report`` does the comparison for checkpoints that already exist. Both write
``report.json``, ``report.md`` and ``report.png`` and print a compact table; exit 1 when a checkpoint has
validator errors or a quality gate (``--max-ppl-rise``, ``--min-recovery``) fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from quantkit.cli import app
from quantkit.cli.common import (
    NUM_SAMPLES_OPTION,
    SEQ_LEN_OPTION,
    json_errors,
    work_output_to_stderr,
)

EVAL_HELP = ("Held-out text for perplexity: .txt, or .jsonl of {\"text\": ...} rows (default: the shipped "
             "Hamlet). Keep it out of the calibration data.")
GATE_HELP = ("Quality gate: fail (exit 1, with the table) when a checkpoint's perplexity rises more than this many "
             "percent over the original's.")


TASKS_HELP = ("lm-eval task(s), comma-separated, scored on vLLM for the original and each checkpoint (needs lm-eval "
              "in the serve environment; quantkit_support_mc ships with quantkit, no hub needed).")
LIMIT_HELP = "Score only the first N examples of each lm-eval task."
RECOVERY_HELP = ("Quality gate: fail (exit 1, with the table) when a checkpoint's score on an lm-eval task is below "
                 "this many percent of the original's (quantized ÷ original, per task).")


def _check_data(calibration: Path | None, eval_data: Path | None) -> None:
    """A missing or unreadable data file is exit 2 before any vLLM work."""
    from quantkit.calibration import check_calibration, eval_text

    if calibration is not None:
        check_calibration(calibration)
    if eval_data is not None:
        eval_text(eval_data)


def _print_generations(data: dict[str, Any], n: int = 3) -> None:
    orig = data["original"].get("generations") or []
    for run in data["runs"]:
        for i, g in enumerate((run["quantized"].get("generations") or [])[:n]):
            base = f"   (original: {orig[i]['text']!r})" if i < len(orig) else ""
            typer.echo(f"[{run.get('scheme')}] {g['prompt']!r} -> {g['text']!r}{base}")


def _finish(data: dict[str, Any], files: dict[str, str], as_json: bool) -> None:
    from quantkit.report.gates import passed
    from quantkit.report.render import print_gates, print_table

    ok = all(r["validation"]["ok"] for r in data["runs"]) and passed(data.get("gates") or [])
    if as_json:
        typer.echo(json.dumps({"ok": ok, **data, "files": files}, default=str))
    else:
        _print_generations(data)
        print_table(data)
        for r in data["runs"]:
            for f in r["validation"]["findings"]:
                typer.echo(f"[{r.get('scheme')}] validator {f['severity']} [{f['rule']}] {f['message']}")
            if not r["quantized"].get("served"):
                typer.echo(f"[{r.get('scheme')}] not served by vLLM here: {r['quantized'].get('serve_error')}")
        typer.echo("report: " + "  ".join(f"{k}: {v}" for k, v in files.items()))
        print_gates(data)
    if not ok:
        raise SystemExit(1)  # not typer.Exit: main() runs click with standalone_mode=False


@app.command("roundtrip")
def roundtrip_command(
    model: str = typer.Argument("embedded", help="Checkpoint directory, or 'embedded'."),
    scheme: list[str] = typer.Option(["auto"], "--scheme", "-s", help="Scheme(s) to run; repeat the option."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help="Serving target; default: the local GPU, else cpu (vLLM runs here)."),
    output_root: Path = typer.Option(Path("runs/roundtrip"), "--output-root", "-o", help="Checkpoints and report."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing checkpoints under --output-root."),
    num_samples: int | None = NUM_SAMPLES_OPTION,
    seq_len: int | None = SEQ_LEN_OPTION,
    kv_cache: str = typer.Option(None, "--kv-cache", help="'fp8' to add a calibrated FP8 KV cache to every scheme."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Held-out tokens scored."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure decode tokens/s."),
    calibration: Path = typer.Option(None, "--calibration",
                                     help="Calibration data: .txt, or .jsonl of {\"text\"} / chat {\"messages\"} "
                                          "rows (default: the built-in text)."),
    eval_data: Path = typer.Option(None, "--eval-data", help=EVAL_HELP),
    max_ppl_rise: float = typer.Option(None, "--max-ppl-rise", min=0.0, help=GATE_HELP),
    lm_eval_tasks: str = typer.Option(None, "--lm-eval-tasks", help=TASKS_HELP),
    lm_eval_limit: int = typer.Option(None, "--lm-eval-limit", min=1, help=LIMIT_HELP),
    min_recovery: float = typer.Option(None, "--min-recovery", min=0.0, help=RECOVERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print report.json's content instead of the table."),
) -> None:
    """Quantize → validate → load in vLLM → generate → perplexity and speed against the original."""
    from quantkit.cli import _state
    from quantkit.report.roundtrip import roundtrip

    with json_errors(as_json), work_output_to_stderr():
        from quantkit.hardware import default_hardware, get_hardware
        from quantkit.planning.planner import plan

        # bad input is exit 2 before the original is measured in vLLM (~30 s): plan every scheme first
        hw = get_hardware(hardware) if hardware else default_hardware()
        for s in scheme:
            plan(model, hw, scheme=s, kv_cache=kv_cache)
        _check_data(calibration, eval_data)
        rep = roundtrip(model, scheme, hardware=hw.name, output_root=output_root, overwrite=overwrite,
                        num_calibration_samples=num_samples, max_seq_length=seq_len, eval_tokens=eval_tokens,
                        speed=speed, kv_cache=kv_cache, verbose=_state["verbose"], calibration=calibration,
                        eval_data=eval_data, max_ppl_rise=max_ppl_rise, lm_eval_tasks=lm_eval_tasks,
                        lm_eval_limit=lm_eval_limit, min_recovery=min_recovery)
    data = rep.to_dict()
    _finish(data, rep.files, as_json)


@app.command("report")
def report_command(
    original: str = typer.Argument(..., help="Unquantized checkpoint directory, or 'embedded'."),
    quantized: list[Path] = typer.Argument(..., help="Quantized checkpoint directory(ies)."),
    hardware: str = typer.Option(None, "--hardware", "-H",
                                 help="Serving target for loading and validation; default: the local GPU, else cpu."),
    output_dir: Path = typer.Option(Path("runs/report"), "--output-dir", "-o", help="Where report.* go."),
    eval_tokens: int = typer.Option(4096, "--eval-tokens", min=16, help="Held-out tokens scored."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure decode tokens/s."),
    eval_data: Path = typer.Option(None, "--eval-data", help=EVAL_HELP),
    max_ppl_rise: float = typer.Option(None, "--max-ppl-rise", min=0.0, help=GATE_HELP),
    lm_eval_tasks: str = typer.Option(None, "--lm-eval-tasks", help=TASKS_HELP),
    lm_eval_limit: int = typer.Option(None, "--lm-eval-limit", min=1, help=LIMIT_HELP),
    min_recovery: float = typer.Option(None, "--min-recovery", min=0.0, help=RECOVERY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print report.json's content instead of the table."),
) -> None:
    """Compare existing checkpoints against ORIGINAL in vLLM: perplexity, agreement, size, speed, findings."""
    from quantkit.checkpoint.reader import CheckpointView
    from quantkit.hardware import default_hardware, get_hardware
    from quantkit.models.loading import resolve_model_path
    from quantkit.report.compare import measure
    from quantkit.report.render import write_report
    from quantkit.eval.lm_eval_tasks import lm_eval_remote
    from quantkit.report.roundtrip import check_lm_eval_options, compare_checkpoints

    with json_errors(as_json), work_output_to_stderr():
        hw = (get_hardware(hardware) if hardware else default_hardware()).name
        src = resolve_model_path(original)
        for p in [src, *quantized]:
            CheckpointView(p)  # unreadable input is exit 2 before any vLLM work
        _check_data(None, eval_data)
        tasks = check_lm_eval_options(lm_eval_tasks, min_recovery)  # lm-eval missing: exit 2 before vLLM
        orig = measure(src, hardware=hw, eval_tokens=eval_tokens, speed=speed, eval_data=eval_data)
        if tasks:
            orig["lm_eval"] = lm_eval_remote(src, tasks, hardware=hw, limit=lm_eval_limit)
        runs = []
        for q in quantized:
            run = compare_checkpoints(src, q, hardware=hw, eval_tokens=eval_tokens, speed=speed,
                                      original_measure=orig, eval_data=eval_data)["run"]
            if tasks:
                run["lm_eval"] = lm_eval_remote(q, tasks, hardware=hw, limit=lm_eval_limit)
            manifest = run.get("manifest") or {}
            run["scheme"] = manifest.get("scheme", q.name)
            if manifest:  # what quantkit recorded when it made the checkpoint (no timings: it was not run here)
                run["quantize"] = {k: manifest.get(k) for k in ("backend", "notes", "group_size", "ignore")}
            runs.append(run)
        data = {"model": str(src), "hardware": hw, "original": orig, "runs": runs}
        from quantkit.report.gates import passed, ppl_rise_gates, recovery_gates

        gates = ppl_rise_gates(runs, max_ppl_rise) if max_ppl_rise is not None else []
        if min_recovery is not None:
            gates += recovery_gates(orig.get("lm_eval"), runs, tasks, min_recovery)
        if max_ppl_rise is not None or min_recovery is not None:
            data["gates"] = [g.to_dict() for g in gates]
            data["passed"] = passed(data["gates"])
        files = write_report(data, output_dir)
    _finish(data, files, as_json)
