"""Each vLLM fact is defined once, in quantkit/vllm_facts.py, and everything else reads it from there."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from quantkit import hardware, schemes, vllm_facts
from quantkit.hardware import HARDWARE, support
from quantkit.schemes import KV_CACHE_DTYPES, SCHEMES
from quantkit.validation.vllm_registry import BUNDLED

SRC = Path(__file__).resolve().parents[1] / "src" / "quantkit"

#: files that may hold a compute capability next to a comparison: the facts table itself, the hardware table
#: (each GPU's own capability) and the selection policy (GPU classes by SM range: which scheme to *prefer*,
#: not what vLLM can run)
CAPABILITY_OK = {"vllm_facts.py", "hardware.py", "planning/rules.py"}
_CAPABILITY = re.compile(r"(capab\w*|\bcap\b|\bsm\b|_sm\b)[^\n]{0,24}(>=|<=|==|<|>|in)\s*\(?\s*(6|7|8|9|10|11|12)\d\b",
                         re.IGNORECASE)
#: compressed-tensors preset names that happen to spell like ModelOpt algorithms, and table headers
_ALGO_EXEMPT_LINE = re.compile(r"LlmCompressorRecipe\(|_print_table\(")


def _sources() -> list[tuple[str, str]]:
    return [(str(p.relative_to(SRC)), p.read_text(encoding="utf-8")) for p in sorted(SRC.rglob("*.py"))]


def test_no_capability_number_outside_the_facts_table() -> None:
    hits = []
    for rel, text in _sources():
        if rel in CAPABILITY_OK:
            continue
        hits += [f"{rel}: {m.group(0)}" for m in _CAPABILITY.finditer(text)]
    assert not hits, "compute-capability facts belong in quantkit/vllm_facts.py:\n" + "\n".join(hits)


def test_no_modelopt_algorithm_name_outside_the_facts_table() -> None:
    names = "|".join(re.escape(a) for a in vllm_facts.MODELOPT_ALGOS)
    literal = re.compile(rf"""["']({names})["']""")
    hits = []
    for rel, text in _sources():
        if rel == "vllm_facts.py":
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if literal.search(line) and not _ALGO_EXEMPT_LINE.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert not hits, "ModelOpt quant_algo names belong in quantkit/vllm_facts.py:\n" + "\n".join(hits)


def test_the_grep_can_fail() -> None:
    assert _CAPABILITY.search("if hw.capability >= 89:")
    assert _CAPABILITY.search("cap < 80")
    assert not _CAPABILITY.search("hw.capability or 0")


def test_every_scheme_format_has_a_fact_and_every_fact_a_scheme() -> None:
    keys = {s.format_key for s in SCHEMES.values()}
    assert keys == set(vllm_facts.FORMATS)


def test_modelopt_table_agrees_with_the_schemes_and_the_bundled_registry() -> None:
    for algo, entry in vllm_facts.MODELOPT_ALGOS.items():
        assert (algo in BUNDLED.modelopt_algos) == entry.loads
        if entry.scheme is not None:  # the validator's reading; ModelOpt may not be quantkit's producer of it
            assert entry.scheme in SCHEMES, algo
    for s in SCHEMES.values():
        if s.modelopt is not None:
            assert vllm_facts.modelopt_algo_for(s.name) is not None, s.name
    # MXFP8 maps to a scheme now (validate() sees what quantize() notes)
    assert vllm_facts.scheme_for_modelopt_algo("mxfp8") == "mxfp8"
    assert vllm_facts.modelopt_method("w4a16_nvfp4") == "modelopt_fp4"
    assert vllm_facts.weight_only_modelopt_algo("NVFP4") == "W4A16_NVFP4"


def test_support_reads_the_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    fp8 = SCHEMES["fp8-dynamic"]
    assert support(fp8, HARDWARE["h100"]).native and not support(fp8, HARDWARE["a100"]).native
    faster = vllm_facts.FormatFact("fp8/fp8", 80, "test kernel")
    monkeypatch.setitem(vllm_facts.FORMATS, "fp8/fp8", faster)
    assert support(fp8, HARDWARE["a100"]).native and support(fp8, HARDWARE["a100"]).kernel == "test kernel"


def test_public_literals_equal_the_tables() -> None:
    builtin = [n for n in SCHEMES if n in typing.get_args(schemes.SchemeName)]
    assert set(typing.get_args(schemes.SchemeName)) == set(builtin) == set(SCHEMES)
    assert set(typing.get_args(hardware.HardwareName)) == set(HARDWARE)
    assert set(typing.get_args(schemes.KvCacheDtype)) == set(KV_CACHE_DTYPES)


def test_structured_scheme_fields_not_prose() -> None:
    awq, gptq = SCHEMES["w4a16-awq"], SCHEMES["w4a16"]
    assert (awq.weights.num_bits, awq.weights.type, awq.weights.symmetric) == (4, "int", False)
    assert awq.bits_per_weight(128) == pytest.approx(4 + 16 / 128 + 4 / 128)
    assert gptq.bits_per_weight(64) == pytest.approx(4 + 16 / 64)
    assert SCHEMES["nvfp4a16"].bits_per_weight() == pytest.approx(4.5)
    assert SCHEMES["mxfp8"].bits_per_weight() == pytest.approx(8.25)
    assert SCHEMES["fp8-static"].format_key == "fp8/fp8-static"
