"""The quantization config as vLLM will read it, normalised from whichever producer wrote it.

vLLM takes ``config.json``'s ``quantization_config`` (or the ``text_config``'s, or ``compression_config``),
and only when there is none the ``hf_quant_config.json`` sidecar; it lower-cases ``quant_method``, maps
legacy ModelOpt sidecars to ``modelopt``/``modelopt_fp4``, then lets each method "override" the name
(``modelopt`` + NVFP4 becomes ``modelopt_fp4``). :func:`read_spec` repeats that and parses the parts the
rules need into plain dataclasses; nothing here raises on malformed input -- problems are recorded on the
spec for the rules to report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quantkit.vllm_facts import MODELOPT_ALGOS, MODELOPT_KV_ALGOS, modelopt_override_method

STRATEGIES = ("tensor", "channel", "group", "block", "token", "tensor_group", "attn_head")
ACTIVATION_FORMATS = ("naive-quantized", "int-quantized", "float-quantized", "nvfp4-pack-quantized")
#: ModelOpt sidecar algos vLLM's legacy-config normaliser maps to a method (anything else is refused)
LEGACY_MODELOPT_ALGOS = {a: m.method for a, m in MODELOPT_ALGOS.items() if m.legacy}


class ConfigProblem(ValueError):
    """A value in the quantization config that vLLM (or compressed-tensors' pydantic models) would refuse."""


@dataclass(frozen=True)
class QArgs:
    """compressed-tensors ``QuantizationArgs`` after its own defaults and inference."""

    num_bits: int
    type: str
    symmetric: bool
    group_size: int | None
    strategy: str
    dynamic: bool | str
    actorder: str | None
    block_structure: tuple[int, int] | None
    scale_dtype: str | None

    def describe(self) -> str:
        what = f"{self.type}{self.num_bits} {self.strategy}"
        if self.group_size:
            what += f" g{self.group_size}"
        if self.block_structure:
            what += f" {self.block_structure[0]}x{self.block_structure[1]}"
        what += "" if self.symmetric else " asym"
        if self.dynamic:
            what += " dynamic" if self.dynamic is True else f" dynamic={self.dynamic}"
        return what


def _bool(value: Any, default: bool, what: str) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise ConfigProblem(f"{what} must be true or false, got {value!r}")


def parse_args(raw: Any, where: str) -> QArgs | None:
    """Parse one ``weights`` / ``input_activations`` / ``output_activations`` block (None stays None)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigProblem(f"{where} must be an object, got {type(raw).__name__}")
    num_bits = raw.get("num_bits", 8)
    if type(num_bits) is not int or not 1 <= num_bits <= 64:
        raise ConfigProblem(f"{where}.num_bits must be an integer 1-64, got {num_bits!r}")
    qtype = raw.get("type", "int")
    if qtype not in ("int", "float"):
        raise ConfigProblem(f"{where}.type must be 'int' or 'float', got {qtype!r}")
    group = raw.get("group_size")
    if group is not None and type(group) is not int:
        raise ConfigProblem(f"{where}.group_size must be an integer or null, got {group!r}")
    strategy = raw.get("strategy")
    if strategy is None:
        if group is None:
            strategy = "tensor"
        elif group > 0:
            strategy = "group"
        elif group == -1:
            strategy = "channel"
        else:
            raise ConfigProblem(f"{where}.group_size {group} is invalid (> 0 for groups, -1 for channel)")
    if strategy not in STRATEGIES:
        raise ConfigProblem(f"{where}.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    dynamic = raw.get("dynamic", False)
    if dynamic not in (True, False, "local"):
        raise ConfigProblem(f"{where}.dynamic must be true, false or 'local', got {dynamic!r}")
    if strategy in ("group", "tensor_group") and (group is None or group <= 0):
        raise ConfigProblem(f"{where}: strategy {strategy!r} needs a positive group_size, got {group!r}")
    if group is not None and group > 0 and strategy not in ("group", "tensor_group"):
        raise ConfigProblem(f"{where}: group_size {group} needs strategy 'group', got {strategy!r}")
    if strategy == "token" and not dynamic:
        raise ConfigProblem(f"{where}: static per-token quantization is impossible (token needs dynamic: true)")
    block = raw.get("block_structure")
    block_t: tuple[int, int] | None = None
    if block is not None:
        if (not isinstance(block, list) or len(block) != 2
                or not all(type(b) is int and b > 0 for b in block)):
            raise ConfigProblem(f"{where}.block_structure must be two positive integers, got {block!r}")
        block_t = (block[0], block[1])
    if (strategy == "block") != (block_t is not None):
        raise ConfigProblem(f"{where}: strategy 'block' and block_structure go together "
                            f"(strategy={strategy!r}, block_structure={block!r})")
    actorder = raw.get("actorder")
    if actorder not in (None, False, True, "group", "weight", "static", "dynamic"):
        raise ConfigProblem(f"{where}.actorder {actorder!r} is not a known activation ordering")
    scale_dtype = raw.get("scale_dtype")
    return QArgs(num_bits, qtype, _bool(raw.get("symmetric"), True, f"{where}.symmetric"),
                 group if group is not None and group > 0 else (-1 if strategy == "channel" else None),
                 strategy, dynamic, actorder if isinstance(actorder, str) else None, block_t,
                 str(scale_dtype) if scale_dtype is not None else None)


@dataclass(frozen=True)
class Group:
    """One compressed-tensors config group (or the implied group of a ModelOpt / GPTQ / AWQ config)."""

    name: str
    targets: tuple[str, ...]
    weights: QArgs | None
    inputs: QArgs | None
    outputs: QArgs | None
    format: str | None
    problem: str | None = None


@dataclass(frozen=True)
class Source:
    """One place a checkpoint declares quantization."""

    where: str  # "config.json quantization_config", "hf_quant_config.json", ...
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Spec:
    """The quantization config vLLM will use, normalised.

    ``style`` picks the matching semantics: ``ct`` (compressed-tensors: exact names and ``re:`` patterns),
    ``modelopt`` (exact, substring and fnmatch wildcards), ``gptq``/``awq`` (``modules_to_not_convert``
    substrings) or ``other`` (a method whose layout quantkit does not model).
    """

    source: Source
    method: str | None
    vllm_method: str | None
    style: str
    groups: tuple[Group, ...] = ()
    ignore: tuple[str, ...] = ()
    ignore_key: str = "ignore"
    global_format: str | None = None
    kv_scheme: Mapping[str, Any] | None = None
    kv_algo: str | None = None
    modelopt_algo: str | None = None
    group_size: int | None = None
    quantized_layers: Mapping[str, Any] | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def kv_declared(self) -> bool:
        return self.kv_scheme is not None or bool(self.kv_algo)


def sources(config: Mapping[str, Any], sidecar: Mapping[str, Any] | None) -> list[Source]:
    """Every place this checkpoint declares quantization, in the order vLLM looks."""
    out = []
    qc = config.get("quantization_config")
    if qc is not None:
        out.append(Source("config.json quantization_config", qc))
    inner = config.get("text_config")
    if isinstance(inner, Mapping) and inner.get("quantization_config") is not None:
        out.append(Source("config.json text_config.quantization_config", inner["quantization_config"]))
    if config.get("compression_config") is not None:
        out.append(Source("config.json compression_config", config["compression_config"]))
    if sidecar is not None:
        out.append(Source("hf_quant_config.json", sidecar))
    return out


def vllm_source(config: Mapping[str, Any], sidecar: Mapping[str, Any] | None) -> Source | None:
    """The single source vLLM reads (``quantization_config`` first, the sidecar only without one)."""
    found = sources(config, sidecar)
    return found[0] if found else None


def _method_of(data: Mapping[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """(raw quant_method, the method vLLM resolves it to, problems) for one config object."""
    problems: list[str] = []
    raw = data.get("quant_method")
    quant = data.get("quantization")
    producer = data.get("producer")
    is_modelopt_producer = isinstance(producer, Mapping) and producer.get("name") == "modelopt"
    method = str(raw).lower().replace("compressed_tensors", "compressed-tensors") if raw is not None else None
    if (is_modelopt_producer or (isinstance(quant, Mapping) and "modelopt_quant_config" in quant)) \
            and isinstance(quant, Mapping) and quant.get("quant_algo") is not None:
        algo = str(quant.get("quant_algo")).upper()
        if algo in LEGACY_MODELOPT_ALGOS:
            method = LEGACY_MODELOPT_ALGOS[algo]
        else:
            problems.append(f"vLLM's legacy ModelOpt config reader accepts quant_algo "
                            f"{', '.join(LEGACY_MODELOPT_ALGOS)} in the 'quantization' block, not {algo!r} "
                            "(`Unknown ModelOpt quant algo`)")
            method = method or "modelopt"
    if raw is None and method is None:
        return None, None, problems
    vllm_method = method
    algo = modelopt_algo(data)
    if method and method.startswith("modelopt") and algo:
        # vLLM's ModelOpt configs each claim their algorithms (override_quantization_method)
        vllm_method = modelopt_override_method(algo) or vllm_method
    return (str(raw) if raw is not None else method), vllm_method, problems


def modelopt_algo(data: Mapping[str, Any]) -> str | None:
    quant = data.get("quantization")
    if isinstance(quant, Mapping):
        algo = quant.get("quant_algo")
    else:
        algo = data.get("quant_algo")
    return str(algo).upper() if algo not in (None, "") else None


def _str_list(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{where} must be a list of strings, got {type(value).__name__}")
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
    return tuple(value)


def read_spec(config: Mapping[str, Any], sidecar: Mapping[str, Any] | None) -> Spec | None:
    """The normalised spec of the source vLLM reads, or None when the checkpoint declares no quantization."""
    src = vllm_source(config, sidecar)
    if src is None:
        return None
    data = src.data
    if not isinstance(data, Mapping):
        return Spec(src, None, None, "other",
                    problems=(f"{src.where} is a {type(data).__name__}, not an object",))
    method, vllm_method, problems = _method_of(data)
    if vllm_method == "compressed-tensors":
        return _compressed_tensors(src, data, method, problems)
    if vllm_method and vllm_method.startswith("modelopt"):
        return _modelopt(src, data, method, vllm_method, problems)
    if vllm_method in ("gptq", "gptq_marlin", "auto_gptq", "awq", "awq_marlin", "auto_awq"):
        return _gptq_awq(src, data, method, vllm_method, problems)
    if vllm_method == "fp8":
        # Fp8Config.from_config reads `ignored_layers`, and `modules_to_not_convert` when that is empty: the
        # key transformers' FineGrainedFP8Config and Qwen's FP8 releases write (Qwen/Qwen3-30B-A3B-FP8)
        key = "ignored_layers" if data.get("ignored_layers") or "modules_to_not_convert" not in data \
            else "modules_to_not_convert"
        ignore = _str_list(data.get(key), key, problems)
        return Spec(src, method, vllm_method, "fp8", ignore=ignore, ignore_key=key, problems=tuple(problems))
    return Spec(src, method, vllm_method, "other", problems=tuple(problems))


def _compressed_tensors(src: Source, data: Mapping[str, Any], method: str | None,
                        problems: list[str]) -> Spec:
    groups = []
    raw_groups = data.get("config_groups")
    fmt = data.get("format")
    fmt = fmt if isinstance(fmt, str) else None
    if raw_groups is not None and not isinstance(raw_groups, Mapping):
        problems.append(f"config_groups must be an object, got {type(raw_groups).__name__}")
        raw_groups = {}
    for name, g in (raw_groups or {}).items():
        name = str(name)
        if not isinstance(g, Mapping):
            groups.append(Group(name, (), None, None, None, None, f"config group {name!r} is not an object"))
            continue
        targets = g.get("targets")
        tlist = tuple(t for t in targets if isinstance(t, str)) if isinstance(targets, list) else ()
        gfmt = g.get("format") if isinstance(g.get("format"), str) else None
        try:
            if not isinstance(targets, list) or not tlist or len(tlist) != len(targets):
                raise ConfigProblem(f"config group {name!r} needs 'targets', a non-empty list of strings")
            w = parse_args(g.get("weights"), f"{name}.weights")
            i = parse_args(g.get("input_activations"), f"{name}.input_activations")
            o = parse_args(g.get("output_activations"), f"{name}.output_activations")
            groups.append(Group(name, tlist, w, i, o, gfmt))
        except ConfigProblem as exc:
            groups.append(Group(name, tlist, None, None, None, gfmt, str(exc)))
    ignore = _str_list(data.get("ignore"), "ignore", problems)
    kv = data.get("kv_cache_scheme")
    if kv is not None and not isinstance(kv, Mapping):
        problems.append(f"kv_cache_scheme must be an object or null, got {type(kv).__name__}")
        kv = None
    return Spec(src, method, "compressed-tensors", "ct", tuple(groups), ignore, "ignore", fmt,
                kv_scheme=kv, problems=tuple(problems))


def _modelopt(src: Source, data: Mapping[str, Any], method: str | None, vllm_method: str,
              problems: list[str]) -> Spec:
    quant = data.get("quantization")
    if isinstance(quant, Mapping):
        ignore = _str_list(quant.get("exclude_modules"), "quantization.exclude_modules", problems)
        kv_algo = quant.get("kv_cache_quant_algo")
        group_raw = quant.get("group_size")
        key, kv_scheme = "exclude_modules", None
        layers = quant.get("quantized_layers")
    else:
        ignore = _str_list(data.get("ignore"), "ignore", problems)
        key = "ignore"
        kv_scheme = data.get("kv_cache_scheme") if isinstance(data.get("kv_cache_scheme"), Mapping) else None
        kv_algo = data.get("kv_cache_quant_algo")
        if kv_algo is None and kv_scheme is not None and kv_scheme.get("type") == "float" \
                and kv_scheme.get("num_bits") == 8:
            kv_algo = MODELOPT_KV_ALGOS["fp8"]
        group_raw = data.get("group_size")
        layers = data.get("quantized_layers")
    if kv_algo is not None and not isinstance(kv_algo, str):
        problems.append(f"kv_cache_quant_algo must be a string or null, got {type(kv_algo).__name__}")
        kv_algo = None
    group: int | None = None
    if group_raw is not None:
        try:
            group = int(group_raw)
        except (TypeError, ValueError, OverflowError):
            problems.append(f"group_size must be an integer, got {group_raw!r}")
    return Spec(src, method, vllm_method, "modelopt", ignore=ignore, ignore_key=key,
                kv_scheme=kv_scheme, kv_algo=str(kv_algo).upper() if kv_algo else None,
                modelopt_algo=modelopt_algo(data), group_size=group,
                quantized_layers=layers if isinstance(layers, Mapping) else None, problems=tuple(problems))


def _gptq_awq(src: Source, data: Mapping[str, Any], method: str | None, vllm_method: str,
              problems: list[str]) -> Spec:
    style = "gptq" if "gptq" in vllm_method else "awq"
    bits = data.get("bits", data.get("w_bit", 4))
    group = data.get("group_size", data.get("q_group_size", 128))
    # GPTQ says `sym`; AutoAWQ says `zero_point` (asymmetric by default)
    sym = data["sym"] if "sym" in data else (style == "gptq" or data.get("zero_point") is False)
    ignore = _str_list(data.get("modules_to_not_convert"), "modules_to_not_convert", problems)
    try:
        w = parse_args({"num_bits": bits, "type": "int", "symmetric": sym,
                        "group_size": group if group != -1 else None,
                        "strategy": "group" if type(group) is int and group > 0 else "channel"}, "weights")
        g = Group(style, ("Linear",), w, None, None, vllm_method)
    except ConfigProblem as exc:
        g = Group(style, ("Linear",), None, None, None, vllm_method, str(exc))
    return Spec(src, method, vllm_method, style, (g,), ignore, "modules_to_not_convert",
                group_size=g.weights.group_size if g.weights else None, problems=tuple(problems))
