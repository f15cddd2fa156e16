"""The ``finance`` tool: time value of money, with the formula used stated in the output.

Conventions (stated in every answer): rates are per period as decimals (5% = 0.05 or `5%`),
payments at period ends unless `when=1`; amounts are positive numbers (no Excel sign
flipping); ``npv`` discounts the first cash flow at t=0 (undiscounted)."""

from __future__ import annotations

import ast
import math
import re

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError
from spark_jax.tools.calculator import MAX_EXPRESSION_CHARS, evaluate, format_number, parse_expression

MAX_PERIODS = 100_000
MAX_CASHFLOWS = 10_000


def _growth(rate: float, nper: float) -> float:
    if rate <= -1:
        raise ToolInputError("rate must be greater than -1 (-100%)")
    try:
        return (1 + rate) ** nper
    except OverflowError:
        raise ToolInputError("(1 + rate)**nper overflows; check rate and nper") from None


def _annuity_factor(rate: float, nper: float, when: int) -> float:
    """Future value of 1 paid each period: ((1+r)^n - 1)/r, times (1+r) for payments at start."""
    if rate == 0:
        return nper
    return (_growth(rate, nper) - 1) / rate * (1 + rate * when)


def fv(rate, nper, pv=0.0, pmt=0.0, when=0):
    g = _growth(rate, nper)
    value = pv * g + pmt * _annuity_factor(rate, nper, when)
    return value, "FV = PV*(1+r)^n + PMT*((1+r)^n - 1)/r" + ("*(1+r)" if when else "")


def pv(rate, nper, fv=0.0, pmt=0.0, when=0):
    g = _growth(rate, nper)
    value = (fv + pmt * _annuity_factor(rate, nper, when)) / g
    return value, "PV = FV/(1+r)^n + PMT*(1 - (1+r)^-n)/r" + ("*(1+r)" if when else "")


def pmt(rate, nper, pv=0.0, fv=0.0, when=0):
    if nper <= 0:
        raise ToolInputError("nper must be positive")
    g = _growth(rate, nper)
    factor = _annuity_factor(rate, nper, when)
    value = (pv * g - fv) / factor if pv else fv / factor
    formula = "PMT = PV*r/(1 - (1+r)^-n)" if pv else "PMT = FV*r/((1+r)^n - 1)"
    if pv and fv:
        formula = "PMT = (PV*(1+r)^n - FV) * r/((1+r)^n - 1)"
    return value, formula + (" / (1+r)" if when else "")


def nper(rate, pv, pmt=0.0, fv=0.0):
    if pmt == 0:
        if pv <= 0 or fv <= 0:
            raise ToolInputError("with pmt=0, pv and fv must be positive")
        return math.log(fv / pv) / math.log1p(rate), "n = ln(FV/PV) / ln(1+r)"
    if rate == 0:
        return (pv + fv) / pmt if pv else fv / pmt, "n = PV/PMT (r = 0)"
    if pv:
        x = 1 - pv * rate / pmt
        if x <= 0:
            raise ToolInputError("the payment never repays the loan (PMT <= PV*r)")
        return -math.log(x) / math.log1p(rate), "n = -ln(1 - PV*r/PMT) / ln(1+r)"
    return math.log1p(fv * rate / pmt) / math.log1p(rate), "n = ln(1 + FV*r/PMT) / ln(1+r)"


def npv(rate, cashflows):
    _check_flows(cashflows)
    value = sum(cf / _growth(rate, t) for t, cf in enumerate(cashflows))
    return value, "NPV = sum_t CF_t/(1+r)^t, t = 0..n (CF_0 undiscounted)"


def irr(cashflows):
    _check_flows(cashflows)
    if not (any(c < 0 for c in cashflows) and any(c > 0 for c in cashflows)):
        raise ToolInputError("IRR needs both negative and positive cash flows")

    def f(r):
        return sum(cf / (1 + r) ** t for t, cf in enumerate(cashflows))

    # Bracket a root on a grid, then bisect (robust where Newton diverges).
    grid = [-0.99, -0.9, -0.5, -0.2, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0]
    lo = hi = None
    for a, b in zip(grid, grid[1:]):
        try:
            fa, fb = f(a), f(b)
        except (OverflowError, ZeroDivisionError):
            continue
        if fa == 0:
            return a, "IRR: r with sum_t CF_t/(1+r)^t = 0"
        if fa * fb < 0:
            lo, hi = a, b
            break
    if lo is None:
        raise ToolInputError("no IRR found between -99% and 10000%")
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(lo) * f(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2, "IRR: r with sum_t CF_t/(1+r)^t = 0 (bisection)"


def cagr(begin, end, years):
    if begin <= 0 or end < 0 or years <= 0:
        raise ToolInputError("cagr needs begin > 0, end >= 0, years > 0")
    return (end / begin) ** (1 / years) - 1, "CAGR = (end/begin)^(1/years) - 1"


def effective_rate(nominal, periods):
    return (1 + nominal / periods) ** periods - 1, "EAR = (1 + APR/m)^m - 1"


def _check_flows(cashflows):
    if not isinstance(cashflows, list) or not cashflows:
        raise ToolInputError("cashflows must be a list like [-1000, 300, 400, 500]")
    if len(cashflows) > MAX_CASHFLOWS:
        raise ToolInputError(f"at most {MAX_CASHFLOWS} cash flows")


FUNCTIONS = {
    "fv": (fv, ("rate", "nper", "pv", "pmt", "when")),
    "pv": (pv, ("rate", "nper", "fv", "pmt", "when")),
    "pmt": (pmt, ("rate", "nper", "pv", "fv", "when")),
    "loan": (pmt, ("rate", "nper", "pv", "fv", "when")),
    "annuity": (pmt, ("rate", "nper", "pv", "fv", "when")),
    "nper": (nper, ("rate", "pv", "pmt", "fv")),
    "npv": (npv, ("rate", "cashflows")),
    "irr": (irr, ("cashflows",)),
    "cagr": (cagr, ("begin", "end", "years")),
    "ear": (effective_rate, ("nominal", "periods")),
}
# A number followed by %: it starts only where no digit or dot precedes it, and its quantifiers
# are possessive, so a run of n digits costs O(n) (the plain pattern retried every suffix of
# the run, O(n^2)).
_PERCENT = re.compile(r"(?<![\d.])(\d++(?:\.\d*+)?+|\.\d++)\s*+%")


def _number(value, name):
    if name == "cashflows":
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
            raise ToolInputError("cashflows must be a list of numbers")
        return [float(v) for v in value]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ToolInputError(f"{name} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ToolInputError(f"{name} must be finite")
    if name == "nper" and not (0 <= value <= MAX_PERIODS):
        raise ToolInputError(f"nper must be between 0 and {MAX_PERIODS}")
    if name == "when" and value not in (0, 1):
        raise ToolInputError("when must be 0 (end of period) or 1 (start)")
    return value


class FinanceTool(Tool):
    name = "finance"
    in_worker = True
    description = action_spec("finance").description
    argument_format = action_spec("finance").argument_format

    def _run(self, argument: str, timeout_s: float) -> str:
        if len(argument) > MAX_EXPRESSION_CHARS:  # before any pattern runs on it
            raise ToolInputError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
        text = _PERCENT.sub(r"(\1/100)", argument.strip())
        node = parse_expression(text)
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ToolInputError(f"expected a call such as fv(0.05, 10, 1000); got {argument[:60]!r}")
        name = node.func.id.lower()
        if name not in FUNCTIONS:
            raise ToolInputError(f"unknown function {name!r}; functions: {', '.join(FUNCTIONS)}")
        fn, params = FUNCTIONS[name]
        if len(node.args) > len(params):
            raise ToolInputError(f"{name} takes at most {len(params)} arguments: {', '.join(params)}")
        kwargs = {}
        for param, arg in zip(params, node.args):
            kwargs[param] = _number(evaluate(arg), param)
        for kw in node.keywords:
            if kw.arg not in params:
                raise ToolInputError(f"{name}: unknown argument {kw.arg!r}; arguments: {', '.join(params)}")
            if kw.arg in kwargs:
                raise ToolInputError(f"{name}: {kw.arg} given twice")
            kwargs[kw.arg] = _number(evaluate(kw.value), kw.arg)
        if "when" in kwargs:
            kwargs["when"] = int(kwargs["when"])
        try:
            value, formula = fn(**kwargs)
        except ToolInputError:
            raise
        except TypeError as e:
            raise ToolInputError(f"{name}: {e}; arguments: {', '.join(params)}") from None
        except (OverflowError, ZeroDivisionError, ValueError) as e:
            raise ToolInputError(f"{name}: {e}") from None
        shown = ", ".join(f"{k}={format_number(v)}" for k, v in kwargs.items())
        result = format_number(round(value, 10))
        extra = f" ({value * 100:.4f}%)" if name in ("irr", "cagr", "ear") else ""
        return f"{name}({shown}) = {result}{extra}\nformula: {formula}"
