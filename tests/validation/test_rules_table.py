"""The rule table is complete, stable, documented, and every rule has exactly one check."""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic_checkpoints as S

from quantkit.validation import RULES, validate
from quantkit.validation.checks import CHECKS, check, load_checks
from quantkit.validation.rules import markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "validation.md"

#: ids are a public interface (JSON output, CI greps): renaming one is a breaking change
STABLE_IDS = ["quant-method-known", "modelopt-algo-loadable", "nvfp4-sidecar-fields", "quant-config-source",
              "pattern-valid", "ignore-names-exist", "fused-shards-consistent", "scheme-resolves",
              "hardware-capability", "marlin-eligible", "group-size-divides", "keep-16bit", "nvfp4-global-scales",
              "scale-tensors", "kv-cache-scales", "index-consistent", "tied-embeddings-modelopt",
              "config-matches-disk", "published-complete", "config-schema-known", "validator-internal"]


def test_ids_are_stable_and_numbered():
    assert list(RULES) == STABLE_IDS
    assert [r.number for r in RULES.values()][:20] == list(range(1, 21))


def test_every_rule_has_one_check_and_every_check_a_rule():
    checks = load_checks()
    assert set(checks) == set(RULES) - {"validator-internal"}


def test_a_check_for_an_unknown_or_taken_rule_is_refused():
    with pytest.raises(KeyError, match="unknown rule"):
        check("no-such-rule")(lambda ctx: None)
    with pytest.raises(KeyError, match="already has a check"):
        check("keep-16bit")(lambda ctx: None)


def test_every_rule_says_what_why_and_fix():
    for r in RULES.values():
        assert r.title and r.what and r.why and r.fix, r.id
        if r.id != "validator-internal":  # every real rule cites the upstream issue or vLLM code behind it
            assert r.upstream, r.id


def test_docs_list_every_rule_with_its_upstream_report_and_fix():
    text = DOCS.read_text()
    assert markdown() in text, "docs/validation.md is stale: paste quantkit.validation.rules.markdown()"
    for r in RULES.values():
        assert f"`{r.id}`" in text, r.id
        for ref in r.upstream:
            assert ref in text, (r.id, ref)


def test_a_crashing_check_becomes_a_finding_not_a_traceback(tmp_path, monkeypatch):
    ckpt = S.ct_checkpoint(tmp_path / "c", S.qwen3_moe(), "ct-fp8-dynamic", ["lm_head", r"re:.*\.mlp\.gate$"])
    load_checks()

    def boom(ctx):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(CHECKS, "marlin-eligible", boom)
    report = validate(ckpt)
    [f] = report.by_rule("validator-internal")
    assert f.severity == "error" and "marlin-eligible" in f.message and "ZeroDivisionError" in f.message
    assert not report.ok


def test_repeated_problems_are_folded(tmp_path):
    """400 quantized routers (one per layer x wildcard) make one finding, not 400."""
    a = S.qwen3_moe(layers=40, experts=2)
    report = validate(S.ct_checkpoint(tmp_path / "c", a, "ct-fp8-dynamic", ["lm_head"]))
    [f] = report.by_rule("keep-16bit")
    assert f.module == "model.layers.*.mlp.gate" and "40 modules" in f.message
