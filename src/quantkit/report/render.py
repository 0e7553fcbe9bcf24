"""Render a round-trip report as JSON, Markdown, one PNG plot, and a compact terminal table."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

JSON_NAME, MD_NAME, PNG_NAME = "report.json", "report.md", "report.png"


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model (original first) with the headline numbers."""
    o = data["original"]
    out = [{"name": "original (bf16)", "ppl": (o.get("perplexity") or {}).get("perplexity"),
            "size_mb": None, "ratio": None, "tok_s_bs1": o.get("tokens_per_s_bs1"),
            "tok_s_bs16": o.get("tokens_per_s_bs16"), "load_s": o.get("load_s"), "agree": None,
            "quantize_s": None, "peak_mb": None, "served": o.get("served")}]
    for r in data["runs"]:
        q = r["quantized"]
        out.append({"name": r.get("scheme", Path(r["path"]).name),
                    "ppl": (q.get("perplexity") or {}).get("perplexity"),
                    "ppl_via": (q.get("perplexity") or {}).get("via", "vllm"),
                    "size_mb": r["quantized_bytes"] / 1e6, "ratio": r.get("compression_ratio"),
                    "tok_s_bs1": q.get("tokens_per_s_bs1"), "tok_s_bs16": q.get("tokens_per_s_bs16"),
                    "load_s": q.get("load_s"), "agree": (r.get("greedy_agreement") or {}).get("prefix"),
                    "quantize_s": (r.get("quantize") or {}).get("timings", {}).get("total_s"),
                    "peak_mb": ((r.get("quantize") or {}).get("peak_rss_bytes") or 0) / 1e6 or None,
                    "served": q.get("served"), "ok": r["validation"]["ok"]})
    if out[0]["size_mb"] is None and data["runs"]:
        out[0]["size_mb"] = data["runs"][0]["original_bytes"] / 1e6
    return out


#: a quantized model slower than this fraction of the original's tokens/s is a speed regression
SLOWER_THAN = 0.95
_BATCHES = (("tok_s_bs1", "batch 1"), ("tok_s_bs16", "batch 16"))


def speed_regressions(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (model, batch size) where the quantized checkpoint decodes slower than the original, with the
    ratio and the reason the facts give (the kernel vLLM uses for the scheme on this target)."""
    from quantkit.hardware import get_hardware, support
    from quantkit.schemes import SCHEMES

    table = rows(data)
    orig, out = table[0], []
    for r in table[1:]:
        for key, label in _BATCHES:
            o, q = orig.get(key), r.get(key)
            if not o or q is None or q >= SLOWER_THAN * o:
                continue
            scheme = SCHEMES.get(r["name"])
            why = ""
            if scheme is not None:
                try:
                    why = f"kernel on {data['hardware']}: {support(scheme, get_hardware(data['hardware'])).kernel}"
                except Exception:  # noqa: BLE001 - an unknown target in an old report: no reason, still flagged
                    why = ""
            out.append({"model": r["name"], "batch": label, "original": o, "quantized": q, "ratio": q / o,
                        "why": why or "slower kernel than 16-bit on this target"})
    return out


def _speed_lines(data: dict[str, Any]) -> list[str]:
    return [f"{s['model']} decodes slower than the original at {s['batch']}: {s['quantized']:.1f} vs "
            f"{s['original']:.1f} tok/s ({s['ratio']:.2f}x); {s['why']}" for s in speed_regressions(data)]


def _serve_line(path: str, hardware: str) -> str:
    """The `vllm serve` line quantkit.load() would use for this checkpoint on this target."""
    from quantkit.errors import QuantkitError
    from quantkit.serve.command import vllm_serve_line
    from quantkit.serve.engine import serve_plan

    try:
        sp = serve_plan(path, hardware)
    except QuantkitError as exc:
        return f"# not served on {hardware}: {exc.message}"
    return vllm_serve_line(path, sp.engine_args, {k: v for k, v in sp.env.items() if k != "VLLM_CACHE_ROOT"})


def _ppl_source(data: dict[str, Any]) -> str:
    p = data["original"].get("perplexity")
    src = p.get("source") if isinstance(p, dict) else None
    return "Hamlet" if not src or src.startswith("built-in") else src.removeprefix("file ")


def markdown(data: dict[str, Any]) -> str:
    lines = ["# quantkit round-trip report", "",
             f"- model: `{data['model']}`", f"- hardware target: `{data['hardware']}`",
             f"- machine: {platform.machine()} {platform.processor() or ''} Python {platform.python_version()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
             f"| model | ppl ({_ppl_source(data)}) | size MB | ratio | greedy agreement | tok/s bs1 | tok/s bs16 | vLLM load s "
             "| quantize s | quantize peak RSS MB | served by vLLM | valid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    slow = {(s["model"], s["batch"]) for s in speed_regressions(data)}

    def speed(r: dict[str, Any], key: str, label: str) -> str:
        text = _fmt(r[key], ".1f")
        return f"**{text} (slower)**" if (r["name"], label) in slow else text

    for r in rows(data):
        lines.append(f"| {r['name']} | {_fmt(r['ppl'])}{' (transformers)' if r.get('ppl_via') == 'transformers' else ''} "
                     f"| {_fmt(r['size_mb'], '.1f')} | {_fmt(r['ratio'])} | {_fmt(r['agree'], '.0%')} "
                     f"| {speed(r, 'tok_s_bs1', 'batch 1')} | {speed(r, 'tok_s_bs16', 'batch 16')} | {_fmt(r['load_s'], '.1f')} "
                     f"| {_fmt(r['quantize_s'], '.1f')} | {_fmt(r['peak_mb'], '.0f')} | {'yes' if r['served'] else 'no'} "
                     f"| {'yes' if r.get('ok', True) else 'NO'} |")
    gates = _gate_lines(data)
    if gates:
        lines += ["", "## Quality gates", "", *(f"- {'PASS' if ok else '**FAIL**'} {line}" for ok, line in gates)]
    regressions = _speed_lines(data)
    if regressions:
        lines += ["", "## Speed regressions", "", *(f"- {line}" for line in regressions)]
    for run in data["runs"]:
        lines += ["", f"## {run.get('scheme', run['path'])}", "", f"- checkpoint: `{run['path']}`"]
        q = run.get("quantize") or {}
        for n in q.get("notes", []):
            lines.append(f"- note: {n}")
        if not run["quantized"].get("served"):
            lines.append(f"- vLLM could not serve it here: {run['quantized'].get('serve_error')}")
        for f in run["validation"]["findings"]:
            lines.append(f"- validator {f['severity']} `{f['rule']}`: {f['message']}")
        lines += ["", "Serve it:", "", "```bash", _serve_line(run["path"], data["hardware"]), "```"]
        gens = run["quantized"].get("generations") or []
        if gens:
            via = run["quantized"].get("generations_via")
            quant_col = f"quantized (via {via})" if via else "quantized"
            lines += ["", f"| prompt | original | {quant_col} |", "|---|---|---|"]
            for g, og in zip(gens[:4], data["original"].get("generations") or []):
                clean = lambda s: s.replace("|", "\\|").replace("\n", " ")[:90]  # noqa: E731
                lines.append(f"| {clean(g['prompt'])} | {clean(og['text'])} | {clean(g['text'])} |")
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> bool:
    """One figure: perplexity and size per model. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rs = rows(data)
    names = [r["name"] for r in rs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(names, [r["ppl"] or 0 for r in rs], color=["#888"] + ["#3a7"] * (len(rs) - 1))
    a1.set_title("Perplexity on held-out Hamlet (lower is better)")
    a2.bar(names, [r["size_mb"] or 0 for r in rs], color=["#888"] + ["#37a"] * (len(rs) - 1))
    a2.set_title("Checkpoint size (MB)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"quantkit round trip: {Path(data['model']).name} on {data['hardware']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(data: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write report.json, report.md and report.png into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / JSON_NAME), "markdown": str(out_dir / MD_NAME)}
    if plot(data, out_dir / PNG_NAME):
        files["plot"] = str(out_dir / PNG_NAME)
    data = dict(data, files=files, speed_regressions=speed_regressions(data))
    (out_dir / JSON_NAME).write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out_dir / MD_NAME).write_text(markdown(data) + (f"\n![plot]({PNG_NAME})\n" if "plot" in files else ""))
    return files


def _gate_lines(data: dict[str, Any]) -> list[tuple[bool, str]]:
    return [(g["passed"], f"{g['scheme']}: {g['gate']} {g['limit']:g} % -> {g['detail']}")
            for g in data.get("gates") or []]


def print_gates(data: dict[str, Any]) -> None:
    """The quality gates, one line each, and the verdict (nothing when no gate was set)."""
    from rich.console import Console
    from rich.markup import escape

    lines = _gate_lines(data)
    if not lines:
        return
    console = Console(width=max(Console().width, 110))
    for ok, line in lines:
        # escape: "min-recovery[task]" would otherwise be read as a rich markup tag and vanish
        console.print(("[green]PASS[/green] " if ok else "[bold red]FAIL[/bold red] ") + escape(line), highlight=False)
    verdict = all(ok for ok, _ in lines)
    console.print("gates: " + ("[green]all passed[/green]" if verdict else "[bold red]failed[/bold red] (exit 1)"),
                  highlight=False)


def print_table(data: dict[str, Any]) -> None:
    """A compact rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"quantkit round trip: {Path(data['model']).name} → vLLM ({data['hardware']})")
    for col in ("model", "ppl", "size MB", "ratio", "agree", "tok/s bs1", "tok/s bs16", "load s", "peak MB",
                "served"):
        t.add_column(col, no_wrap=True)
    slow = {(s["model"], s["batch"]) for s in speed_regressions(data)}

    def speed(r: dict[str, Any], key: str, label: str) -> str:
        text = _fmt(r[key], ".1f")
        return f"[bold red]{text} ↓[/bold red]" if (r["name"], label) in slow else text

    for r in rows(data):
        t.add_row(r["name"], _fmt(r["ppl"]), _fmt(r["size_mb"], ".1f"), _fmt(r["ratio"]), _fmt(r["agree"], ".0%"),
                  speed(r, "tok_s_bs1", "batch 1"), speed(r, "tok_s_bs16", "batch 16"), _fmt(r["load_s"], ".1f"),
                  _fmt(r["peak_mb"], ".0f"), "yes" if r["served"] else "no")
    console = Console(width=max(Console().width, 110))
    console.print(t)
    for line in _speed_lines(data):
        console.print(f"[bold red]speed regression:[/bold red] {line}")
