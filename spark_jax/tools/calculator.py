"""Arithmetic by walking the Python AST: no eval, bounded integers, exponents and depth."""

from __future__ import annotations

import ast
import math
import operator

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolInputError

MAX_EXPRESSION_CHARS = 2000
MAX_DEPTH = 60
MAX_INT_BITS = 4000  # about 1200 decimal digits
MAX_FACTORIAL = 1000
MAX_ROUND_DIGITS = 1000


def _check_int(value: int) -> int:
    if value.bit_length() > MAX_INT_BITS:
        raise ToolInputError(
            f"integer result too large (over {MAX_INT_BITS} bits); use floats or logarithms"
        )
    return value


def _pow(base, exp):
    if isinstance(base, int) and isinstance(exp, int):
        if exp < 0:
            if base == 0:
                raise ToolInputError("0 cannot be raised to a negative power")
            return _pow(float(base), float(exp))
        if abs(base) > 1 and exp * math.log2(abs(base)) > MAX_INT_BITS:
            raise ToolInputError(
                f"{base}**{exp} is too large (over {MAX_INT_BITS} bits); "
                "use floats (e.g. 2.0**x) or logarithms"
            )
        return base**exp
    if isinstance(base, complex) or isinstance(exp, complex):
        return complex(base) ** exp
    base_f, exp_f = float(base), float(exp)
    if base_f < 0 and not exp_f.is_integer():
        raise ToolInputError(f"negative base {base} with a non-integer exponent {exp}")
    try:
        return math.pow(base_f, exp_f)
    except OverflowError:
        raise ToolInputError(f"{base}**{exp} overflows a float") from None


def _mul(a, b):
    if isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
            raise ToolInputError(f"integer result too large (over {MAX_INT_BITS} bits)")
    return a * b


def _div(a, b):
    if b == 0:
        raise ToolInputError("division by zero")
    return a / b


def _floordiv(a, b):
    if b == 0:
        raise ToolInputError("division by zero")
    return a // b


def _mod(a, b):
    if b == 0:
        raise ToolInputError("modulo by zero")
    return a % b


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: _div,
    ast.FloorDiv: _floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _factorial(n):
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, int) or n < 0:
        raise ToolInputError("factorial needs a non-negative integer")
    if n > MAX_FACTORIAL:
        raise ToolInputError(f"factorial({n}) is too large; the limit is {MAX_FACTORIAL}")
    return math.factorial(n)


def _bounded_int_fn(fn, name):
    def wrapped(*args):
        for a in args:
            if isinstance(a, int) and a > 100_000:
                raise ToolInputError(f"{name} arguments must be at most 100000")
        return _check_int(fn(*args))

    return wrapped


def _round(x, ndigits=None):
    # round(7, -10**9) would compute 10**(10**9) first.
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS):
        raise ToolInputError(f"round: digits must be an integer between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
    return round(x) if ndigits is None else round(x, ndigits)


def _log(x, base=None):
    if x <= 0:
        raise ToolInputError("log needs a positive argument")
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS = {
    "sqrt": math.sqrt, "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp, "log": _log, "ln": _log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh,
    "tanh": math.tanh, "asinh": math.asinh, "acosh": math.acosh, "atanh": math.atanh,
    "degrees": math.degrees, "radians": math.radians, "hypot": math.hypot,
    "abs": abs, "round": _round, "floor": math.floor, "ceil": math.ceil,
    "factorial": _factorial, "gcd": math.gcd, "lcm": math.lcm,
    "comb": _bounded_int_fn(math.comb, "comb"), "perm": _bounded_int_fn(math.perm, "perm"),
    "min": min, "max": max, "sum": lambda *a: sum(a[0]) if len(a) == 1 and isinstance(a[0], list) else sum(a),
    "mean": lambda *a: (sum(a[0]) / len(a[0])) if len(a) == 1 and isinstance(a[0], list) else sum(a) / len(a),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _depth(node: ast.AST, limit: int) -> None:
    stack = [(node, 0)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            raise ToolInputError(f"expression is nested more than {limit} levels deep")
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))


def parse_expression(text: str) -> ast.expr:
    """Parses one expression; ``^`` means power (as models often write it)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolInputError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    source = text.strip().replace("^", "**").replace("×", "*").replace("÷", "/").replace("−", "-")
    if source.endswith("="):
        source = source[:-1]
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        raise ToolInputError(f"not a valid expression: {e.msg} (column {e.offset})") from None
    except (MemoryError, RecursionError, ValueError):
        raise ToolInputError("expression is nested too deeply or too long") from None
    _depth(tree, MAX_DEPTH)
    return tree.body


def evaluate(node: ast.AST, names: dict | None = None):
    """Evaluates a parsed expression allowing numbers, lists, arithmetic and FUNCTIONS."""
    names = names if names is not None else {}
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, complex)):
            raise ToolInputError(f"only numbers are allowed, got {node.value!r}")
        if isinstance(node.value, int):
            _check_int(node.value)
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = evaluate(node.left, names), evaluate(node.right, names)
        if isinstance(left, list) or isinstance(right, list):
            raise ToolInputError("arithmetic on lists is not supported")
        value = _BINOPS[type(node.op)](left, right)
        return _check_int(value) if isinstance(value, int) else value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](evaluate(node.operand, names))
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolInputError(
            f"unknown name {node.id!r}; known constants: {', '.join(CONSTANTS)}; "
            f"functions: {', '.join(FUNCTIONS)}"
        )
    if isinstance(node, (ast.List, ast.Tuple)):
        if len(node.elts) > 10000:
            raise ToolInputError("list too long (limit 10000)")
        return [evaluate(e, names) for e in node.elts]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            shown = ast.unparse(node.func)[:40]
            raise ToolInputError(f"unknown function {shown!r}; functions: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ToolInputError(f"{node.func.id}() takes positional arguments only")
        args = [evaluate(a, names) for a in node.args]
        try:
            value = FUNCTIONS[node.func.id](*args)
        except ToolInputError:
            raise
        except (ValueError, TypeError, OverflowError, ZeroDivisionError) as e:
            raise ToolInputError(f"{node.func.id}: {e}") from None
        return _check_int(value) if isinstance(value, int) else value
    raise ToolInputError(
        f"unsupported syntax {type(node).__name__} at {ast.unparse(node)[:40]!r}; "
        "use numbers, + - * / // % ** (or ^), parentheses and functions"
    )


def format_number(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return format(value, ".15g")
    if isinstance(value, complex):
        return f"({format_number(value.real)}{'+' if value.imag >= 0 else '-'}{format_number(abs(value.imag))}j)"
    if isinstance(value, list):
        return "[" + ", ".join(format_number(v) for v in value) + "]"
    return str(value)


class Calculator(Tool):
    name = "calculator"
    in_worker = True
    description = action_spec("calculator").description
    argument_format = action_spec("calculator").argument_format

    def _run(self, argument: str, timeout_s: float) -> str:
        value = evaluate(parse_expression(argument))
        return format_number(value)
