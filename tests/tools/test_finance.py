import math
import re

import pytest

from spark_jax.tools import run_tool


def _value(output: str) -> float:
    return float(re.search(r"= (-?[0-9.e+-]+)", output.splitlines()[0]).group(1))


@pytest.mark.parametrize(
    "call, expected, formula",
    [
        ("fv(0.05, 10, 1000)", 1628.894627, "FV = PV*(1+r)^n"),
        ("pv(5%, 10, fv=1628.894627)", 1000.0, "PV = FV/(1+r)^n"),
        ("pmt(0.06/12, 360, 200000)", 1199.101050, "PMT = PV*r/(1 - (1+r)^-n)"),
        ("pmt(0.05, 10, 1000, when=1)", 123.337690, "/ (1+r)"),
        ("fv(0.05, 3, pmt=100)", 315.25, "PMT*((1+r)^n - 1)/r"),
        ("npv(0.1, [-1000, 500, 500, 500])", 243.425995, "CF_0 undiscounted"),
        ("irr([-1000, 500, 500, 500])", 0.233752, "IRR"),
        ("cagr(100, 200, 5)", 0.148698, "CAGR"),
        ("nper(0.05, 1000, fv=2000)", 14.206699, "ln(FV/PV)"),
        ("ear(12%, 12)", 0.126825, "EAR"),
    ],
)
def test_worked_examples(call, expected, formula):
    r = run_tool("finance", call)
    assert r.ok, r.error
    assert math.isclose(_value(r.output), expected, rel_tol=1e-6, abs_tol=1e-6)
    assert formula in r.output


@pytest.mark.parametrize(
    "call, fragment",
    [
        ("fv(0.05, 10**10, 1)", "nper must be"),
        ("foo(1)", "unknown function"),
        ("fv(1, 2, 3, 4, 5, 6)", "at most"),
        ("irr([1, 2])", "negative and positive"),
        ("fv(0.05, 10, pv=1, pv=2)", ""),
        ("fv(-2, 10, 1)", "greater than -1"),
        ("npv(0.1, 5)", "cashflows"),
        ("1 + 1", "expected a call"),
        ("fv(rate=__import__('os'), nper=1)", "unknown function"),
    ],
)
def test_bad_input(call, fragment):
    r = run_tool("finance", call)
    assert not r.ok and fragment in r.error


@pytest.mark.parametrize(
    "argument",
    [
        "1" * 1999 + "%",  # the longest input the tool reads, all digits: no % to match at the end
        "fv(" + "1" * 1990 + ")",
        "." * 1000 + "1" * 999,
        "1 " * 999,
    ],
    ids=["digits then %", "digit run in a call", "dots then digits", "spaced digits"],
)
def test_percent_parsing_is_linear_on_the_worst_inputs(argument):
    """The % pattern runs before the expression parser: on a digit run it must not retry every
    suffix (a quadratic pattern took ~0.2 s per 2,000 digits, and 20,000 digits held a worker
    for its whole timeout). Measured on the pattern itself, in this process."""
    import time

    from spark_jax.tools.finance import _PERCENT

    start = time.perf_counter()
    for _ in range(20):
        _PERCENT.sub(r"(\1/100)", argument)
    assert (time.perf_counter() - start) / 20 < 0.005


@pytest.mark.parametrize("length", [2001, 19_990])
def test_long_digit_runs_are_refused_before_any_pattern(length):
    import time

    start = time.perf_counter()
    r = run_tool("finance", "1" * length, timeout_s=5)
    assert not r.ok and "longer than 2000 characters" in r.error, r.error
    assert time.perf_counter() - start < 1.0


def test_percent_still_means_hundredths():
    r = run_tool("finance", "fv(5%, 10, 1000)")
    assert r.ok and r.output.startswith("fv(rate=0.05, nper=10, pv=1000) = 1628.89"), r.output
