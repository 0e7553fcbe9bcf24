import pytest

from quantkit.errors import UnsupportedSchemeError
from quantkit.pipeline import choose_group_size
from quantkit.schemes import get_scheme


def test_prefers_128_when_every_layer_allows_it() -> None:
    assert choose_group_size(get_scheme("w4a16"), {"a": 4096, "b": 11008}, None) == (128, "group size 128")


def test_falls_back_to_the_largest_dividing_group_and_says_so() -> None:
    gs, note = choose_group_size(get_scheme("w4a16"), {"q": 576, "down": 1536}, None)
    assert gs == 64 and "576" in note and "128" in note


def test_requested_group_must_divide() -> None:
    with pytest.raises(UnsupportedSchemeError, match="does not divide"):
        choose_group_size(get_scheme("w4a16"), {"q": 576}, 128)


def test_8bit_schemes_have_no_group() -> None:
    assert choose_group_size(get_scheme("w8a8-int8"), {"q": 576}, None) == (None, "")
