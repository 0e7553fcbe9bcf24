"""The group size is decided once, by planning/memory.choose_group_size, which plan() calls."""

import pytest

from quantkit.errors import PlanOptionError, UnsupportedSchemeError
from quantkit.planning.memory import GroupChoice, choose_group_size, group_size_for
from quantkit.planning.planner import plan
from quantkit.schemes import get_scheme


def test_prefers_128_when_every_layer_allows_it() -> None:
    assert choose_group_size(get_scheme("w4a16"), {"a": 4096, "b": 11008}) == GroupChoice(128, "group size 128")


def test_falls_back_to_the_largest_dividing_group_and_says_so() -> None:
    choice = choose_group_size(get_scheme("w4a16"), {"q": 576, "down": 1536})
    assert choice.size == 64 and "576" in choice.note and "128" in choice.note


def test_requested_group_must_divide() -> None:
    with pytest.raises(UnsupportedSchemeError, match="does not divide"):
        choose_group_size(get_scheme("w4a16"), {"q": 576}, 128)


def test_none_divides_is_an_error_not_a_silent_pick() -> None:
    with pytest.raises(UnsupportedSchemeError, match="No group size"):
        choose_group_size(get_scheme("w4a16"), {"q": 100})
    assert group_size_for(get_scheme("w4a16"), [100]) == 32  # sizing alternatives never raises


def test_8bit_and_fixed_group_formats_have_no_choice() -> None:
    assert choose_group_size(get_scheme("w8a8-int8"), {"q": 576}) == GroupChoice(None)
    assert choose_group_size(get_scheme("nvfp4a16"), {"q": 576}) == GroupChoice(None)
    with pytest.raises(UnsupportedSchemeError, match="no configurable group size"):
        choose_group_size(get_scheme("fp8-dynamic"), {"q": 576}, 64)


def test_plan_decides_the_group_and_checks_an_override(embedded_path) -> None:
    p = plan(embedded_path, "h100", scheme="w4a16")
    assert p.group_size == 64 and any("576" in r for r in p.reasons)  # SmolLM2's hidden size
    assert plan(embedded_path, "h100", scheme="w4a16", group_size=32).group_size == 32
    with pytest.raises(UnsupportedSchemeError, match="does not divide"):
        plan(embedded_path, "h100", scheme="w4a16", group_size=128)
    with pytest.raises(PlanOptionError):
        plan(embedded_path, "h100", scheme="w4a16", group_size=0)
