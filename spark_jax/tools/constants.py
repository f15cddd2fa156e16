"""The ``constants`` tool: CODATA physical constants from scipy.constants, by name, symbol or
a fuzzy name."""

from __future__ import annotations

import difflib
import functools

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError

# Common symbols and short names -> CODATA names (scipy.constants.physical_constants keys).
ALIASES = {
    "c": "speed of light in vacuum", "speed of light": "speed of light in vacuum",
    "h": "Planck constant", "planck": "Planck constant",
    "hbar": "reduced Planck constant", "ħ": "reduced Planck constant",
    "g": "standard acceleration of gravity", "g0": "standard acceleration of gravity",
    "gravity": "standard acceleration of gravity",
    "G": "Newtonian constant of gravitation", "gravitational constant": "Newtonian constant of gravitation",
    "k": "Boltzmann constant", "kb": "Boltzmann constant", "k_b": "Boltzmann constant",
    "boltzmann": "Boltzmann constant",
    "na": "Avogadro constant", "n_a": "Avogadro constant", "avogadro": "Avogadro constant",
    "avogadro's number": "Avogadro constant", "avogadro number": "Avogadro constant",
    "r": "molar gas constant", "gas constant": "molar gas constant",
    "ideal gas constant": "molar gas constant",
    "e": "elementary charge", "electron charge": "elementary charge",
    "me": "electron mass", "m_e": "electron mass", "mp": "proton mass", "m_p": "proton mass",
    "mn": "neutron mass", "m_n": "neutron mass", "u": "atomic mass constant", "amu": "atomic mass constant",
    "epsilon0": "vacuum electric permittivity", "epsilon_0": "vacuum electric permittivity",
    "ε0": "vacuum electric permittivity", "permittivity of free space": "vacuum electric permittivity",
    "mu0": "vacuum mag. permeability", "mu_0": "vacuum mag. permeability",
    "μ0": "vacuum mag. permeability", "permeability of free space": "vacuum mag. permeability",
    "f": "Faraday constant", "faraday": "Faraday constant",
    "sigma": "Stefan-Boltzmann constant", "stefan-boltzmann": "Stefan-Boltzmann constant",
    "a0": "Bohr radius", "bohr radius": "Bohr radius", "rydberg": "Rydberg constant",
    "r_inf": "Rydberg constant", "alpha": "fine-structure constant",
    "fine structure constant": "fine-structure constant",
    "atm": "standard atmosphere", "atmosphere": "standard atmosphere",
    "ke": "coulomb constant", "coulomb constant": "coulomb constant",
    "coulomb's constant": "coulomb constant", "wien": "Wien wavelength displacement law constant",
    "b": "Wien wavelength displacement law constant",
}


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, tuple[float, str, float]]:
    # deferred: scipy is slow to import; only a constants lookup needs it
    import scipy.constants as sc

    table = dict(sc.physical_constants)
    eps0 = sc.physical_constants["vacuum electric permittivity"]
    k_e = 1 / (4 * sc.pi * eps0[0])
    table["coulomb constant"] = (k_e, "N m^2 C^-2", k_e * eps0[2] / eps0[0])
    table["standard atmosphere"] = (sc.atm, "Pa", 0.0)
    table["standard acceleration of gravity"] = sc.physical_constants["standard acceleration of gravity"]
    return table


def lookup(query: str, limit: int = 5) -> tuple[list[str], dict]:
    """CODATA names best matching ``query``, best first."""
    table = _table()
    q = query.strip()
    if q in ALIASES:  # case-sensitive first: G (gravitation) versus g (gravity)
        return [ALIASES[q]], table
    ql = q.lower()
    if ql in ALIASES:
        return [ALIASES[ql]], table
    lower = {name.lower(): name for name in table}
    if ql in lower:
        return [lower[ql]], table
    words = ql.split()
    contains = [name for lname, name in lower.items() if all(w in lname for w in words)]
    contains.sort(key=len)
    fuzzy = difflib.get_close_matches(ql, list(lower), n=limit, cutoff=0.5)
    names = list(dict.fromkeys(contains + [lower[f] for f in fuzzy]))
    return names[:limit], table


class ConstantsTool(Tool):
    name = "constants"
    in_worker = True
    description = action_spec("constants").description
    argument_format = action_spec("constants").argument_format

    def warm(self) -> None:
        _table()

    def _run(self, argument: str, timeout_s: float) -> str:
        if len(argument) > 200:
            raise ToolInputError("name longer than 200 characters")
        names, table = lookup(argument)
        if not names:
            raise ToolInputError(
                f"no constant matches {argument!r}; try a CODATA name such as "
                "'Boltzmann constant' or a symbol such as c, h, k, G, N_A, R, e, m_e"
            )
        best = names[0]
        value, unit, uncertainty = table[best]
        exact = " (exact)" if uncertainty == 0 else f" ± {uncertainty:.3g}"
        lines = [f"{best} = {value:.10g} {unit}{exact}".rstrip()]
        if len(names) > 1:
            lines.append("other matches: " + "; ".join(
                f"{n} = {table[n][0]:.6g} {table[n][1]}".rstrip() for n in names[1:]
            ))
        return "\n".join(lines)
