import pytest

from spark_jax.tools import run_tool


@pytest.mark.parametrize(
    "query, name, value",
    [
        ("c", "speed of light in vacuum", "299792458"),
        ("speed of light", "speed of light in vacuum", "299792458"),
        ("h", "Planck constant", "6.62607015e-34"),
        ("N_A", "Avogadro constant", "6.02214076e+23"),
        ("k", "Boltzmann constant", "1.380649e-23"),
        ("G", "Newtonian constant of gravitation", "6.6743e-11"),
        ("g", "standard acceleration of gravity", "9.80665"),
        ("electron mass", "electron mass", "9.109383"),
        ("boltzman constant", "Boltzmann constant", "1.380649e-23"),  # misspelt
    ],
)
def test_lookup(query, name, value):
    r = run_tool("constants", query)
    assert r.ok, r.error
    first = r.output.splitlines()[0]
    assert first.startswith(f"{name} = {value}")


def test_unknown_constant():
    r = run_tool("constants", "qwertyuiop")
    assert not r.ok and "no constant matches" in r.error
