"""``quantize()``: plan → produce with a backend → write atomically → validate → publish.

This module is the path of a checkpoint through quantkit; each step lives in its own package
(``planning/``, ``backends/``, ``checkpoint/``, ``validation/``).
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from quantkit.backends import ProduceJob, get_backend
from quantkit.backends.base import Backend
from quantkit.calibration import DEFAULT_MAX_SEQ_LENGTH, DEFAULT_NUM_SAMPLES, tokenize_samples
from quantkit.checkpoint import atomic
from quantkit.errors import UnsupportedSchemeError, ValidationFailedError
from quantkit.hardware import Hardware, get_hardware, require_support
from quantkit.schemes import Scheme, check_kv_cache, get_scheme

log = logging.getLogger(__name__)

MANIFEST = "quantkit.json"


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize()`` produced. Sizes are bytes of ``*.safetensors``; timings are seconds."""

    output_dir: Path
    scheme: str
    backend: str
    hardware: str
    kv_cache: str
    group_size: int | None
    ignore: tuple[str, ...]
    num_calibration_samples: int
    timings: dict[str, float]
    original_bytes: int | None
    quantized_bytes: int
    peak_rss_bytes: int
    notes: tuple[str, ...] = ()
    findings: tuple[dict[str, Any], ...] = field(default=())

    @property
    def compression_ratio(self) -> float | None:
        return self.original_bytes / self.quantized_bytes if self.original_bytes and self.quantized_bytes else None

    def summary(self) -> str:
        """A few readable lines: what was written, its size and time, what stayed 16-bit, notes, the verdict."""
        ratio = f", {self.compression_ratio:.2f}x smaller" if self.compression_ratio else ""
        lines = [f"wrote {self.output_dir} ({self.scheme} via {self.backend}, {self.quantized_bytes / 1e6:.1f} MB"
                 f"{ratio}) in {self.timings.get('total_s', 0.0):.1f} s"]
        group = f"group size {self.group_size}; " if self.group_size else ""
        lines.append(f"  {group}kept 16-bit: {', '.join(self.ignore)}")
        lines += [f"  note: {n}" for n in self.notes]
        warnings = [f for f in self.findings if f.get("severity") != "error"]
        lines.append(f"  validated for {self.hardware}: OK" + (f" with {len(warnings)} warning(s)" if warnings else ""))
        lines += [f"    {f['severity']} [{f['rule']}] {f['message']}" for f in self.findings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["compression_ratio"] = self.compression_ratio
        return d


def choose_group_size(scheme: Scheme, in_features: dict[str, int], requested: int | None) -> tuple[int | None, str]:
    """Pick the 4-bit group size: the largest candidate that divides every quantized layer's input features.

    llm-compressor refuses a group that does not divide a layer's columns, and vLLM's Marlin kernels want
    128 on GPU; a model whose widths are not multiples of 128 (SmolLM2: 576) gets 64 and a note saying so.
    """
    recipe = scheme.llmcompressor
    cands = recipe.group_candidates if recipe else ()
    if requested is not None:
        bad = {n: f for n, f in in_features.items() if f % requested}
        if bad:
            name, f = next(iter(bad.items()))
            raise UnsupportedSchemeError(
                f"group_size={requested} does not divide the input features of {len(bad)} layer(s), e.g. {name} ({f}).",
                fix=f"Use a group size that divides {f} (e.g. {', '.join(str(c) for c in cands if f % c == 0) or 'none'}).")
        return requested, f"group size {requested} (requested)"
    if not cands:
        return None, ""
    for g in cands:
        if all(f % g == 0 for f in in_features.values()):
            if g == cands[0]:
                return g, f"group size {g}"
            widths = sorted({f for f in in_features.values() if f % cands[0]})
            return g, (f"group size {g}: the preferred {cands[0]} does not divide input features {widths}; "
                       f"{g} is the largest that divides every quantized layer")
    widths = sorted(set(in_features.values()))
    raise UnsupportedSchemeError(f"No group size in {cands} divides every quantized layer's input features {widths}.",
                                 fix="Add the odd layers to the ignore list, or pick an 8-bit scheme.")


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def choose_backend(scheme: Scheme, hw: Hardware, device: str, requested: str | None) -> Backend:
    """The requested backend, or the better producer for this scheme, target and producing device.

    ModelOpt is preferred for NVFP4 on Blackwell (native FP4, TensorRT-LLM/SGLang ecosystem) when a CUDA
    device is there to run it; otherwise llm-compressor, whose compressed-tensors output vLLM auto-detects.
    """
    if requested:
        backend = get_backend(requested)
        if not backend.supports(scheme):
            others = [b for b in scheme.backends if b != requested]
            raise UnsupportedSchemeError(
                f"The {requested} backend cannot produce {scheme.name}.",
                fix=f"Use backend={others[0]!r}." if others else "Pick another scheme (`quantkit schemes`).")
        return backend
    order = list(scheme.backends)
    mo = scheme.modelopt
    if mo is not None and scheme.name.startswith("nvfp4") and hw.fp4_native and (device == "cuda" or not mo.needs_cuda):
        order = ["modelopt"] + [b for b in order if b != "modelopt"]
    if not order:
        raise UnsupportedSchemeError(f"No backend produces {scheme.name}.")
    return get_backend(order[0])


def _safetensors_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) or None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("quantkit", "torch", "transformers", "llmcompressor", "compressed-tensors", "nvidia-modelopt"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def quantize(
    model: Any = "embedded",
    scheme: str = "auto",
    *,
    hardware: str = "h100",
    output_dir: str | Path | None = None,
    backend: str | None = None,
    kv_cache: str | None = None,
    calibration: Any = None,
    num_calibration_samples: int = DEFAULT_NUM_SAMPLES,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    group_size: int | None = None,
    ignore: list[str] | tuple[str, ...] = (),
    tokenizer: Any = None,
    overwrite: bool = False,
    for_vllm: bool = True,
) -> QuantizeResult:
    """Quantize a model into a checkpoint vLLM loads on ``hardware``, validate it, and publish it atomically.

    Args:
        model: a local checkpoint directory, ``"embedded"`` for the built-in SmolLM2-135M, or a loaded
            transformers model (then pass ``tokenizer`` too unless its source directory is known).
        scheme: a name from ``quantkit.SCHEMES`` (``quantkit schemes``), or ``"auto"`` to let
            ``quantkit.plan()`` choose for ``hardware``.
        hardware: the serving target (``quantkit hardware``); decides what is legal.
        output_dir: where the checkpoint goes; defaults to ``./<model>-<scheme>``. Never overwritten
            unless ``overwrite=True``.
        backend: ``"llmcompressor"`` or ``"modelopt"``; chosen per scheme and target when None.
        kv_cache: ``"fp8"`` to add a calibrated FP8 KV-cache scheme; None/"auto" for none.
        calibration: list of strings, a ``datasets.Dataset``, a .txt/.jsonl path, or None for the shipped text.
        num_calibration_samples: calibration samples (windows of ``max_seq_length`` tokens).
        max_seq_length: tokens per calibration sample.
        group_size: force a 4-bit group size; by default the largest of 128/64/32 that divides every layer.
        ignore: extra module names or ``re:`` patterns to keep unquantized, on top of the built list.
        overwrite: replace an existing ``output_dir``.
        for_vllm: False allows formats vLLM cannot load (e.g. ModelOpt INT4_AWQ for TensorRT-LLM).

    Returns:
        A :class:`QuantizeResult` with the path, timings, sizes and validator findings.

    Raises:
        UnknownNameError: unknown scheme, hardware or backend.
        ModelNotFoundError: the model path is missing or not a checkpoint.
        OutputExistsError: ``output_dir`` exists and ``overwrite`` is False.
        UnsupportedSchemeError: the target cannot serve the scheme, or the backend cannot produce it here.
        MissingDependencyError: the backend's packages are not installed in this environment.
        BackendError: the producer failed (original exception chained).
        ValidationFailedError: the checkpoint has error findings; it is kept at ``<output_dir>.rejected``.
    """
    t_start = time.perf_counter()
    hw = get_hardware(hardware)
    kv = check_kv_cache(kv_cache)
    notes: list[str] = []
    from quantkit.models.loading import load_model, resolve_model_path

    model_is_path = not hasattr(model, "named_modules")
    if str(scheme).lower() == "auto":
        from quantkit.planning.planner import plan

        src = resolve_model_path(model) if model_is_path else Path(model.config._name_or_path)
        chosen = plan(src, hw.name)
        scheme = chosen.scheme
        backend = backend or chosen.backend
        if kv_cache is None:
            kv = chosen.kv_cache_dtype
        notes.append(f"scheme 'auto' → {scheme} (rule {chosen.rule}): {'; '.join(chosen.reasons)}")
        log.info("plan: %s", notes[-1])
    sch = get_scheme(scheme)
    if for_vllm:
        support = require_support(sch, hw)
        if not support.native:
            notes.append(f"{hw.name} serves {sch.name} through a fallback: {support.reason}")
    device = _device()
    chosen_backend = choose_backend(sch, hw, device, backend)
    chosen_backend.check_environment()

    name = (Path(str(model)).name if model_is_path and model not in (None, "embedded")
            else "smollm2-135m" if model_is_path else Path(str(model.config._name_or_path)).name or "model")
    out = Path(output_dir) if output_dir is not None else Path.cwd() / f"{name}-{sch.name}"
    atomic.check_output_dir(out, overwrite=overwrite)  # fail before any expensive work

    t0 = time.perf_counter()
    loaded = load_model("embedded" if model is None else model, tokenizer)
    t_load = time.perf_counter() - t0

    from quantkit.planning.ignore import build_ignore, linear_module_names

    linear = linear_module_names(loaded.model)
    ignore_list = build_ignore(linear)
    ignore_list += [i for i in ignore if i not in ignore_list]
    quantized = _quantized_in_features(loaded.model, ignore_list)
    gs, gs_note = choose_group_size(sch, quantized, group_size)
    if gs_note and gs_note != f"group size {gs}":
        notes.append(gs_note)
    log.info("scheme %s via %s for %s; ignore %s%s", sch.name, chosen_backend.name, hw.name, ignore_list,
             f"; {gs_note}" if gs_note else "")

    needs_data = sch.needs_calibration or kv != "auto"
    samples = tokenize_samples(calibration, loaded.tokenizer, num_samples=num_calibration_samples,
                               max_seq_length=max_seq_length) if needs_data else ()
    job = ProduceJob(model=loaded.model, tokenizer=loaded.tokenizer, scheme=sch, ignore=tuple(ignore_list), kv_cache=kv,
                     calibration=samples, max_seq_length=max_seq_length, group_size=gs,
                     options={"for_vllm": for_vllm, "hardware": hw.name})
    chosen_backend.check_job(job, device=device)

    tmp = atomic.staging_dir(out)
    try:
        produced = chosen_backend.produce(job, tmp)
        notes.extend(produced.notes)
        timings = {"load_model_s": t_load, **produced.timings}
        manifest = {
            "scheme": sch.name, "backend": chosen_backend.name, "hardware": hw.name, "kv_cache": kv,
            "group_size": gs, "ignore": ignore_list, "num_calibration_samples": len(samples),
            "max_seq_length": max_seq_length if samples else None, "source": str(loaded.source or loaded.name),
            "for_vllm": for_vllm, "versions": _versions(), "notes": notes,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        t1 = time.perf_counter()
        findings = _validate(tmp, out, hw.name, for_vllm)
        timings["validate_s"] = time.perf_counter() - t1
        atomic.publish(tmp, out, overwrite=overwrite)
    except BaseException:
        if tmp.exists():
            atomic.discard(tmp)
        raise
    timings["total_s"] = time.perf_counter() - t_start
    result = QuantizeResult(
        output_dir=out, scheme=sch.name, backend=chosen_backend.name, hardware=hw.name, kv_cache=kv, group_size=gs,
        ignore=tuple(ignore_list), num_calibration_samples=len(samples), timings=timings,
        original_bytes=_safetensors_bytes(loaded.source), quantized_bytes=_safetensors_bytes(out) or 0,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, notes=tuple(notes),
        findings=tuple(findings),
    )
    log.info("wrote %s (%.1f MB) in %.1f s", out, result.quantized_bytes / 1e6, timings["total_s"])
    return result


def _quantized_in_features(model: Any, ignore_list: list[str]) -> dict[str, int]:
    import re

    import torch

    plain = {i for i in ignore_list if not i.startswith("re:")}
    rx = [re.compile(i[3:]) for i in ignore_list if i.startswith("re:")]
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n not in plain and not any(r.match(n) for r in rx):
            out[n] = int(m.in_features)
    return out


def _validate(tmp: Path, out: Path, hardware: str, for_vllm: bool) -> list[dict[str, Any]]:
    """Validate the staged checkpoint; on error findings move it aside and raise."""
    from quantkit.validation import validate

    report = validate(tmp, hardware=hardware if for_vllm else None)
    findings = [f.to_dict() if hasattr(f, "to_dict") else dict(vars(f)) for f in report.findings]
    for f in findings:
        if f.get("severity") == "warning":
            log.warning("validate %s: %s", f.get("rule"), f.get("message"))
    errors = [f for f in findings if f.get("severity") == "error"]
    if errors and for_vllm:
        kept = atomic.reject(tmp, out)
        lines = "; ".join(f"[{f.get('rule')}] {f.get('message')}" for f in errors[:5])
        raise ValidationFailedError(
            f"The checkpoint failed validation with {len(errors)} error(s): {lines}. It was kept at {kept}, "
            f"not published at {out}.",
            fix=errors[0].get("fix") or "See `quantkit validate` on the kept directory.",
            report=report,
        )
    return findings
