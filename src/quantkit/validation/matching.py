"""Which layers the quantization config quantizes, decided the way vLLM decides it.

vLLM looks at its own layers, not the checkpoint's: on-disk shards ``q_proj``/``k_proj``/``v_proj`` are one
``qkv_proj`` layer, and multimodal prefixes are renamed. Per method:

- compressed-tensors: an ignore entry is an exact layer name (mapped like weight names) or ``re:`` +
  ``re.match``; a fused layer is ignored when an entry matches its fused name or every shard. The group is
  the first target matching the layer name, else (fused) the target of the first shard when every shard
  matches one, else a target naming the layer's class (``Linear``). lm_head is only quantized by name.
- ModelOpt: ``exclude_modules`` entries match exactly (fused-aware), as substrings, or as fnmatch wildcards;
  ``x*`` entries are split into ``x`` and ``x.*`` first (vllm#28072). Every other Linear (lm_head
  included) is quantized; vision towers never are.
- GPTQ/AWQ: ``modules_to_not_convert`` entries are substrings. FP8 (``quant_method: fp8``):
  ``ignored_layers`` (else ``modules_to_not_convert``) are exact names after vLLM's name mapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property

from quantkit.planning.ignore import vllm_unquantized_rule
from quantkit.validation.layout import Layout
from quantkit.validation.qconfig import Spec
from quantkit.validation.report import wildcard
from quantkit.vllm_facts import MODELOPT_MIXED_ALGO

#: class names vLLM gives linear layers; a compressed-tensors target naming a class matches by substring
LINEAR_CLASSES = ("qkvparallellinear", "mergedcolumnparallellinear", "columnparallellinear",
                  "rowparallellinear", "replicatedlinear", "routedexperts", "fusedmoe")
_VISION_HARDCODED = ("vision_tower", "vision_model", "vit_large_projector")
#: layers vLLM always builds without a quant method, whatever the config says (``quant_config=None``): the
#: Mamba / Gated DeltaNet ``conv1d``, and the MTP layer's ``eh_proj`` (a plain ``nn.Linear`` in
#: vllm/model_executor/models/deepseek_mtp.py DeepSeekMultiTokenPredictorLayer) here; MoE routers and
#: shared-expert gates come from quantkit's ignore table (:data:`quantkit.planning.ignore.IGNORE_RULES`, the
#: entries that cite vLLM's model code)
ALWAYS_UNQUANTIZED = re.compile(r".*\.(conv1d|eh_proj)$")
#: heads vLLM builds as ParallelLMHead (not a LinearBase: the ``fp8`` method leaves them 16-bit); the MTP
#: layer's ``shared_head.head`` is one (deepseek_mtp.py SharedHead)
_LM_HEADS = re.compile(r"^(.*\.)?(lm_head|shared_head\.head)$")
#: ``Status.ignored_by`` of a layer vLLM builds unquantized
VLLM_UNQUANTIZED = "(vLLM builds this layer unquantized)"


@dataclass(frozen=True)
class Status:
    """What the config says about one on-disk linear module.

    ``quantized`` is None when quantkit cannot tell (a method it does not model). ``group`` is the
    compressed-tensors group name, the ModelOpt algorithm, or the GPTQ/AWQ style. ``mixed_shards`` is set
    when the ignore list splits the shards of one fused layer.
    """

    quantized: bool | None
    group: str | None = None
    ignored_by: str | None = None
    mixed_shards: bool = False
    #: for a layer vLLM builds unquantized whatever the config says: the ignore rule id naming it (``conv1d``
    #: for convolutions) and whether the config on its own would quantize it (other engines may follow it)
    vllm_unquantized: str | None = None
    config_quantized: bool | None = None


#: regex syntax that can tell "layers.3" from "layers.12" (digits, classes, counted or single-char wildcards)
_INDEX_SENSITIVE = re.compile(r"[0-9\[{]|\\[dDwWsSbB]|(?<!\\)\.(?![*+])")


def index_insensitive(pattern: str) -> bool:
    """Whether a pattern treats names that differ only in layer/expert numbers alike.

    True for patterns built from letters, ``\\.``, ``.*``, ``.+``, groups (optional ones too), ``|`` and
    anchors: digit runs can only be consumed by ``.*``/``.+``, which do not care how long they are. Such
    patterns let the matcher decide once per ``model.layers.*.mlp.experts.*.up_proj`` instead of once per
    expert of every layer.
    """
    return _INDEX_SENSITIVE.search(pattern) is None


try:  # the parser behind re.compile (re._parser since 3.11, sre_parse before)
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_REPEATS = {getattr(_sre_parse, "MAX_REPEAT", None), getattr(_sre_parse, "MIN_REPEAT", None)} - {None}
_BRANCH = getattr(_sre_parse, "BRANCH", None)
_UNBOUNDED = getattr(_sre_parse, "MAXREPEAT", 1 << 32)


def _nested_repeat(items: object, inside: bool = False) -> bool:
    """Whether a parsed pattern repeats without bound something that repeats or branches: ``(a+)+``, ``(.*)*``,
    ``(a|aa)+`` (the shapes that make backtracking exponential)."""
    for op, av in items:  # type: ignore[attr-defined]
        if op == _BRANCH and inside:
            return True
        if op in _REPEATS:
            lo, hi, sub = av
            unbounded = hi == _UNBOUNDED or hi > 64
            if inside and unbounded:
                return True
            if _nested_repeat(sub, inside or unbounded):
                return True
        elif isinstance(av, tuple) or isinstance(av, list):
            for part in av:
                if isinstance(part, _sre_parse.SubPattern) and _nested_repeat(part, inside):
                    return True
                if isinstance(part, list):
                    for branch in part:
                        if isinstance(branch, _sre_parse.SubPattern) and _nested_repeat(branch, inside):
                            return True
    return False


def pattern_problem(entry: str) -> str | None:
    """Why a ``re:`` entry cannot be used (None when it compiles and matches in bounded time)."""
    body = entry[3:]
    try:
        re.compile(body)
        parsed = _sre_parse.parse(body)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError) as exc:
        return f"not a valid regular expression ({exc})"
    try:
        nested = _nested_repeat(parsed)
    except (RecursionError, TypeError, ValueError):
        nested = True
    if nested:
        return ("a pattern that repeats something which itself repeats or branches (like (a+)+ or (a|aa)+): "
                "re.match backtracks exponentially on names it does not match, so vLLM's loader would hang")
    return None


def compile_pattern(entry: str) -> re.Pattern[str] | None:
    """The compiled ``re:`` entry, or None when :func:`pattern_problem` objects to it (never run those)."""
    if pattern_problem(entry) is not None:
        return None
    return re.compile(entry[3:])


class Matcher:
    def __init__(self, spec: Spec, layout: Layout) -> None:
        self.spec = spec
        self.layout = layout
        self._own: dict[str, Status] = {}
        self._memo: dict[tuple[str, tuple[str, int] | None], Status] = {}

    # ------------------------------------------------------------------------------ compressed-tensors

    @cached_property
    def _ct_ignore(self) -> tuple[set[str], list[tuple[str, re.Pattern[str]]]]:
        plain, rx = set(), []
        for e in self.spec.ignore:
            if e.startswith("re:"):
                pat = compile_pattern(e)
                if pat is not None:
                    rx.append((e, pat))
            else:
                plain.add(e)
                plain.add(self.layout.to_vllm(e) if "." in e else e)
        return plain, rx

    def _ct_ignored_by(self, name: str) -> str | None:
        plain, rx = self._ct_ignore
        if name in plain:
            return name
        for e, pat in rx:
            if pat.match(name):
                return e
        return None

    @cached_property
    def _ct_targets(self) -> tuple[list[str], dict[str, str], list[tuple[str, re.Pattern[str]]]]:
        order: list[str] = []
        group_of: dict[str, str] = {}
        for g in self.spec.groups:
            if len(g.targets) == 1 and g.targets[0].endswith("Attention"):
                continue  # vLLM drops attention-only groups (KV-cache quantization handles them)
            for t in g.targets:
                if t not in group_of:
                    order.append(t)
                group_of[t] = g.name  # a later group with the same target wins, like vLLM's dict
        rx = [(t, p) for t in order if t.startswith("re:") and (p := compile_pattern(t)) is not None]
        return order, group_of, rx

    @cached_property
    def _ct_target_tests(self) -> list[tuple[str, re.Pattern[str] | None]]:
        order, _, rx = self._ct_targets
        rx_of = dict(rx)
        return [(t, rx_of.get(t)) for t in order if not t.startswith("re:") or t in rx_of]

    def _ct_target(self, name: str) -> str | None:
        for t, pat in self._ct_target_tests:
            if (pat.match(name) is not None) if pat is not None else t == name:
                return t
        return None

    def _ct_class_target(self, name: str) -> str | None:
        order, _, _ = self._ct_targets
        if name == "lm_head" or name.endswith(".lm_head"):
            return None  # ParallelLMHead: no "Linear" in its class name
        for t in order:
            if t.startswith("re:") or "." in t:
                continue
            low = t.lower()
            if any(low in cls for cls in LINEAR_CLASSES):
                return t
        return None

    def _ct_layer(self, layer: str, shards: list[str]) -> Status:
        """Status of one vLLM layer (fused ``layer`` made of ``shards``, vLLM names)."""
        hit = self._ct_ignored_by(layer)
        mixed = False
        if hit is None and len(shards) > 1:
            per = [self._ct_ignored_by(s) for s in shards]
            if all(per):
                hit = per[0]
            elif any(per):
                mixed = True
        if hit is not None:
            return Status(False, ignored_by=hit)
        target = self._ct_target(layer)
        if target is None and len(shards) > 1:
            per_t = [self._ct_target(s) for s in shards]
            target = per_t[0] if all(per_t) else None
        if target is None:
            target = self._ct_class_target(layer)
        _, group_of, _ = self._ct_targets
        group_name = group_of.get(target) if target else None
        group = next((g for g in self.spec.groups if g.name == group_name), None)
        quantized = group is not None and (group.weights is not None or group.problem is not None)
        return Status(quantized, group=group_name if quantized else None, mixed_shards=mixed)

    # ------------------------------------------------------------------------------------------ ModelOpt

    @cached_property
    def _mo_exclude(self) -> list[str]:
        out = []
        for e in self.spec.ignore:
            if len(e) >= 2 and e.endswith("*") and e[-2] != ".":
                out += [e[:-1], e[:-1] + ".*"]
            else:
                out.append(e)
        return [self.layout.to_vllm(e) if "." in e else e for e in out]

    def _mo_excluded_by(self, layer: str, shards: list[str]) -> tuple[str | None, bool]:
        excl = self._mo_exclude
        if layer in excl:
            return layer, False
        mixed = False
        if len(shards) > 1:
            per = [s in excl for s in shards]
            if all(per):
                return shards[0], False
            mixed = any(per)
        stripped = layer.removeprefix("language_model.")
        for e in excl:  # like vLLM: an empty entry is a substring of every name and excludes every layer
            if e != layer and (e in layer or (layer.startswith("language_model.") and e in stripped)):
                return e, mixed
        for e in excl:
            if fnmatchcase(layer, e):
                return e, mixed
        if any(v in layer for v in _VISION_HARDCODED):
            return "(vLLM keeps vision towers unquantized)", mixed
        return None, mixed

    def _mo_layer(self, layer: str, shards: list[str]) -> Status:
        hit, mixed = self._mo_excluded_by(layer, shards)
        if hit is not None:
            return Status(False, ignored_by=hit, mixed_shards=mixed)
        layers = self.spec.quantized_layers
        if self.spec.modelopt_algo == MODELOPT_MIXED_ALGO and layers is not None:
            for n in [layer, *shards]:
                info = layers.get(n)
                if isinstance(info, dict):
                    return Status(True, group=str(info.get("quant_algo", "")).upper() or None, mixed_shards=mixed)
            return Status(False, ignored_by="(not in quantized_layers)", mixed_shards=mixed)
        return Status(True, group=self.spec.modelopt_algo, mixed_shards=mixed)

    # ----------------------------------------------------------------------------------------- dispatch

    def layer_of(self, module: str) -> tuple[str, list[str]]:
        """(vLLM layer name, vLLM names of its on-disk shards) for an on-disk module."""
        lay = self.layout
        fused = lay.fused_of.get(module)
        if fused is None:
            return lay.to_vllm(module), [lay.to_vllm(module)]
        return lay.to_vllm(fused), [lay.to_vllm(s) for s in lay.fused_shards[fused]]

    @cached_property
    def _memo_plan(self) -> tuple[bool, set[str]]:
        """(whether statuses may be shared per wildcard, exact entries that must be checked per name)."""
        spec = self.spec
        exact: set[str] = set()
        if spec.style == "ct":
            entries = list(spec.ignore) + [t for g in spec.groups for t in g.targets]
            for e in entries:
                if e.startswith("re:"):
                    if not index_insensitive(e[3:]):
                        return False, exact
                else:
                    exact |= {e, self.layout.to_vllm(e)}
            return True, exact
        if spec.style == "modelopt":  # exact, substring and fnmatch: only digits, '?' and '[' see indices
            ok = spec.quantized_layers is None and not any(ch.isdigit() or ch in "?[" for e in spec.ignore for ch in e)
            return ok, exact
        if spec.style in ("gptq", "awq"):
            return all(not any(ch.isdigit() for ch in e) for e in spec.ignore), exact
        return False, exact

    def status(self, module: str) -> Status:
        ok, exact = self._memo_plan
        if not ok:
            return self._status(module)
        lay = self.layout
        fused = lay.fused_of.get(module)
        if exact:  # exact entries name single layers: decide those layers one by one
            if fused is None:
                named = module in exact or (lay.multimodal_mapped and lay.to_vllm(module) in exact)
            else:
                layer, shards = self.layer_of(module)
                named = module in exact or layer in exact or any(s in exact for s in shards)
            if named:
                return self._status(module)
        # the same name, in a fused layer of the same name and shards
        key = (wildcard(module), (wildcard(fused), len(lay.fused_shards[fused])) if fused else None)
        st = self._memo.get(key)
        if st is None:
            st = self._memo[key] = self._status(module)
        return st

    def _status(self, module: str) -> Status:
        rule = vllm_unquantized_rule(module)
        hard = ALWAYS_UNQUANTIZED.match(module)
        rid = rule.id if rule is not None else (hard.group(1) if hard else None)
        if rid is None:
            return self._config_status(module)
        by_config = self._config_status(module)
        return Status(False, ignored_by=VLLM_UNQUANTIZED, vllm_unquantized=rid,
                      config_quantized=by_config.quantized)

    def _config_status(self, module: str) -> Status:
        """What the quantization config alone says about a module (vLLM's hard-coded layers aside)."""
        style = self.spec.style
        layer, shards = self.layer_of(module)
        if style == "ct":
            return self._ct_layer(layer, shards)
        if style == "modelopt":
            return self._mo_layer(layer, shards)
        if style in ("gptq", "awq"):
            if module == "lm_head" or module.endswith(".lm_head"):
                return Status(False, ignored_by="(vLLM keeps lm_head 16-bit for GPTQ/AWQ)")
            hit = next((e for e in self.spec.ignore if e and e in layer), None)
            return Status(hit is None, group=style if hit is None else None, ignored_by=hit)
        if style == "fp8":
            if _LM_HEADS.match(module):
                return Status(False, ignored_by="(a ParallelLMHead is not a LinearBase)")
            # Fp8Config.apply_vllm_mapper renames the entries like weight names (multimodal prefixes)
            excl = set(self.spec.ignore) | {self.layout.to_vllm(e) for e in self.spec.ignore}
            hit = layer if layer in excl else (shards[0] if all(s in excl for s in shards) else None)
            return Status(hit is None, group="fp8" if hit is None else None, ignored_by=hit,
                          mixed_shards=hit is None and any(s in excl for s in shards))
        return Status(None)

    def shard_status(self, module: str) -> Status:
        """The module judged on its own name, as the producer (llm-compressor, ModelOpt) judged it."""
        if module not in self._own:
            self._own[module] = self._shard_status(module)
        return self._own[module]

    def _shard_status(self, module: str) -> Status:
        name = self.layout.to_vllm(module)
        if self.spec.style == "ct":
            return self._ct_layer(name, [name])
        if self.spec.style == "modelopt":
            return self._mo_layer(name, [name])
        return self._status(module)

    @cached_property
    def statuses(self) -> dict[str, Status]:
        """Status of every on-disk linear module."""
        return {m: self.status(m) for m in self.layout.linear}
