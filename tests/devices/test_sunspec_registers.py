"""SunSpec layouts from pysunspec2's model definitions, decoding and encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.sunspec_registers import (
    END_MODEL_ID,
    SUNS_MARKER,
    SunSpecModelError,
    decode_model,
    encode_image,
    encode_model,
    model_addresses,
    model_def,
)


def test_layouts_match_the_sunspec_standard():
    # offsets from the SunSpec information model reference
    assert model_def(1).length == 66
    assert model_def(103).length == 50 and model_def(103).point("W").offset == 14
    assert model_def(203).length == 105 and model_def(203).point("TotWhImp").offset == 46
    assert model_def(802).point("SoC").offset == 11


def test_meter_values_round_trip_through_scale_factors():
    regs = encode_model(203, {"W": -1234.5, "W_SF": -1, "WphA": -411.5, "TotWhImp": 123_456_000,
                              "TotWhExp": 7_000, "TotWh_SF": 0, "Hz": 50.01, "Hz_SF": -2})
    assert regs[:2] == [203, 105]
    values = decode_model(model_def(203), regs)
    assert values["W"] == pytest.approx(-1234.5)
    assert values["WphA"] == pytest.approx(-411.5)
    assert values["TotWhImp"] == 123_456_000 and values["Hz"] == pytest.approx(50.01)
    assert values["WphB"] is None  # not implemented: 0x8000


def test_common_model_strings_decode():
    values = decode_model(model_def(1), encode_model(1, {"Mn": "p2pgrid", "SN": "SN-0001"}))
    assert values["Mn"] == "p2pgrid" and values["SN"] == "SN-0001" and values["Md"] is None


@settings(max_examples=100, deadline=None)
@given(w=st.integers(-32767, 32767), sf=st.integers(-3, 3), wh=st.integers(0, 2**32 - 1))
def test_any_inverter_power_and_counter_round_trips(w, sf, wh):
    values = decode_model(model_def(103), encode_model(103, {"W": w * 10.0 ** sf, "W_SF": sf,
                                                             "WH": wh, "WH_SF": 0}))
    assert values["W"] == pytest.approx(w * 10.0 ** sf)
    assert values["WH"] == wh


def test_scale_factor_outside_ten_is_garbage():
    regs = encode_model(103, {"W": 100, "W_SF": 0})
    regs[model_def(103).point("W_SF").offset] = 0x7FFF
    with pytest.raises(SunSpecModelError, match="scale factor"):
        decode_model(model_def(103), regs)


def test_wrong_model_id_or_short_block_is_garbage():
    regs = encode_model(103, {})
    with pytest.raises(SunSpecModelError):
        decode_model(model_def(101), regs)
    with pytest.raises(SunSpecModelError):
        decode_model(model_def(103), regs[:20])


def test_value_that_does_not_fit_its_type_is_refused():
    with pytest.raises(ValueError):
        encode_model(103, {"W": 40_000, "W_SF": 0})
    with pytest.raises(SunSpecModelError):
        encode_model(103, {"NotAPoint": 1})


def test_image_is_marker_models_end():
    image = encode_image([(1, {}), (203, {}), (802, {})])
    assert tuple(image[:2]) == SUNS_MARKER and image[-2] == END_MODEL_ID
    assert model_addresses(image, 40000) == {1: 40002, 203: 40070, 802: 40177}
    with pytest.raises(SunSpecModelError):
        model_addresses([0, 0] + image[2:], 40000)


def test_model_with_repeating_groups_is_not_supported():
    with pytest.raises(SunSpecModelError):
        model_def(160)
    with pytest.raises(SunSpecModelError):
        model_def(99999)
