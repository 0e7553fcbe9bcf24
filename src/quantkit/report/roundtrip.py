"""The round trip in one call: quantize → validate → load in vLLM → generate → quality and speed vs original."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantkit.report.compare import checkpoint_bytes, greedy_agreement, measure
from quantkit.report.gates import GateResult, ppl_rise_gates, recovery_gates
from quantkit.report.gates import passed as gates_passed

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


@dataclass
class RoundTripReport:
    """Everything measured in one round trip; ``to_dict()`` is what report.json holds."""

    model: str
    hardware: str
    original: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every quality gate passed (True when none was set) -- what a CI job checks."""
        return gates_passed(self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "hardware": self.hardware, "original": self.original, "runs": self.runs,
                "files": self.files, "gates": [g.to_dict() for g in self.gates], "passed": self.passed}


def _ppl(m: dict[str, Any]) -> float | None:
    p = m.get("perplexity")
    return p.get("perplexity") if isinstance(p, dict) else None


def check_lm_eval_options(lm_eval_tasks: str | list[str] | tuple[str, ...] | None,
                           min_recovery: float | None) -> list[str]:
    """The task list, after checking before any work that lm-eval and the tasks exist in the serve environment.

    Raises:
        PlanOptionError: ``min_recovery`` without tasks, or an unknown task.
        OptionalExtraMissingError: lm-eval is not installed in the serve environment (exit 2).
    """
    from quantkit.errors import PlanOptionError
    from quantkit.eval.lm_eval_tasks import check_lm_eval, local_tasks, parse_tasks

    tasks = parse_tasks(lm_eval_tasks)
    if min_recovery is not None and not tasks:
        raise PlanOptionError("--min-recovery needs the lm-eval task(s) it gates on.",
                              fix=f"Add --lm-eval-tasks TASK[,TASK] (e.g. {', '.join(local_tasks())}).")
    if tasks:
        check_lm_eval(tasks)
    return tasks


def compare_checkpoints(original: str | Path, quantized: str | Path, *, hardware: str | None = "cpu",
                        eval_tokens: int = 4096, speed: bool = True,
                        original_measure: dict[str, Any] | None = None,
                        eval_data: str | Path | None = None) -> dict[str, Any]:
    """Measure ``quantized`` against ``original`` (probing the original too unless given its measurement)."""
    from quantkit.validation import validate

    orig = original_measure or measure(original, hardware=hardware, eval_tokens=eval_tokens, speed=speed,
                                       eval_data=eval_data)
    quant = measure(quantized, hardware=hardware, eval_tokens=eval_tokens, speed=speed, eval_data=eval_data)
    report = validate(quantized, hardware=hardware)
    run: dict[str, Any] = {
        "path": str(quantized),
        "validation": {"ok": report.ok, "findings": [f.to_dict() for f in report.findings]},
        "quantized": quant,
        "original_bytes": checkpoint_bytes(original),
        "quantized_bytes": checkpoint_bytes(quantized),
    }
    run["compression_ratio"] = run["original_bytes"] / max(run["quantized_bytes"], 1)
    po, pq = _ppl(orig), _ppl(quant)
    if po and pq:
        run["perplexity_delta_pct"] = 100.0 * (pq - po) / po
    if orig.get("generations") and quant.get("generations"):
        run["greedy_agreement"] = greedy_agreement(orig["generations"], quant["generations"])
        if quant.get("generations_via"):  # the two sides ran in different engines: say so next to the figure
            run["greedy_agreement"]["quantized_via"] = quant["generations_via"]
    manifest = Path(quantized) / "quantkit.json"
    if manifest.is_file():
        run["manifest"] = json.loads(manifest.read_text())
    return {"original": orig, "run": run}


def roundtrip(model: str | Path = "embedded", schemes: list[str] | tuple[str, ...] = ("auto",), *,
              hardware: str | None = None, output_root: str | Path = "runs", overwrite: bool = False,
              num_calibration_samples: int | None = None, max_seq_length: int | None = None, eval_tokens: int = 4096,
              speed: bool = True, kv_cache: str | None = None, verbose: bool = False, calibration: Any = None,
              eval_data: str | Path | None = None, max_ppl_rise: float | None = None,
              lm_eval_tasks: str | list[str] | tuple[str, ...] | None = None, lm_eval_limit: int | None = None,
              min_recovery: float | None = None) -> RoundTripReport:
    """Quantize ``model`` with each scheme, then load original and quantized in vLLM and compare them.

    Writes ``report.json``, ``report.md`` and ``report.png`` into ``output_root``; checkpoints go to
    ``output_root/<scheme>``. ``hardware`` defaults to the local GPU, else ``cpu`` (where vLLM runs the
    measurements), as everywhere else; each scheme is planned once and the plan executed. Calibration size
    defaults to the plan's (32 x 256 tokens for the embedded demo, the producer's recommendation otherwise).

    Progress goes to stderr as named stages (``[k/n]``) with the step inside each (the layer being calibrated,
    what vLLM is doing) and the time left; what llm-compressor, ModelOpt and vLLM print goes to
    ``output_root/roundtrip.log`` (``verbose=True`` shows it too).

    ``calibration`` is passed to :func:`quantkit.quantize` (text/JSONL/chats/Dataset; None: the built-in text);
    ``eval_data`` (.txt or .jsonl of ``{"text": ...}``) replaces the shipped Hamlet for perplexity;
    ``max_ppl_rise`` (percent) is a gate: ``report.passed`` is False when a scheme's perplexity rises more.
    ``lm_eval_tasks`` (``"a,b"`` or a list; ``lm_eval_limit`` examples each) are scored with lm-eval's vLLM
    backend in the serve environment for the original and each checkpoint; ``min_recovery`` (percent) gates
    each (scheme, task) on ``score(quantized) / score(original)``. lm-eval missing there, or an unknown task,
    raises before any work.
    """
    from quantkit.hardware import default_hardware, get_hardware
    from quantkit.models.loading import resolve_model_path
    from quantkit.pipeline import quantize
    from quantkit.planning.planner import plan
    from quantkit.progress import Progress
    from quantkit.report.render import write_report

    hardware = (get_hardware(hardware) if hardware is not None else default_hardware()).name
    root = Path(output_root)
    src = resolve_model_path(None if str(model) == "embedded" else model)
    plans = [plan(src, hardware, scheme=s, kv_cache=kv_cache) for s in schemes]  # bad input fails before vLLM
    from quantkit.calibration import check_calibration, eval_text

    if eval_data is not None:
        eval_text(eval_data)  # a missing or unreadable file fails before vLLM too
    if calibration is not None:
        check_calibration(calibration)
    from quantkit.eval.lm_eval_tasks import lm_eval_remote

    tasks = check_lm_eval_options(lm_eval_tasks, min_recovery)
    root.mkdir(parents=True, exist_ok=True)  # only once the input is known good
    orig_title = "measure the original in vLLM"
    titles = [orig_title]
    for p in plans:
        titles += [f"quantize {p.scheme.name}", f"measure {p.scheme.name} in vLLM"]
    titles.append("write the report")
    prog = Progress(titles, log_path=root / "roundtrip.log", verbose=verbose)
    prog.estimate("write the report", 2.0)
    with prog.active():
        prog.log(f"== quantkit roundtrip {time.strftime('%Y-%m-%d %H:%M:%S')}: {src} on {hardware}, "
                 f"schemes {', '.join(p.scheme.name for p in plans)}")
        with prog.stage(orig_title, f"{src.name}: load, generate, decode speed, perplexity"):
            t0 = time.perf_counter()
            orig = measure(src, hardware=hardware, eval_tokens=eval_tokens, speed=speed, eval_data=eval_data)
            if tasks:
                prog.step(f"lm-eval {', '.join(tasks)} on vLLM")
                orig["lm_eval"] = lm_eval_remote(src, tasks, hardware=hardware, limit=lm_eval_limit)
        for p in plans:  # each later measurement costs about what the original's did
            prog.estimate(f"measure {p.scheme.name} in vLLM", time.perf_counter() - t0)
        rep = RoundTripReport(model=str(src), hardware=hardware, original=orig)
        for chosen in plans:
            t0 = time.perf_counter()
            name = chosen.scheme.name
            log.info("plan for %s: %s", hardware, chosen.summary())
            data = (f"calibration {num_calibration_samples or chosen.calibration_samples} x "
                    f"{max_seq_length or chosen.calibration_seq_len} tokens" if chosen.needs_calibration
                    else "data-free")
            with prog.stage(f"quantize {name}", f"{chosen.backend}, {data}"):
                res = quantize(src, chosen, output_dir=root / name, overwrite=overwrite,
                               num_calibration_samples=num_calibration_samples, max_seq_length=max_seq_length,
                               calibration=calibration)
            with prog.stage(f"measure {name} in vLLM", "validate, load, generate, decode speed, perplexity"):
                cmp = compare_checkpoints(src, res.output_dir, hardware=hardware, eval_tokens=eval_tokens,
                                          speed=speed, original_measure=orig, eval_data=eval_data)
                if tasks:
                    prog.step(f"lm-eval {', '.join(tasks)} on vLLM")
                    cmp["run"]["lm_eval"] = lm_eval_remote(res.output_dir, tasks, hardware=hardware,
                                                           limit=lm_eval_limit)
            run = cmp["run"]
            run["scheme"] = res.scheme
            run["quantize"] = {"backend": res.backend, "timings": res.timings,
                               "peak_rss_bytes": res.peak_rss_bytes, "notes": list(res.notes),
                               "group_size": res.group_size, "ignore": list(res.ignore),
                               "wall_s": time.perf_counter() - t0}
            rep.runs.append(run)
        if max_ppl_rise is not None:
            rep.gates = ppl_rise_gates(rep.runs, max_ppl_rise)
        if min_recovery is not None:
            rep.gates += recovery_gates(orig.get("lm_eval"), rep.runs, tasks, min_recovery)
        with prog.stage("write the report"):
            rep.files = write_report(rep.to_dict(), root)
            rep.files["log"] = str(root / "roundtrip.log")
    return rep
