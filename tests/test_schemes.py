import pytest

from quantkit import SCHEMES, UnknownNameError, get_hardware, get_scheme
from quantkit.hardware import support
from quantkit.schemes import check_kv_cache


def test_unknown_scheme_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as e:
        get_scheme("int3-magic")
    for name in SCHEMES:
        assert name in str(e.value)
    assert e.value.rule == "QK001"


def test_aliases_and_normalisation() -> None:
    assert get_scheme("FP8").name == "fp8-dynamic"
    assert get_scheme("W4A16_GPTQ").name == "w4a16"


def test_required_schemes_exist() -> None:
    for name in ("fp8-dynamic", "fp8-block", "w8a8-int8", "w4a16", "w4a16-awq", "w4a8-int", "nvfp4a16", "nvfp4"):
        assert name in SCHEMES


def test_kv_cache_option() -> None:
    assert check_kv_cache(None) == "auto"
    assert check_kv_cache("FP8") == "fp8"
    with pytest.raises(UnknownNameError):
        check_kv_cache("int2")


def test_hardware_decides_legality() -> None:
    fp8 = get_scheme("fp8-dynamic")
    assert support(fp8, get_hardware("h100")).native
    a100 = support(fp8, get_hardware("a100"))
    assert a100.runs and not a100.native and "Marlin" in a100.kernel
    nvfp4 = get_scheme("nvfp4")
    assert support(nvfp4, get_hardware("b200")).native
    assert not support(nvfp4, get_hardware("h100")).native
    assert not support(get_scheme("nvfp4a16"), get_hardware("cpu")).runs


@pytest.mark.produce
def test_every_llmcompressor_preset_exists_in_compressed_tensors() -> None:
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    for s in SCHEMES.values():
        if s.llmcompressor:
            assert s.llmcompressor.preset in PRESET_SCHEMES, s.name
