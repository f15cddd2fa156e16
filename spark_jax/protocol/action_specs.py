"""The nine candidate actions as the policy reads them: name, one-line description and the
argument format its input must follow. The system prompt lists them; each tool in
``spark_jax.tools`` takes its description from here, so the prompt and the tools never disagree."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    name: str
    description: str
    argument_format: str


ACTION_SPECS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "calculator",
        "Evaluates arithmetic and math functions exactly for integers, to 15 digits for decimals.",
        (
            "one expression, e.g. `sqrt(2) * (3.5 + 4)^2 / log(10)`; ops + - * / // % ** (or ^); functions "
            "sqrt exp log(x[, base]) ln log10 sin cos tan asin acos atan degrees radians factorial comb perm "
            "gcd abs round floor ceil min max; constants pi e"
        ),
    ),
    ActionSpec(
        "python",
        (
            "Runs a short Python 3 program offline in a sandbox (numpy, scipy, sympy available) and returns "
            "what it prints."
        ),
        (
            "a complete Python program; print() the results (a final bare expression is printed too); no "
            "network, no files outside the current directory, no subprocesses"
        ),
    ),
    ActionSpec(
        "sympy",
        "Symbolic math with SymPy: solve equations, simplify, differentiate, integrate, limits, series.",
        (
            "one call, e.g. `solve(x**2 - 5*x + 6, x)`, `diff(sin(x)*x, x)`, `integrate(exp(-x**2), (x, -oo, "
            "oo))`, `limit(sin(x)/x, x, 0)`, `series(cos(x), x, 0, 6)`, `simplify(...)`, `factor(...)`, "
            "`N(expr, digits)`; a bare expression is simplified; `a = b` is an equation"
        ),
    ),
    ActionSpec(
        "units",
        "Converts physical quantities between units and checks dimensions (pint).",
        (
            "`QUANTITY to UNIT`, e.g. `5 km/h to m/s`, `3 atm * 2 L to J`, `100 degF to degC`; without `to "
            "UNIT` the quantity is simplified to SI base units"
        ),
    ),
    ActionSpec(
        "chemistry",
        "Element properties and molar masses / mass composition of chemical formulas.",
        (
            "an element symbol or name (`Fe`, `iron`) or a formula (`H2SO4`, `CuSO4(H2O)5`, `C6H12O6`); "
            "optional prefix `mass of N mol ` e.g. `mass of 2.5 mol NaCl`"
        ),
    ),
    ActionSpec(
        "constants",
        "Looks up physical constants (CODATA via scipy.constants) with value, unit and uncertainty.",
        (
            "a constant's name or symbol, e.g. `speed of light`, `Planck constant`, `k`, `N_A`, `electron "
            "mass`, `R`, `epsilon_0`"
        ),
    ),
    ActionSpec(
        "finance",
        "Time value of money: present/future value, NPV, IRR, annuity and loan payments, CAGR.",
        (
            "one call with numbers (per-period rate as 0.05 or 5%): `fv(rate, nper, pv, pmt=0, when=0)`, "
            "`pv(rate, nper, fv, pmt=0)`, `pmt(rate, nper, pv, fv=0)`, `nper(rate, pv, pmt, fv=0)`, "
            "`npv(rate, [cf0, cf1, ...])` (cf0 at t=0), `irr([cf0, cf1, ...])`, `cagr(begin, end, years)`, "
            "`ear(nominal, periods)`; e.g. `pmt(0.06/12, 360, 200000)`"
        ),
    ),
    ActionSpec(
        "search",
        "Searches a local offline reference corpus (BM25) and returns the best-matching passages.",
        "a short keyword query, e.g. `ideal gas law constant R`",
    ),
    ActionSpec(
        "cot",
        "Think step by step in words without calling a tool.",
        "the reasoning itself, as plain text",
    ),
)

# The eight tools plus chain-of-thought, in the fixed order every score table uses.
TOOL_NAMES: tuple[str, ...] = tuple(s.name for s in ACTION_SPECS)
_BY_NAME = {s.name: s for s in ACTION_SPECS}


def action_spec(name: str) -> ActionSpec:
    """The spec of one of ``TOOL_NAMES``; KeyError names the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown action {name!r}; valid: {', '.join(TOOL_NAMES)}") from None
