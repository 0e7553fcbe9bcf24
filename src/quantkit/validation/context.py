"""What every check reads: the checkpoint view, the normalised config, the layout and the target."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from quantkit.checkpoint.reader import CheckpointView
from quantkit.hardware import Hardware
from quantkit.planning.architectures import is_mla, text_config
from quantkit.validation.layout import Layout
from quantkit.validation.matching import Matcher, Status
from quantkit.validation.qconfig import Spec, read_spec
from quantkit.validation.report import Findings
from quantkit.validation.resolve import (
    Resolved,
    resolve_gptq_awq,
    resolve_group,
    resolve_modelopt,
)
from quantkit.validation.vllm_registry import VllmFacts, parse_version
from quantkit.vllm_facts import MODELOPT_MIXED_ALGO, weight_only_modelopt_algo


@dataclass(frozen=True)
class Target:
    """Where the checkpoint will be served: GPU (or None), tensor-parallel size, vLLM version."""

    hardware: Hardware | None
    tensor_parallel_size: int
    vllm_version: str
    vllm_version_source: str  # "option" | "installed" | "newest known"

    @property
    def vllm_version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.vllm_version)


class Context:
    def __init__(self, view: CheckpointView, facts: VllmFacts, target: Target) -> None:
        self.view = view
        self.facts = facts
        self.target = target
        self.findings = Findings()
        #: seconds spent per rule (the first rule to need the layout or statuses pays for building them)
        self.timings: dict[str, float] = {}

    @cached_property
    def config(self) -> dict[str, Any]:
        return self.view.config

    @cached_property
    def text_config(self) -> dict[str, Any]:
        try:
            return text_config(self.config)
        except (TypeError, ValueError, AttributeError):
            return dict(self.config)

    @cached_property
    def tied_embeddings(self) -> bool:
        # transformers' base default is True, but model configs that tie say so; absent means untied here
        return self.text_config.get("tie_word_embeddings") is True

    @cached_property
    def mla(self) -> bool:
        try:
            by_config = is_mla(self.text_config)
        except (TypeError, ValueError):
            by_config = False
        return by_config or any(n.endswith(".kv_a_proj_with_mqa") for n in self.layout.modules)

    @cached_property
    def spec(self) -> Spec | None:
        return read_spec(self.config, self.view.hf_quant_config)

    @cached_property
    def layout(self) -> Layout:
        return Layout(self.view.tensors, tied_embeddings=self.tied_embeddings)

    @cached_property
    def matcher(self) -> Matcher | None:
        return Matcher(self.spec, self.layout) if self.spec is not None else None

    @cached_property
    def statuses(self) -> dict[str, Status]:
        return self.matcher.statuses if self.matcher is not None else {}

    @cached_property
    def resolved(self) -> dict[str, Resolved | str]:
        """Config group (CT group name, ModelOpt algo, ``gptq``/``awq``) -> its vLLM scheme or refusal."""
        spec = self.spec
        if spec is None:
            return {}
        if spec.style == "ct":
            return {g.name: resolve_group(g, spec.global_format) for g in spec.groups}
        if spec.style == "modelopt":
            out: dict[str, Resolved | str] = {}
            algos = {spec.modelopt_algo} if spec.modelopt_algo != MODELOPT_MIXED_ALGO else {
                s.group for s in self.statuses.values() if s.group}
            groups = spec.source.data.get("config_groups")
            weight_only = (isinstance(groups, dict) and bool(groups)
                           and all(isinstance(g, dict) and g.get("input_activations") is None
                                   for g in groups.values()))
            for algo in algos:
                # vLLM serves an NVFP4 (W4A4) checkpoint whose groups quantize no activations as NVFP4 W4A16
                r = resolve_modelopt(weight_only_modelopt_algo(algo) if weight_only else algo, spec.group_size)
                if algo and r is not None:
                    out[algo] = r
            return out
        if spec.style in ("gptq", "awq"):
            return {g.name: resolve_gptq_awq(g, spec.style) for g in spec.groups}
        return {}

    def scheme_of(self, module: str) -> Resolved | None:
        """The vLLM scheme the config gives an on-disk linear module (None when unquantized or unknown)."""
        st = self.statuses.get(module)
        if st is None or not st.quantized or st.group is None:
            return None
        r = self.resolved.get(st.group)
        return r if isinstance(r, Resolved) else None

    @cached_property
    def quantized_modules(self) -> list[tuple[str, Resolved]]:
        """On-disk linear modules that the config quantizes and that are stored quantized, with their scheme."""
        out = []
        quantized = set(self.layout.quantized)
        for m in self.layout.linear:
            r = self.scheme_of(m)
            if r is not None and m in quantized and r.layout != "dense":
                out.append((m, r))
        return out
