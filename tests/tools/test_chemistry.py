import re

import pytest

from spark_jax.tools import run_tool


@pytest.mark.parametrize(
    "formula, molar",
    [("H2SO4", 98.08), ("H2O", 18.015), ("NaCl", 58.44), ("C6H12O6", 180.16), ("CuSO4(H2O)5", 249.68)],
)
def test_molar_masses(formula, molar):
    r = run_tool("chemistry", formula)
    assert r.ok, r.error
    got = float(re.search(r"molar mass ([0-9.]+) g/mol", r.output).group(1))
    assert abs(got - molar) < 0.02


def test_element_by_symbol_and_name():
    for q in ("Fe", "iron"):
        r = run_tool("chemistry", q)
        assert r.ok and "iron (Fe)" in r.output and "atomic number: 26" in r.output


def test_mass_of_moles():
    r = run_tool("chemistry", "mass of 2 mol NaCl")
    assert r.ok and re.search(r"mass of 2 mol: 116\.8[78]\d* g", r.output)


@pytest.mark.parametrize("bad", ["Xx2", "H2SO4)", "H999999999999", "mass of x mol H2O"])
def test_bad_formulas(bad):
    r = run_tool("chemistry", bad)
    assert not r.ok and r.error
