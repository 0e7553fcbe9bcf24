"""Measure what the mixed-precision search needs, on the loaded model and the calibration tokens.

Weights are fake-quantized in place with compressed-tensors' own quantizer (``calculate_qparams`` and
``fake_quantize`` with the scheme's ``QuantizationArgs``: the grid llm-compressor writes), scored, and put
back; nothing here decides (``quantkit.planning.mixed`` does).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from quantkit.planning.mixed import SENSITIVITY_TOKENS, SIXTEEN_BIT, MixedPrecision, decide, search, units


def linear_weights(model: Any, skip: Any) -> dict[str, int]:
    """Quantizable ``nn.Linear`` modules (name -> weights) that ``skip(name)`` does not exclude."""
    import torch

    return {name: mod.weight.numel() for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and not skip(name)}


def quant_args(scheme_name: str, group_size: int | None) -> Any:
    """compressed-tensors ``QuantizationArgs`` for the weights of ``scheme_name`` (its preset, the plan's group)."""
    from compressed_tensors.quantization import preset_name_to_scheme

    from quantkit.schemes import get_scheme

    recipe = get_scheme(scheme_name).llmcompressor
    assert recipe is not None
    args = preset_name_to_scheme(recipe.preset, ["Linear"]).weights
    if group_size and args.group_size:
        args = args.model_copy(update={"group_size": group_size})
    return args


def fake_quantized(weight: Any, args: Any) -> Any:
    """``weight`` on the quantization grid of ``args`` (round-to-nearest, min/max scales per group/channel)."""
    import torch
    from compressed_tensors.quantization.lifecycle import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    w = weight.detach().float()
    out_f, in_f = w.shape
    group = args.group_size if args.group_size and args.group_size > 0 else in_f
    view = w.reshape(out_f, in_f // group, group)
    zero = torch.zeros((), dtype=w.dtype)
    scale, zp = calculate_qparams(torch.minimum(view.amin(-1), zero), torch.maximum(view.amax(-1), zero), args)
    return fake_quantize(w, scale, zp, args).to(weight.dtype)


class SensitivityProbe:
    """Perplexity of ``model`` on calibration samples, with chosen modules fake-quantized for the duration.

    Args:
        model: a loaded transformers causal LM (as ``quantize()`` loads it).
        samples: tokenized calibration samples; the first ``max_tokens`` tokens are scored.
        group_size: the plan's group size.
    """

    def __init__(self, model: Any, samples: Sequence[Sequence[int]], *, group_size: int | None,
                 max_tokens: int) -> None:
        self.model = model
        self.group_size = group_size
        self.batch: list[list[int]] = []
        left = max_tokens
        for s in samples:
            if left < 2:
                break
            self.batch.append(list(s)[:left])
            left -= len(self.batch[-1])
        self.tokens = sum(len(b) for b in self.batch)
        self._modules = dict(model.named_modules())
        self._args: dict[str, Any] = {}
        self.evaluations = 0

    def perplexity(self) -> float:
        from quantkit.eval.perplexity import negative_log_likelihood

        self.evaluations += 1
        nll, n = negative_log_likelihood(self.model, self.batch)
        return math.exp(nll / n)

    @contextlib.contextmanager
    def quantized(self, precision: Mapping[str, str]) -> Iterator[None]:
        """Fake-quantize each module named in ``precision`` (module -> scheme name; ``16-bit`` leaves it)."""
        import torch

        saved: dict[str, Any] = {}
        try:
            with torch.no_grad():
                for name, prec in precision.items():
                    if prec == SIXTEEN_BIT:
                        continue
                    if prec not in self._args:
                        self._args[prec] = quant_args(prec, self.group_size)
                    w = self._modules[name].weight
                    saved[name] = w.data.clone()
                    w.data.copy_(fake_quantized(w.data, self._args[prec]))
            yield
        finally:
            with torch.no_grad():
                for name, data in saved.items():
                    self._modules[name].weight.data.copy_(data)


def search_mixed(model: Any, samples: Sequence[Sequence[int]], *, ignore: Sequence[str], group_size: int | None,
                 steps: tuple[str, ...], steps_reason: str, budget_pct: float, target_pct: float | None = None,
                 sensitivity: dict[str, float] | None = None, max_tokens: int = SENSITIVITY_TOKENS,
                 ) -> MixedPrecision:
    """Measure each unit's sensitivity (or reuse ``sensitivity``) and let :func:`quantkit.planning.mixed.search`
    choose; the model is left as it was.

    Args:
        model: the loaded 16-bit model.
        samples: tokenized calibration samples.
        ignore: the plan's ignore list (those modules are not candidates).
        group_size: the plan's group size.
        steps: the ladder, base first (``Plan.mixed_steps``).
        steps_reason: why these steps (``Plan.mixed_reason``).
        budget_pct: the rise the caller allows, in percent.
        target_pct: the rise to search for (a second attempt searches below the budget); None: the budget.
        sensitivity: unit -> rise (%) measured by an earlier attempt on the same model and tokens.
        max_tokens: calibration tokens to score.

    Returns:
        The decision; each choice carries its unit's sensitivity.
    """
    from quantkit import progress
    from quantkit.planning.ignore import ignore_matcher

    probe = SensitivityProbe(model, samples, group_size=group_size, max_tokens=max_tokens)
    all_units = units(linear_weights(model, ignore_matcher(ignore)))
    base = steps[0]
    steps_ui = progress.current()
    original = probe.perplexity()

    def rise(assignment: Mapping[str, str]) -> float:
        with probe.quantized(assignment):
            return 100.0 * (probe.perplexity() - original) / original

    if sensitivity is None:
        sensitivity = {}
        for i, u in enumerate(all_units):
            steps_ui.step(f"sensitivity of {u.name}", i, len(all_units))
            sensitivity[u.name] = rise({m: base for m in u.modules})
    by_unit = {u.name: u for u in all_units}

    def predict(assignment: Mapping[str, str]) -> float:
        steps_ui.step("searching the mixed-precision assignment")
        per_module = {m: base for u in all_units for m in u.modules}
        per_module.update({m: prec for name, prec in assignment.items() for m in by_unit[name].modules})
        return rise(per_module)

    chosen, predicted, _spent = search(all_units, sensitivity, predict, budget_pct=target_pct or budget_pct,
                                       steps=steps)
    return decide(all_units, sensitivity, chosen, budget_pct=budget_pct, steps=steps, steps_reason=steps_reason,
                  original_ppl=original, predicted_pct=predicted, tokens=probe.tokens, evaluations=probe.evaluations)


def checkpoint_rise(path: Any, samples: Sequence[Sequence[int]], original_ppl: float, *,
                    max_tokens: int = SENSITIVITY_TOKENS) -> float:
    """Perplexity rise (%) of a written checkpoint on the tokens the search scored (loaded through transformers;
    compressed-tensors decompresses it)."""
    from quantkit.eval.perplexity import load_transformers

    _tok, model = load_transformers(str(path))
    probe = SensitivityProbe(model, samples, group_size=None, max_tokens=max_tokens)
    return 100.0 * (probe.perplexity() - original_ppl) / original_ppl
