"""Units picked from the numbers shown (one helper for every figure and table), and numbers
written with their significant digits, never rounded away to zero."""

from __future__ import annotations

import math

import pytest

from bpfree.report.formats import amount, co2_text, energy_text, fixed, hours, unit_for


@pytest.mark.parametrize(
    ("quantity", "values", "unit"),
    [
        ("time", [3.0, 59.0], "s"),
        ("time", [3.0, 300.0], "min"),  # a five-minute study in minutes, not 0.08 h
        ("time", [7200.0], "h"),
        ("energy", [0.4, 281.0], "J"),
        ("energy", [5_000.0], "kJ"),
        ("energy", [3.6e6, 10.0], "kWh"),
        ("energy", [], "J"),  # nothing to show: the base unit
        ("energy", [None, math.nan, 2_000.0], "kJ"),
        ("memory", [5_000.0], "MiB"),  # memory is always MiB
        ("co2", [2.0, 1e-7], "g"),  # CO2 is always grams
    ],
)
def test_the_unit_is_the_largest_the_largest_value_fills(quantity, values, unit):
    assert unit_for(quantity, values).name == unit


def test_a_value_is_written_in_its_own_unit_with_three_significant_digits():
    assert hours(90.0) == "1.50 min"
    assert hours(3 * 3600.0) == "3.00 h"
    assert energy_text(281.0, "estimate") == "281 J (estimate)"
    assert energy_text(1_530.0, None) == "1.53 kJ"
    assert energy_text(None, "rapl") == "not measured"
    assert amount(float("nan"), "time") == "–"


def test_a_tiny_co2_mass_is_not_rounded_to_zero():
    """A digits run emits about 1e-7 kg: "0.00 g" would read as none."""
    assert co2_text(7.35e-7) == "0.000735 g"
    assert co2_text(0.0125) == "12.5 g"
    assert co2_text(None) == "–"


def test_fixed_keeps_significant_digits_without_an_exponent():
    assert [fixed(v) for v in (1530.0, 96.59, 0.000735, 9.996, 0.0)] == ["1530", "96.6", "0.000735", "10.0", "0"]
